#pragma once
// The task specification: the JSON document a user, a CI step or the orchestrator hands a worker.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "egress/destination.h"

namespace tamma::protocol {

struct Step {
  std::string name;
  std::optional<std::string> run;  // shell script, run with /bin/sh -e -c
  std::vector<std::string> argv;   // or an argument vector, exec'ed directly
  std::map<std::string, std::string> env;
  std::optional<std::chrono::milliseconds> timeout;
};

struct Resources {
  std::optional<std::uint64_t> memory_bytes;
  std::optional<double> cpus;
  std::optional<std::uint64_t> pids;
  std::optional<std::uint64_t> disk_bytes;
};

// kAllowList: loopback only, and the worker's egress proxy to the destinations of
// TaskSpec::network_allow (docs/isolation.md, ADR 0032).
enum class NetworkMode { kNone, kHost, kAllowList };

// A repository checked out into the workspace before the steps (see src/worker/checkout.h).
struct Repository {
  std::string url;                 // https://, http://, git:// or file:// (absolute path)
  std::string ref;                 // branch, tag or commit; empty = the remote's HEAD
  std::uint32_t depth = 1;         // commits of history; 0 = all
  std::string credentials_secret;  // name of a secret holding "user:password" or a token
};

struct TaskSpec {
  std::string id;    // optional in the file; the worker generates one when empty
  std::string type;  // "command", "build", "test", "security_scan", or an external handler's
  std::vector<Step> steps;
  std::map<std::string, std::string> env;
  std::map<std::string, std::string> secrets;  // exported to the task, masked in all output
  std::string workdir = ".";                   // relative to the workspace, never escaping it
  std::optional<std::chrono::milliseconds> timeout;
  Resources resources;
  NetworkMode network = NetworkMode::kNone;
  std::vector<egress::Destination> network_allow;  // with kAllowList: "network": {"allow": [...]}
  std::vector<std::string> artifacts;  // globs relative to the workspace
  // When artifacts are collected: "on_success", "on_failure" or "always" (GitLab's names).
  std::string artifacts_when = "on_success";
  std::optional<Repository> repository;
  nlohmann::json raw;  // the document as given, for external handlers
  // Report inputs (docs/task-spec.md): JUnit XML globs for `test` (required there), the SARIF
  // file for `security_scan` (required there), and the lowest SARIF level that fails a scan.
  std::vector<std::string> reports;
  std::string sarif;
  std::string fail_on = "error";  // "error", "warning" or "note"
};

struct ValidationProblem {
  std::string path;  // JSON path, e.g. "$.steps[1].timeout"
  std::string message;
};

struct ParseOutcome {
  std::optional<TaskSpec> spec;  // set only when `problems` is empty
  std::vector<ValidationProblem> problems;
};

// Validates everything and reports every problem, not just the first.
ParseOutcome parse_task_spec(const nlohmann::json& document);

// Reads and parses a file; throws Error(kConfig) listing every problem with its path.
TaskSpec load_task_spec(const std::filesystem::path& file);

nlohmann::json to_json(const TaskSpec& spec);

// Why a glob or path cannot name files inside the workspace (empty, absolute, a ".."
// component), quoting it; nullopt when it can.
std::optional<std::string> workspace_glob_problem(std::string_view glob);

}  // namespace tamma::protocol
