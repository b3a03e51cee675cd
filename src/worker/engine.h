#pragma once
// The execution engine: validate -> allocate workspace -> run the handler -> collect the
// result -> clean up. Every outcome, including the worker's own failures, ends as a result
// document; nothing of the task survives run().

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "protocol/task_result.h"
#include "protocol/task_spec.h"
#include "sandbox/sandbox.h"
#include "sandbox/workspace.h"
#include "worker/cancellation.h"
#include "worker/config.h"
#include "worker/handler.h"
#include "worker/secret_masker.h"

namespace tamma::worker {

// A step that did not succeed, and what it takes to start another process exactly where it
// ran: its sandbox (mounts, limits, uid), workspace, working directory and environment.
struct FailedStep {
  const protocol::StepResult& result;
  sandbox::Sandbox& sandbox;
  sandbox::Command command;  // argv and stdio left for the caller
  const SecretMasker& masker;
  const Cancellation& cancellation;
};

struct RunOptions {
  std::optional<std::filesystem::path> artifacts_dir;  // where matched artifacts are copied
  // Called after each step that failed, timed out or hit a limit, before the task goes on
  // (`tamma-worker run --shell-on-failure`).
  std::function<void(const FailedStep&)> on_step_failure;
  // When the task does not succeed, its files (work/, home/, tmp/, var-tmp/) are kept in
  // <keep_failed_in>/<task id> instead of removed (`--keep-workspace`); the path is stored
  // in *kept when given.
  std::optional<std::filesystem::path> keep_failed_in;
  std::filesystem::path* kept = nullptr;
  // The process runs this task and exits (`tamma-worker run`): with a single step, the
  // sandbox builds nothing that pays off only when reused (a mount template, a pooled network
  // namespace, ADRs 0018 and 0019); each costs a thread and more than it saves once.
  bool only_task_of_process = false;
  // Given the task's workspace once the task is over (its files kept and artifacts collected
  // as asked), instead of removing it before the result is handed out: the daemon reports the
  // task first and removes the workspace on a thread of its own. When a failure of the worker
  // ended the task, the workspace is removed before the result as ever.
  std::function<void(std::unique_ptr<sandbox::Workspace>)> dispose_workspace;
  // An empty task filesystem made while the daemon's slot waited for this task: taken (moved
  // out) when the task's workspace can be it, that is without a disk limit.
  std::unique_ptr<sandbox::SpareWorkspace>* spare_workspace = nullptr;
};

class Engine {
 public:
  Engine(Config config, HandlerRegistry registry);

  // Throws Error(kConfig) before anything runs when the spec cannot be run as given
  // (unknown type, steps missing for a step-based type). Everything later is in the result.
  protocol::TaskResult run(protocol::TaskSpec spec, Cancellation& cancellation,
                           RunObserver& observer, const RunOptions& options = {});

  [[nodiscard]] const Config& config() const { return config_; }
  [[nodiscard]] const HandlerRegistry& registry() const { return registry_; }

 private:
  std::unique_ptr<sandbox::Workspace> allocate_workspace(const protocol::TaskSpec& spec,
                                                         protocol::TaskResult& result,
                                                         const RunOptions& options) const;
  void blame_host_if_broken(protocol::TaskResult& result) const;

  Config config_;
  HandlerRegistry registry_;
};

// The documented exit code of `tamma-worker run` for a result.
int exit_code_for(const protocol::TaskResult& result);

inline constexpr int kExitSucceeded = 0;
inline constexpr int kExitTaskFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 3;
inline constexpr int kExitLimitExceeded = 4;
inline constexpr int kExitCancelled = 5;
inline constexpr int kExitInfrastructure = 6;

std::string generate_task_id();

}  // namespace tamma::worker
