#pragma once
// Runs one command of a task in the sandbox and watches it: output, exit, deadline, cancel.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/task_result.h"
#include "sandbox/sandbox.h"
#include "worker/cancellation.h"
#include "worker/secret_masker.h"

namespace tamma::worker {

enum class StreamKind { kStdout, kStderr };

// How a step's process tree ended, before classification against limits.
enum class StepEnd { kExited, kTimeout, kCancelled, kOutputLimit };

struct StepRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  // When argv is a lone command in place of its shell: the shell command (sandbox::Command).
  std::vector<std::string> shell_argv;
  std::string workdir = ".";
  std::chrono::steady_clock::time_point deadline;
  std::string stdin_data;  // written to the task's stdin, then closed (external handlers)
  // Whether output is forwarded to the live sink (external handlers' stdout is not: it
  // is the result document).
  bool forward_stdout = true;
};

struct StepOutcome {
  StepEnd end = StepEnd::kExited;
  std::optional<sandbox::ExitStatus> exit;  // unset when the main process was killed by us
  sandbox::Usage usage;
  protocol::OutputCapture out;
  protocol::OutputCapture err;
  std::int64_t duration_ms = 0;
  std::vector<std::string> degradations;
  // When the command's execve began (wall clock), if the sandbox saw it.
  std::optional<std::chrono::system_clock::time_point> exec_began;
};

struct StepLimits {
  std::uint64_t keep_bytes;         // per stream, in the result
  std::uint64_t hard_limit_bytes;   // both streams together; over it the tree is killed
  std::chrono::milliseconds grace;  // between SIGTERM and SIGKILL
};

using LiveSink = std::function<void(StreamKind, std::string_view masked)>;

StepOutcome run_step(sandbox::Sandbox& sandbox, const std::string& workspace,
                     const StepRequest& request, const StepLimits& limits,
                     const SecretMasker& masker, Cancellation& cancellation, const LiveSink& sink);

}  // namespace tamma::worker
