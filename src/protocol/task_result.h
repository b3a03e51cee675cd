#pragma once
// The result document of one task: written with --result, printed with --json, sent to the
// orchestrator in daemon mode.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tamma::protocol {

enum class TaskStatus { kSucceeded, kFailed, kTimeout, kLimitExceeded, kCancelled, kError };

// Which limit ended the task, when one did.
enum class LimitKind { kNone, kMemory, kPids, kDisk, kOutput, kCpu };

// What a task with a network allow-list sent and received through the worker's egress proxy,
// per destination as the task asked for it ("registry.npmjs.org:443").
struct EgressTraffic {
  std::string destination;
  std::uint64_t bytes_out = 0;  // task -> destination
  std::uint64_t bytes_in = 0;   // destination -> task
  std::uint64_t connections = 0;
};

// A connection the egress proxy refused: not in the allow-list, or resolving to an address no
// task may reach (the reason says which), or a protocol it does not carry (SOCKS5 UDP).
struct EgressRefusal {
  std::string destination;
  std::string reason;
  std::string protocol;  // "connect", "http", "socks5", "tcp"
  std::string at;        // RFC 3339 UTC time with milliseconds
};

struct ResourceUsage {
  std::uint64_t peak_memory_bytes = 0;
  std::uint64_t cpu_user_ms = 0;
  std::uint64_t cpu_system_ms = 0;
  std::uint64_t disk_bytes = 0;
  std::uint64_t oom_kills = 0;
  std::uint64_t pids_limit_hits = 0;
  std::uint64_t cpu_throttled_ms = 0;
  // Without network: connection attempts and packets that found no way out.
  std::uint64_t network_unreachable = 0;
  bool exact = true;
  // With a network allow-list (the task's usage only): bytes per destination.
  std::vector<EgressTraffic> egress;
};

struct OutputCapture {
  std::string text;                 // masked, capped
  std::uint64_t total_bytes = 0;    // what the step wrote
  std::uint64_t dropped_bytes = 0;  // what the cap dropped
};

struct StepResult {
  std::string name;
  TaskStatus status = TaskStatus::kSucceeded;
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::int64_t duration_ms = 0;
  LimitKind limit = LimitKind::kNone;  // the limit that ended this step, if one did
  OutputCapture stdout_capture;
  OutputCapture stderr_capture;
  ResourceUsage usage;
};

struct Artifact {
  std::string path;  // relative to the workspace
  std::uint64_t size = 0;
  std::string sha256;
  // Set for a symbolic link (a built libz.so -> libz.so.1.3): its target, relative to the
  // link's directory and inside the workspace. Then size is 0 and sha256 is the digest of the
  // target text; the link is recreated as a link, never followed.
  std::string link;
};

struct TaskError {
  std::string code;
  std::string message;
  bool retryable = false;
};

struct TaskResult {
  std::string task_id;
  std::string type;
  TaskStatus status = TaskStatus::kSucceeded;
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::int64_t duration_ms = 0;
  std::vector<StepResult> steps;
  ResourceUsage usage;  // peak over steps for memory, sums for CPU
  LimitKind limit = LimitKind::kNone;
  std::vector<Artifact> artifacts;
  std::optional<TaskError> error;
  std::vector<std::string> degradations;  // isolation or limits that could not be applied
  // What the user may want to know about why the task ended as it did (it tried to reach the
  // network it does not have); plain sentences.
  std::vector<std::string> hints;
  // With a network allow-list: every connection the egress proxy refused, oldest first, and
  // how many more there were beyond the ones listed (the list is bounded).
  std::vector<EgressRefusal> egress_refused;
  std::uint64_t egress_refused_dropped = 0;
  nlohmann::json details;  // handler-specific data (tests, findings)
};

std::string_view to_string(TaskStatus status);
std::optional<TaskStatus> task_status_from_string(std::string_view text);
std::string_view to_string(LimitKind limit);

nlohmann::json to_json(const TaskResult& result);
// For results produced by external handlers; throws Error(kInfrastructure) when malformed.
TaskResult task_result_from_json(const nlohmann::json& document);

// Why a symbolic link at workspace path `path` with target `target` cannot be recorded as an
// artifact (an absolute target, one that leads out of the workspace, text that is not
// printable UTF-8), quoting the target; nullopt when it can.
std::optional<std::string> artifact_link_problem(std::string_view path, std::string_view target);

}  // namespace tamma::protocol
