#pragma once
// The wire types of the orchestrator protocol (HTTP/JSON under /api/v1), shared by the
// orchestrator, its admin CLI and the worker daemon. docs/protocol.md is the prose,
// docs/openapi.yaml the schema and docs/protocol.d.ts the TypeScript view of the same types;
// tests/orchestrator/wire_schema_test.cc keeps the four in step.
//
// Every duration on the wire is a number of milliseconds relative to the moment the message was
// produced, never an absolute time: worker and orchestrator clocks may disagree.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace tamma::protocol::wire {

inline constexpr std::string_view kApiPrefix = "/api/v1";

// A request or response document that does not match its schema. `field` is the JSON path of
// the offending member ("$.capabilities.slots"), so an HTTP 400 can name it.
class WireError : public Error {
 public:
  WireError(std::string field, const std::string& message)
      : Error(ErrorKind::kConfig, "invalid_field", field + ": " + message),
        field_(std::move(field)) {}
  [[nodiscard]] const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// ---- registration -----------------------------------------------------------------------------

struct Platform {
  std::string os;
  std::string arch;
  std::string kernel;
};

struct WorkerResources {
  std::uint64_t memory_bytes = 0;
  double cpus = 0;
  std::uint64_t disk_bytes = 0;
};

struct Capabilities {
  std::vector<std::string> task_types;        // a task is offered only when its type is listed
  std::map<std::string, std::string> labels;  // must cover every label a task requires
  int slots = 1;                              // tasks the worker runs at once
  WorkerResources resources;
  std::string version;
  Platform platform;
};

struct RegisterRequest {
  Capabilities capabilities;
};

struct RegisterResponse {
  std::string worker_id;
  std::string token;  // the per-worker bearer token; shown once, stored only as a hash
  std::int64_t heartbeat_interval_ms = 0;
  std::int64_t lease_ttl_ms = 0;
  std::int64_t poll_timeout_ms = 0;
};

// ---- heartbeat --------------------------------------------------------------------------------

struct LeaseRef {
  std::string task_id;
  int attempt = 0;
  std::string lease_id;
};

struct TaskAttemptRef {
  std::string task_id;
  int attempt = 0;
};

inline constexpr std::size_t kMaxUnhealthyReason = 1024;

struct HeartbeatRequest {
  std::vector<LeaseRef> leases;  // every lease the worker holds; the rest are not renewed
  bool draining = false;         // the worker takes no new task
  // Set while the worker stands down because its host failed several tasks in a row: why.
  std::optional<std::string> unhealthy;
};

struct HeartbeatResponse {
  std::vector<TaskAttemptRef> cancel;       // stop these, then report them cancelled
  std::vector<TaskAttemptRef> lost_leases;  // stop these and report nothing more
  bool drain = false;                       // the orchestrator asks the worker to drain
  std::int64_t lease_ttl_ms = 0;            // from now, for every renewed lease
};

// ---- polling ----------------------------------------------------------------------------------

struct PollRequest {
  std::optional<std::int64_t> wait_ms;  // capped by the server's poll timeout
};

struct Assignment {
  nlohmann::json task;  // the task spec as submitted, with "id" set to task_id
  std::string task_id;
  int attempt = 0;
  std::string lease_id;
  std::int64_t lease_ttl_ms = 0;
};

// ---- fenced task writes -----------------------------------------------------------------------

// Carried by every worker write about a task: the write applies only while the task is still
// running this attempt under this lease.
struct Fence {
  int attempt = 0;
  std::string lease_id;
};

struct StartedRequest {
  Fence fence;
};

struct Progress {
  std::optional<double> percent;
  std::optional<std::string> step;
  std::optional<std::string> message;
};

struct ProgressRequest {
  Fence fence;
  std::optional<double> percent;  // 0..100
  std::optional<std::string> step;
  std::optional<std::string> message;
};

// The JSON form of a log append; the raw form sends the bytes as the body with
// ?attempt=&leaseId=&offset= in the query.
struct LogAppendRequest {
  Fence fence;
  std::uint64_t offset = 0;
  std::string data;
};

struct LogAppendResponse {
  std::uint64_t length = 0;  // bytes of this attempt's log the orchestrator holds
};

struct TaskFailure {
  std::string code;
  std::string message;
  bool retryable = false;
};

// What the worker says about the attempt's log as it reports the result. With `bytes` the
// orchestrator refuses the result (409 log_incomplete) while it holds less than that, so the
// worker sends the rest first; `missing_bytes` is output the worker could not deliver at all
// (recorded on the task, so nobody takes a cut log for the whole of it).
struct LogSummary {
  std::optional<std::uint64_t> bytes;  // "logBytes"
  std::uint64_t missing_bytes = 0;     // "logMissingBytes"
};

struct CompleteRequest {
  Fence fence;
  nlohmann::json result;  // the result document (protocol/task_result.h); "status" is required
  LogSummary log;
  // The attempt's last progress, when the worker had not sent it (a short task sends none).
  std::optional<Progress> progress;
  // "next": the worker's next task, if one is queued for it now, comes back in the answer,
  // claimed in the same transaction as this report (one commit, no poll round trip).
  bool next = false;
};

struct FailRequest {
  Fence fence;
  TaskFailure error;
  std::optional<nlohmann::json> result;
  LogSummary log;
  std::optional<Progress> progress;  // as CompleteRequest::progress
  bool next = false;                 // as CompleteRequest::next
};

struct ArtifactInfo {
  std::string name;
  int attempt = 0;
  std::uint64_t size = 0;
  std::string sha256;
};

// ---- admin ------------------------------------------------------------------------------------

struct SubmitRequest {
  nlohmann::json task;  // a task spec (docs/task-spec.md)
  int priority = 0;     // higher first, FIFO within a priority
  int max_retries = 3;  // attempts after the first one that may follow a lost lease or a
                        // retryable failure
  std::map<std::string, std::string> labels;  // required of the worker
  std::optional<std::string> idempotency_key;
};

// States of a task; see docs/protocol.md for the transitions.
enum class TaskState {
  kQueued,
  kRunning,
  kSucceeded,
  kFailed,
  kRetryWait,
  kDead,
  kCancelRequested,
  kCancelled,
};

std::string_view to_string(TaskState state);
std::optional<TaskState> task_state_from_string(std::string_view text);
bool is_final(TaskState state);

// The answer to complete and fail: the task's state after the report and, when the request
// asked for it and a task was queued for this worker, the worker's next assignment.
struct ReportAnswer {
  TaskState state = TaskState::kQueued;
  std::optional<Assignment> next;
};

struct TaskView {
  std::string id;
  std::string type;
  TaskState state = TaskState::kQueued;
  int attempt = 0;  // 0 until first handed out
  int max_retries = 3;
  int priority = 0;
  std::map<std::string, std::string> labels;
  std::optional<std::string> worker_id;
  std::optional<std::string> idempotency_key;
  Progress progress;
  std::optional<nlohmann::json> result;
  std::optional<TaskFailure> error;
  std::optional<std::int64_t> retry_in_ms;  // while retry_wait: how long until queued again
  std::uint64_t log_length = 0;             // of the current attempt
  // Output of the last reported attempt its worker could not deliver ("logMissingBytes").
  std::uint64_t log_missing_bytes = 0;
  std::vector<ArtifactInfo> artifacts;
  // RFC 3339 UTC times for people reading the admin API; workers never receive these.
  std::string created_at;
  std::string updated_at;
  std::optional<std::string> started_at;
  std::optional<std::string> finished_at;
  nlohmann::json task;  // the spec as submitted, with "id" set
};

struct TaskList {
  std::vector<TaskView> tasks;
};

enum class WorkerState { kOnline, kDraining, kOffline, kGone };
std::string_view to_string(WorkerState state);
std::optional<WorkerState> worker_state_from_string(std::string_view text);

struct WorkerView {
  std::string id;
  WorkerState state = WorkerState::kOnline;
  Capabilities capabilities;
  std::vector<LeaseRef> leases;  // running on it now (lease ids shown to admins only)
  std::string registered_at;
  std::string last_seen_at;
  std::int64_t last_seen_ago_ms = 0;
  std::optional<std::string> unhealthy;  // what the worker last said is wrong with its host
};

struct WorkerList {
  std::vector<WorkerView> workers;
};

struct ValidationProblemView {
  std::string path;
  std::string message;
};

// The body of every 4xx/5xx answer.
struct ErrorBody {
  std::string code;  // stable and machine-readable, e.g. "lease_lost", "invalid_field"
  std::string message;
  std::optional<std::string> field;             // the JSON path at fault, for 400
  std::vector<ValidationProblemView> problems;  // every task spec problem, for 400
  std::optional<std::string> state;             // the task's current state, for 409
  std::optional<int> attempt;                   // the task's current attempt, for 409
  std::optional<std::uint64_t> length;          // the log's current length, for 409/416
};

// ---- audit trail ------------------------------------------------------------------------------
// An append-only record of every operation that changed the orchestrator's state, written in
// the operation's own transaction (docs/adr/0026-audit-trail.md). Never a token, a spec, a log
// or an error message: only who, what, on which task and attempt, and a few plain facts.

// Who asked for the operation: the admin, a worker (its id), a client registering a worker, or
// the orchestrator on its own (lease expiry, retries, undelivered answers).
enum class ActorKind { kAdmin, kWorker, kRegistration, kOrchestrator };
std::string_view to_string(ActorKind kind);
std::optional<ActorKind> actor_kind_from_string(std::string_view text);

enum class AuditAction {
  kRegister,             // a worker registered
  kUnregister,           // a worker unregistered (itself, or by the admin)
  kDrain,                // the admin asked a worker to drain
  kSubmit,               // a task was submitted (not an idempotent replay)
  kCancel,               // a task was cancelled, or asked to stop
  kClaim,                // a task was handed to a worker: a new attempt
  kClaimReleased,        // a claim whose answer could not be written was undone
  kClaimUnacknowledged,  // a claim the worker never acknowledged was queued again
  kStarted,              // the worker said it started the attempt
  kArtifact,             // the worker uploaded an artifact
  kComplete,             // the worker reported the attempt's result
  kFail,                 // the worker reported the attempt failed
  kLeaseExpired,         // the worker stopped renewing its lease
  kLeaseRevoked,         // the lease ended because its worker unregistered
  kLeaseGrace,           // every held lease was given one more TTL (restart, stall)
  kRetryPromoted,        // a task's retry backoff was over: queued again
};
std::string_view to_string(AuditAction action);
std::optional<AuditAction> audit_action_from_string(std::string_view text);

struct AuditActor {
  ActorKind kind = ActorKind::kOrchestrator;
  std::optional<std::string> id;       // the worker's id, for kind worker
  std::optional<std::string> address;  // the client's "ip:port"; none for the orchestrator
};

struct AuditRecord {
  std::int64_t seq = 0;  // ascending in the order the records were written
  std::string at;        // RFC 3339 UTC, from the database clock
  AuditActor actor;
  AuditAction action = AuditAction::kSubmit;
  std::optional<std::string> task_id;
  std::optional<int> attempt;
  std::optional<std::string> worker_id;  // the worker the operation concerns
  // A few plain facts (docs/openapi.yaml AuditDetail): the task's state after it, an error
  // code, an artifact's name and digest.
  nlohmann::json detail = nlohmann::json::object();
};

struct AuditList {
  std::vector<AuditRecord> records;
  std::optional<std::int64_t> next;  // set when the page is full: ask again with ?after=next
};

// ---- JSON mapping -----------------------------------------------------------------------------
// to_json writes camelCase members and leaves out unset optionals; from_json checks types and
// required members and throws WireError naming the member.

nlohmann::json to_json(const Platform& v);
nlohmann::json to_json(const WorkerResources& v);
nlohmann::json to_json(const Capabilities& v);
nlohmann::json to_json(const RegisterRequest& v);
nlohmann::json to_json(const RegisterResponse& v);
nlohmann::json to_json(const LeaseRef& v);
nlohmann::json to_json(const TaskAttemptRef& v);
nlohmann::json to_json(const HeartbeatRequest& v);
nlohmann::json to_json(const HeartbeatResponse& v);
nlohmann::json to_json(const PollRequest& v);
nlohmann::json to_json(const Assignment& v);
nlohmann::json to_json(const StartedRequest& v);
nlohmann::json to_json(const ProgressRequest& v);
nlohmann::json to_json(const LogAppendRequest& v);
nlohmann::json to_json(const LogAppendResponse& v);
nlohmann::json to_json(const TaskFailure& v);
nlohmann::json to_json(const CompleteRequest& v);
nlohmann::json to_json(const FailRequest& v);
nlohmann::json to_json(const ReportAnswer& v);
nlohmann::json to_json(const ArtifactInfo& v);
nlohmann::json to_json(const SubmitRequest& v);
nlohmann::json to_json(const Progress& v);
nlohmann::json to_json(const TaskView& v);
nlohmann::json to_json(const TaskList& v);
nlohmann::json to_json(const WorkerView& v);
nlohmann::json to_json(const WorkerList& v);
nlohmann::json to_json(const ErrorBody& v);
nlohmann::json to_json(const AuditActor& v);
nlohmann::json to_json(const AuditRecord& v);
nlohmann::json to_json(const AuditList& v);

Platform platform_from_json(const nlohmann::json& j, const std::string& path = "$");
Capabilities capabilities_from_json(const nlohmann::json& j, const std::string& path = "$");
RegisterRequest register_request_from_json(const nlohmann::json& j);
RegisterResponse register_response_from_json(const nlohmann::json& j);
HeartbeatRequest heartbeat_request_from_json(const nlohmann::json& j);
HeartbeatResponse heartbeat_response_from_json(const nlohmann::json& j);
PollRequest poll_request_from_json(const nlohmann::json& j);
Assignment assignment_from_json(const nlohmann::json& j);
StartedRequest started_request_from_json(const nlohmann::json& j);
ProgressRequest progress_request_from_json(const nlohmann::json& j);
LogAppendRequest log_append_request_from_json(const nlohmann::json& j);
LogAppendResponse log_append_response_from_json(const nlohmann::json& j);
CompleteRequest complete_request_from_json(const nlohmann::json& j);
FailRequest fail_request_from_json(const nlohmann::json& j);
ReportAnswer report_answer_from_json(const nlohmann::json& j);
SubmitRequest submit_request_from_json(const nlohmann::json& j);
TaskView task_view_from_json(const nlohmann::json& j, const std::string& path = "$");
TaskList task_list_from_json(const nlohmann::json& j);
WorkerView worker_view_from_json(const nlohmann::json& j, const std::string& path = "$");
WorkerList worker_list_from_json(const nlohmann::json& j);
ErrorBody error_body_from_json(const nlohmann::json& j);
AuditRecord audit_record_from_json(const nlohmann::json& j, const std::string& path = "$");
AuditList audit_list_from_json(const nlohmann::json& j);

// Parses a request body as JSON; throws WireError("$", ...) with the parser's position.
nlohmann::json parse_body(std::string_view body);

// The result statuses a completed task may report (protocol/task_result.h's TaskStatus names).
bool is_result_status(std::string_view status);

}  // namespace tamma::protocol::wire
