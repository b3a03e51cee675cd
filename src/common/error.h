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

// Throws Error(kInfrastructure) naming the failed call and errno's text.
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace tamma
