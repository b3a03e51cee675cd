#pragma once
// The repository checkout that runs before a task's steps: git, inside the sandbox, as the
// first step ("checkout"), so the untrusted remote data is parsed by an unprivileged process
// in the jail and never by the worker as root (ADR 0015).

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "protocol/task_result.h"
#include "protocol/task_spec.h"
#include "worker/handler.h"

namespace tamma::worker {

// Where a file:// repository is bound (read-only) inside the sandbox.
inline constexpr const char* kSandboxRepository = "/repository";

// The URL without its user information (user:password@), the form that is printed.
std::string url_without_credentials(std::string_view url);

// The step that checks `repo` out into the workspace: a shell script running git with
// hooks, submodules, prompts and other protocols off. `isolated` says whether a file://
// repository must be reached through its bind inside the sandbox.
StepCommand checkout_command(const protocol::Repository& repo, const protocol::TaskSpec& spec,
                             bool isolated);

// Runs the checkout through `ctx` (the first step of the task). On success returns true and
// leaves result.status untouched; otherwise sets the result's status, exit code and, for a
// failed git, error `checkout_failed` with git's (masked) message. `details` receives
// {"url", "ref", "commit", "depth"} (commit null unless checked out).
// Throws Error(kInfrastructure, "git_not_found") when this worker has no git.
bool checkout_repository(TaskContext& ctx, const protocol::Repository& repo,
                         protocol::TaskResult& result, nlohmann::json& details);

}  // namespace tamma::worker
