#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace tamma {

// Which phase of the pipeline failed; each maps to one documented exit code.
enum class ErrorKind {
  kConfig,          // invalid usage, configuration or task spec
  kSandboxSetup,    // the host cannot provide the isolation or limits asked for
  kTaskFailed,      // the task ran and reported failure
  kTimeout,         // wall-clock limit reached
  kLimitExceeded,   // memory, pids, disk or output limit reached
  kCancelled,       // signal or cancel request
  kInfrastructure,  // the worker itself failed (I/O, kernel call, handler crash)
};

std::string_view to_string(ErrorKind kind);

// A typed error with its context; `code` is a stable machine-readable name.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string code, const std::string& message, bool retryable = false)
      : std::runtime_error(message), kind_(kind), code_(std::move(code)), retryable_(retryable) {}

  [[nodiscard]] ErrorKind kind() const { return kind_; }
  [[nodiscard]] const std::string& code() const { return code_; }
  [[nodiscard]] bool retryable() const { return retryable_; }

 private:
  ErrorKind kind_;
  std::string code_;
  bool retryable_;
};

// The code of a failure of the host rather than of the task: a full or broken disk, no
// descriptors or memory left. Retryable: the same task may well pass on a healthy worker, and
// a worker that sees several in a row stops taking tasks (docs/daemon.md, "Faults").
inline constexpr std::string_view kHostFailure = "host_failure";

// errno values that say the host ran out of something or its disk failed.
bool is_host_errno(int err);

// Throws Error(kInfrastructure) naming the failed call and errno's text: code "host_failure"
// and retryable for is_host_errno(), "system_call_failed" otherwise.
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace tamma
