#include "common/error.h"

#include <cerrno>
#include <cstring>

namespace tamma {

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kConfig:
      return "config";
    case ErrorKind::kSandboxSetup:
      return "sandbox_setup";
    case ErrorKind::kTaskFailed:
      return "task_failed";
    case ErrorKind::kTimeout:
      return "timeout";
    case ErrorKind::kLimitExceeded:
      return "limit_exceeded";
    case ErrorKind::kCancelled:
      return "cancelled";
    case ErrorKind::kInfrastructure:
      return "infrastructure";
  }
  return "unknown";
}

void throw_errno(const std::string& what) { throw_errno(what, errno); }

bool is_host_errno(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EIO:
    case EROFS:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      return true;
    default:
      return false;
  }
}

void throw_errno(const std::string& what, int err) {
  if (is_host_errno(err)) {
    throw Error(ErrorKind::kInfrastructure, std::string(kHostFailure),
                what + ": " + std::strerror(err), /*retryable=*/true);
  }
  throw Error(ErrorKind::kInfrastructure, "system_call_failed", what + ": " + std::strerror(err),
              /*retryable=*/false);
}

}  // namespace tamma
