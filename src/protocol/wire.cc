#include "protocol/wire.h"
#include "common/json_parse.h"

#include <array>
#include <cmath>
#include <limits>

namespace tamma::protocol::wire {
namespace {

using nlohmann::json;

std::string member_path(const std::string& path, std::string_view key) {
  return path + "." + std::string(key);
}

std::string index_path(const std::string& path, std::size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

const char* type_name(const json& j) { return j.type_name(); }

// Reads the members of one JSON object, naming the member's path in every error.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) {
      throw WireError(path_, std::string("expected an object, got ") + type_name(j_));
    }
  }

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string at(std::string_view key) const { return member_path(path_, key); }

  [[nodiscard]] const json* find(std::string_view key) const {
    auto it = j_.find(std::string(key));
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  [[nodiscard]] const json& require(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) throw WireError(at(key), "is required");
    return *v;
  }

  [[nodiscard]] std::optional<std::string> opt_string(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) {
      throw WireError(at(key), std::string("expected a string, got ") + type_name(*v));
    }
    return v->get<std::string>();
  }

  [[nodiscard]] std::string string(std::string_view key) const {
    auto v = opt_string(key);
    if (!v) throw WireError(at(key), "is required");
    return *v;
  }

  [[nodiscard]] std::string non_empty_string(std::string_view key) const {
    auto v = string(key);
    if (v.empty()) throw WireError(at(key), "must not be empty");
    return v;
  }

  [[nodiscard]] std::optional<std::int64_t> opt_int(std::string_view key, std::int64_t min,
                                                    std::int64_t max) const {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    std::int64_t n = 0;
    if (v->is_number_integer()) {
      n = v->get<std::int64_t>();
      if (v->is_number_unsigned() &&
          v->get<std::uint64_t>() >
              static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        throw WireError(at(key), "is too large");
      }
    } else if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
               std::abs(v->get<double>()) < 9.0e15) {
      n = static_cast<std::int64_t>(v->get<double>());
    } else {
      throw WireError(at(key), std::string("expected an integer, got ") + type_name(*v));
    }
    if (n < min || n > max) {
      throw WireError(at(key), "must be between " + std::to_string(min) + " and " +
                                   std::to_string(max) + ", got " + std::to_string(n));
    }
    return n;
  }

  [[nodiscard]] std::int64_t int_value(std::string_view key, std::int64_t min,
                                       std::int64_t max) const {
    auto v = opt_int(key, min, max);
    if (!v) throw WireError(at(key), "is required");
    return *v;
  }

  [[nodiscard]] std::optional<std::uint64_t> opt_uint(std::string_view key) const {
    auto v = opt_int(key, 0, std::numeric_limits<std::int64_t>::max());
    if (!v) return std::nullopt;
    return static_cast<std::uint64_t>(*v);
  }

  [[nodiscard]] std::optional<double> opt_number(std::string_view key, double min,
                                                 double max) const {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) {
      throw WireError(at(key), std::string("expected a number, got ") + type_name(*v));
    }
    double d = v->get<double>();
    if (!(d >= min && d <= max)) {
      throw WireError(at(key), "must be between " + json(min).dump() + " and " + json(max).dump());
    }
    return d;
  }

  [[nodiscard]] std::optional<bool> opt_bool(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) {
      throw WireError(at(key), std::string("expected a boolean, got ") + type_name(*v));
    }
    return v->get<bool>();
  }

  [[nodiscard]] bool boolean(std::string_view key) const {
    auto v = opt_bool(key);
    if (!v) throw WireError(at(key), "is required");
    return *v;
  }

  [[nodiscard]] const json& object(std::string_view key) const {
    const json& v = require(key);
    if (!v.is_object()) {
      throw WireError(at(key), std::string("expected an object, got ") + type_name(v));
    }
    return v;
  }

  [[nodiscard]] const json* opt_array(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) return nullptr;
    if (!v->is_array()) {
      throw WireError(at(key), std::string("expected an array, got ") + type_name(*v));
    }
    return v;
  }

  [[nodiscard]] const json& array(std::string_view key) const {
    const json* v = opt_array(key);
    if (v == nullptr) throw WireError(at(key), "is required");
    return *v;
  }

  [[nodiscard]] std::vector<std::string> string_array(std::string_view key) const {
    std::vector<std::string> out;
    const json* a = opt_array(key);
    if (a == nullptr) return out;
    for (std::size_t i = 0; i < a->size(); ++i) {
      const json& item = (*a)[i];
      if (!item.is_string() || item.get<std::string>().empty()) {
        throw WireError(index_path(at(key), i), "expected a non-empty string");
      }
      out.push_back(item.get<std::string>());
    }
    return out;
  }

 private:
  const json& j_;
  std::string path_;
};

bool is_label_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '/';
}

// Label keys end up in SQL JSON paths and in Prometheus output: a plain alphabet keeps both safe.
std::map<std::string, std::string> labels_from_json(const ObjectReader& r, std::string_view key) {
  std::map<std::string, std::string> out;
  const json* v = r.find(key);
  if (v == nullptr) return out;
  if (!v->is_object()) {
    throw WireError(r.at(key), std::string("expected an object, got ") + type_name(*v));
  }
  for (const auto& [name, value] : v->items()) {
    std::string path = r.at(key) + "." + name;
    if (name.empty() || name.size() > 128) {
      throw WireError(path, "a label name has 1 to 128 characters");
    }
    for (char c : name) {
      if (!is_label_key_char(c)) {
        throw WireError(path, "a label name has only letters, digits and . _ - /");
      }
    }
    if (!value.is_string()) {
      throw WireError(path, std::string("expected a string, got ") + type_name(value));
    }
    if (value.get<std::string>().size() > 1024) {
      throw WireError(path, "a label value has at most 1024 characters");
    }
    out[name] = value.get<std::string>();
  }
  return out;
}

json labels_to_json(const std::map<std::string, std::string>& labels) {
  json out = json::object();
  for (const auto& [k, v] : labels) out[k] = v;
  return out;
}

constexpr int kMaxAttempt = 1'000'000;

Fence fence_from(const ObjectReader& r) {
  Fence f;
  f.attempt = static_cast<int>(r.int_value("attempt", 1, kMaxAttempt));
  f.lease_id = r.non_empty_string("leaseId");
  return f;
}

void put_fence(json& j, const Fence& f) {
  j["attempt"] = f.attempt;
  j["leaseId"] = f.lease_id;
}

LeaseRef lease_ref_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  return {r.non_empty_string("taskId"), static_cast<int>(r.int_value("attempt", 1, kMaxAttempt)),
          r.non_empty_string("leaseId")};
}

TaskAttemptRef attempt_ref_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  return {r.non_empty_string("taskId"), static_cast<int>(r.int_value("attempt", 1, kMaxAttempt))};
}

TaskFailure failure_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  TaskFailure f;
  f.code = r.non_empty_string("code");
  f.message = r.string("message");
  f.retryable = r.opt_bool("retryable").value_or(false);
  return f;
}

WorkerResources resources_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  WorkerResources res;
  res.memory_bytes = r.opt_uint("memoryBytes").value_or(0);
  res.cpus = r.opt_number("cpus", 0, 1e6).value_or(0);
  res.disk_bytes = r.opt_uint("diskBytes").value_or(0);
  return res;
}

ArtifactInfo artifact_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  ArtifactInfo a;
  a.name = r.non_empty_string("name");
  a.attempt = static_cast<int>(r.int_value("attempt", 1, kMaxAttempt));
  a.size = r.opt_uint("size").value_or(0);
  a.sha256 = r.string("sha256");
  return a;
}

Progress progress_from(const ObjectReader& r) {
  Progress p;
  p.percent = r.opt_number("percent", 0, 100);
  p.step = r.opt_string("step");
  p.message = r.opt_string("message");
  return p;
}

void put_progress(json& j, const Progress& p) {
  if (p.percent) j["percent"] = *p.percent;
  if (p.step) j["step"] = *p.step;
  if (p.message) j["message"] = *p.message;
}

constexpr std::array<std::pair<TaskState, std::string_view>, 8> kTaskStates = {{
    {TaskState::kQueued, "queued"},
    {TaskState::kRunning, "running"},
    {TaskState::kSucceeded, "succeeded"},
    {TaskState::kFailed, "failed"},
    {TaskState::kRetryWait, "retry_wait"},
    {TaskState::kDead, "dead"},
    {TaskState::kCancelRequested, "cancel_requested"},
    {TaskState::kCancelled, "cancelled"},
}};

constexpr std::array<std::pair<WorkerState, std::string_view>, 4> kWorkerStates = {{
    {WorkerState::kOnline, "online"},
    {WorkerState::kDraining, "draining"},
    {WorkerState::kOffline, "offline"},
    {WorkerState::kGone, "gone"},
}};

constexpr std::array<std::pair<ActorKind, std::string_view>, 4> kActorKinds = {{
    {ActorKind::kAdmin, "admin"},
    {ActorKind::kWorker, "worker"},
    {ActorKind::kRegistration, "registration"},
    {ActorKind::kOrchestrator, "orchestrator"},
}};

constexpr std::array<std::pair<AuditAction, std::string_view>, 16> kAuditActions = {{
    {AuditAction::kRegister, "register"},
    {AuditAction::kUnregister, "unregister"},
    {AuditAction::kDrain, "drain"},
    {AuditAction::kSubmit, "submit"},
    {AuditAction::kCancel, "cancel"},
    {AuditAction::kClaim, "claim"},
    {AuditAction::kClaimReleased, "claim_released"},
    {AuditAction::kClaimUnacknowledged, "claim_unacknowledged"},
    {AuditAction::kStarted, "started"},
    {AuditAction::kArtifact, "artifact"},
    {AuditAction::kComplete, "complete"},
    {AuditAction::kFail, "fail"},
    {AuditAction::kLeaseExpired, "lease_expired"},
    {AuditAction::kLeaseRevoked, "lease_revoked"},
    {AuditAction::kLeaseGrace, "lease_grace"},
    {AuditAction::kRetryPromoted, "retry_promoted"},
}};

// The names protocol/task_result.h gives TaskStatus; repeated here so the protocol library's
// wire layer does not depend on the result document's serializer.
constexpr std::array<std::string_view, 6> kResultStatuses = {
    "succeeded", "failed", "timeout", "limit_exceeded", "cancelled", "error"};

}  // namespace

std::string_view to_string(TaskState state) {
  for (const auto& [s, name] : kTaskStates) {
    if (s == state) return name;
  }
  return "unknown";
}

std::optional<TaskState> task_state_from_string(std::string_view text) {
  for (const auto& [s, name] : kTaskStates) {
    if (name == text) return s;
  }
  return std::nullopt;
}

bool is_final(TaskState state) {
  return state == TaskState::kSucceeded || state == TaskState::kFailed ||
         state == TaskState::kDead || state == TaskState::kCancelled;
}

std::string_view to_string(WorkerState state) {
  for (const auto& [s, name] : kWorkerStates) {
    if (s == state) return name;
  }
  return "unknown";
}

std::optional<WorkerState> worker_state_from_string(std::string_view text) {
  for (const auto& [s, name] : kWorkerStates) {
    if (name == text) return s;
  }
  return std::nullopt;
}

std::string_view to_string(ActorKind kind) {
  for (const auto& [k, name] : kActorKinds) {
    if (k == kind) return name;
  }
  return "unknown";
}

std::optional<ActorKind> actor_kind_from_string(std::string_view text) {
  for (const auto& [k, name] : kActorKinds) {
    if (name == text) return k;
  }
  return std::nullopt;
}

std::string_view to_string(AuditAction action) {
  for (const auto& [a, name] : kAuditActions) {
    if (a == action) return name;
  }
  return "unknown";
}

std::optional<AuditAction> audit_action_from_string(std::string_view text) {
  for (const auto& [a, name] : kAuditActions) {
    if (name == text) return a;
  }
  return std::nullopt;
}

bool is_result_status(std::string_view status) {
  for (auto s : kResultStatuses) {
    if (s == status) return true;
  }
  return false;
}

json parse_body(std::string_view body) {
  if (body.empty()) throw WireError("$", "the body is empty; a JSON object is expected");
  try {
    return parse_json_text(body);
  } catch (const JsonTextError& e) {
    throw WireError(e.field(), e.reason());
  }
}

// ---- to_json ----------------------------------------------------------------------------------

json to_json(const Platform& v) { return {{"os", v.os}, {"arch", v.arch}, {"kernel", v.kernel}}; }

json to_json(const WorkerResources& v) {
  return {{"memoryBytes", v.memory_bytes}, {"cpus", v.cpus}, {"diskBytes", v.disk_bytes}};
}

json to_json(const Capabilities& v) {
  return {{"taskTypes", v.task_types}, {"labels", labels_to_json(v.labels)},
          {"slots", v.slots},          {"resources", to_json(v.resources)},
          {"version", v.version},      {"platform", to_json(v.platform)}};
}

json to_json(const RegisterRequest& v) { return {{"capabilities", to_json(v.capabilities)}}; }

json to_json(const RegisterResponse& v) {
  return {{"workerId", v.worker_id},
          {"token", v.token},
          {"heartbeatIntervalMs", v.heartbeat_interval_ms},
          {"leaseTtlMs", v.lease_ttl_ms},
          {"pollTimeoutMs", v.poll_timeout_ms}};
}

json to_json(const LeaseRef& v) {
  return {{"taskId", v.task_id}, {"attempt", v.attempt}, {"leaseId", v.lease_id}};
}

json to_json(const TaskAttemptRef& v) { return {{"taskId", v.task_id}, {"attempt", v.attempt}}; }

json to_json(const HeartbeatRequest& v) {
  json leases = json::array();
  for (const auto& l : v.leases) leases.push_back(to_json(l));
  json j = {{"leases", leases}, {"draining", v.draining}};
  if (v.unhealthy) j["unhealthy"] = *v.unhealthy;
  return j;
}

json to_json(const HeartbeatResponse& v) {
  json cancel = json::array();
  for (const auto& c : v.cancel) cancel.push_back(to_json(c));
  json lost = json::array();
  for (const auto& l : v.lost_leases) lost.push_back(to_json(l));
  return {
      {"cancel", cancel}, {"lostLeases", lost}, {"drain", v.drain}, {"leaseTtlMs", v.lease_ttl_ms}};
}

json to_json(const PollRequest& v) {
  json j = json::object();
  if (v.wait_ms) j["waitMs"] = *v.wait_ms;
  return j;
}

json to_json(const Assignment& v) {
  return {{"task", v.task},
          {"taskId", v.task_id},
          {"attempt", v.attempt},
          {"leaseId", v.lease_id},
          {"leaseTtlMs", v.lease_ttl_ms}};
}

json to_json(const StartedRequest& v) {
  json j = json::object();
  put_fence(j, v.fence);
  return j;
}

json to_json(const ProgressRequest& v) {
  json j = json::object();
  put_fence(j, v.fence);
  put_progress(j, Progress{v.percent, v.step, v.message});
  return j;
}

json to_json(const LogAppendRequest& v) {
  json j = json::object();
  put_fence(j, v.fence);
  j["offset"] = v.offset;
  j["data"] = v.data;
  return j;
}

json to_json(const LogAppendResponse& v) { return {{"length", v.length}}; }

json to_json(const TaskFailure& v) {
  return {{"code", v.code}, {"message", v.message}, {"retryable", v.retryable}};
}

namespace {

void put_log_summary(json& j, const LogSummary& log) {
  if (log.bytes) j["logBytes"] = *log.bytes;
  if (log.missing_bytes > 0) j["logMissingBytes"] = log.missing_bytes;
}

std::optional<Progress> report_progress_from(const ObjectReader& r) {
  if (r.find("progress") == nullptr) return std::nullopt;
  return progress_from(ObjectReader(r.object("progress"), r.at("progress")));
}

LogSummary log_summary_from(const ObjectReader& r) {
  LogSummary log;
  log.bytes = r.opt_uint("logBytes");
  log.missing_bytes = r.opt_uint("logMissingBytes").value_or(0);
  return log;
}

// What complete and fail both carry after their own members: the log summary, the last
// progress the worker did not send, and whether the next task may come back.
template <class Report>
void put_report_tail(json& j, const Report& v) {
  put_log_summary(j, v.log);
  if (v.progress) put_progress(j["progress"] = json::object(), *v.progress);
  if (v.next) j["next"] = true;
}

template <class Report>
void read_report_tail(const ObjectReader& r, Report& v) {
  v.log = log_summary_from(r);
  v.progress = report_progress_from(r);
  v.next = r.opt_bool("next").value_or(false);
}

}  // namespace

json to_json(const CompleteRequest& v) {
  json j = json::object();
  put_fence(j, v.fence);
  j["result"] = v.result;
  put_report_tail(j, v);
  return j;
}

json to_json(const FailRequest& v) {
  json j = json::object();
  put_fence(j, v.fence);
  j["error"] = to_json(v.error);
  if (v.result) j["result"] = *v.result;
  put_report_tail(j, v);
  return j;
}

json to_json(const ReportAnswer& v) {
  json j = {{"state", to_string(v.state)}};
  if (v.next) j["next"] = to_json(*v.next);
  return j;
}

json to_json(const ArtifactInfo& v) {
  return {{"name", v.name}, {"attempt", v.attempt}, {"size", v.size}, {"sha256", v.sha256}};
}

json to_json(const SubmitRequest& v) {
  json j = {{"task", v.task},
            {"priority", v.priority},
            {"maxRetries", v.max_retries},
            {"labels", labels_to_json(v.labels)}};
  if (v.idempotency_key) j["idempotencyKey"] = *v.idempotency_key;
  return j;
}

json to_json(const Progress& v) {
  json j = json::object();
  put_progress(j, v);
  return j;
}

json to_json(const TaskView& v) {
  json j = {{"id", v.id},
            {"type", v.type},
            {"state", to_string(v.state)},
            {"attempt", v.attempt},
            {"maxRetries", v.max_retries},
            {"priority", v.priority},
            {"labels", labels_to_json(v.labels)},
            {"progress", to_json(v.progress)},
            {"logLength", v.log_length},
            {"createdAt", v.created_at},
            {"updatedAt", v.updated_at},
            {"task", v.task}};
  if (v.worker_id) j["workerId"] = *v.worker_id;
  if (v.idempotency_key) j["idempotencyKey"] = *v.idempotency_key;
  if (v.result) j["result"] = *v.result;
  if (v.error) j["error"] = to_json(*v.error);
  if (v.retry_in_ms) j["retryInMs"] = *v.retry_in_ms;
  if (v.started_at) j["startedAt"] = *v.started_at;
  if (v.finished_at) j["finishedAt"] = *v.finished_at;
  if (v.log_missing_bytes > 0) j["logMissingBytes"] = v.log_missing_bytes;
  json artifacts = json::array();
  for (const auto& a : v.artifacts) artifacts.push_back(to_json(a));
  j["artifacts"] = artifacts;
  return j;
}

json to_json(const TaskList& v) {
  json tasks = json::array();
  for (const auto& t : v.tasks) tasks.push_back(to_json(t));
  return {{"tasks", tasks}};
}

json to_json(const WorkerView& v) {
  json leases = json::array();
  for (const auto& l : v.leases) leases.push_back(to_json(l));
  json j = {{"id", v.id},
            {"state", to_string(v.state)},
            {"capabilities", to_json(v.capabilities)},
            {"leases", leases},
            {"registeredAt", v.registered_at},
            {"lastSeenAt", v.last_seen_at},
            {"lastSeenAgoMs", v.last_seen_ago_ms}};
  if (v.unhealthy) j["unhealthy"] = *v.unhealthy;
  return j;
}

json to_json(const WorkerList& v) {
  json workers = json::array();
  for (const auto& w : v.workers) workers.push_back(to_json(w));
  return {{"workers", workers}};
}

json to_json(const ErrorBody& v) {
  json e = {{"code", v.code}, {"message", v.message}};
  if (v.field) e["field"] = *v.field;
  if (!v.problems.empty()) {
    json problems = json::array();
    for (const auto& p : v.problems) problems.push_back({{"path", p.path}, {"message", p.message}});
    e["problems"] = problems;
  }
  if (v.state) e["state"] = *v.state;
  if (v.attempt) e["attempt"] = *v.attempt;
  if (v.length) e["length"] = *v.length;
  return {{"error", e}};
}

json to_json(const AuditActor& v) {
  json j = {{"kind", to_string(v.kind)}};
  if (v.id) j["id"] = *v.id;
  if (v.address) j["address"] = *v.address;
  return j;
}

json to_json(const AuditRecord& v) {
  json j = {{"seq", v.seq},
            {"at", v.at},
            {"actor", to_json(v.actor)},
            {"action", to_string(v.action)},
            {"detail", v.detail}};
  if (v.task_id) j["taskId"] = *v.task_id;
  if (v.attempt) j["attempt"] = *v.attempt;
  if (v.worker_id) j["workerId"] = *v.worker_id;
  return j;
}

json to_json(const AuditList& v) {
  json records = json::array();
  for (const auto& r : v.records) records.push_back(to_json(r));
  json j = {{"records", records}};
  if (v.next) j["next"] = *v.next;
  return j;
}

// ---- from_json --------------------------------------------------------------------------------

Platform platform_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  return {r.opt_string("os").value_or(""), r.opt_string("arch").value_or(""),
          r.opt_string("kernel").value_or("")};
}

Capabilities capabilities_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  Capabilities c;
  c.task_types = r.string_array("taskTypes");
  if (c.task_types.empty()) {
    throw WireError(r.at("taskTypes"), "is required and lists at least one task type");
  }
  c.labels = labels_from_json(r, "labels");
  c.slots = static_cast<int>(r.opt_int("slots", 1, 4096).value_or(1));
  if (const json* res = r.find("resources"))
    c.resources = resources_from_json(*res, r.at("resources"));
  c.version = r.opt_string("version").value_or("");
  if (const json* p = r.find("platform")) c.platform = platform_from_json(*p, r.at("platform"));
  return c;
}

RegisterRequest register_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  return {capabilities_from_json(r.object("capabilities"), r.at("capabilities"))};
}

RegisterResponse register_response_from_json(const json& j) {
  ObjectReader r(j, "$");
  RegisterResponse v;
  v.worker_id = r.non_empty_string("workerId");
  v.token = r.non_empty_string("token");
  v.heartbeat_interval_ms = r.int_value("heartbeatIntervalMs", 1, INT64_MAX);
  v.lease_ttl_ms = r.int_value("leaseTtlMs", 1, INT64_MAX);
  v.poll_timeout_ms = r.int_value("pollTimeoutMs", 0, INT64_MAX);
  return v;
}

HeartbeatRequest heartbeat_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  HeartbeatRequest v;
  if (const json* leases = r.opt_array("leases")) {
    for (std::size_t i = 0; i < leases->size(); ++i) {
      v.leases.push_back(lease_ref_from_json((*leases)[i], index_path(r.at("leases"), i)));
    }
  }
  v.draining = r.opt_bool("draining").value_or(false);
  v.unhealthy = r.opt_string("unhealthy");
  if (v.unhealthy && v.unhealthy->size() > kMaxUnhealthyReason) {
    throw WireError(r.at("unhealthy"),
                    "must be at most " + std::to_string(kMaxUnhealthyReason) + " bytes");
  }
  return v;
}

HeartbeatResponse heartbeat_response_from_json(const json& j) {
  ObjectReader r(j, "$");
  HeartbeatResponse v;
  const json& cancel = r.array("cancel");
  for (std::size_t i = 0; i < cancel.size(); ++i) {
    v.cancel.push_back(attempt_ref_from_json(cancel[i], index_path(r.at("cancel"), i)));
  }
  const json& lost = r.array("lostLeases");
  for (std::size_t i = 0; i < lost.size(); ++i) {
    v.lost_leases.push_back(attempt_ref_from_json(lost[i], index_path(r.at("lostLeases"), i)));
  }
  v.drain = r.boolean("drain");
  v.lease_ttl_ms = r.int_value("leaseTtlMs", 1, INT64_MAX);
  return v;
}

PollRequest poll_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  return {r.opt_int("waitMs", 0, INT64_MAX)};
}

namespace {

Assignment assignment_from(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  Assignment v;
  v.task = r.object("task");
  v.task_id = r.non_empty_string("taskId");
  v.attempt = static_cast<int>(r.int_value("attempt", 1, kMaxAttempt));
  v.lease_id = r.non_empty_string("leaseId");
  v.lease_ttl_ms = r.int_value("leaseTtlMs", 1, INT64_MAX);
  return v;
}

}  // namespace

Assignment assignment_from_json(const json& j) { return assignment_from(j, "$"); }

StartedRequest started_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  return {fence_from(r)};
}

ProgressRequest progress_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  ProgressRequest v;
  v.fence = fence_from(r);
  Progress p = progress_from(r);
  v.percent = p.percent;
  v.step = p.step;
  v.message = p.message;
  return v;
}

LogAppendRequest log_append_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  LogAppendRequest v;
  v.fence = fence_from(r);
  auto offset = r.opt_uint("offset");
  if (!offset) throw WireError(r.at("offset"), "is required");
  v.offset = *offset;
  v.data = r.string("data");
  return v;
}

LogAppendResponse log_append_response_from_json(const json& j) {
  ObjectReader r(j, "$");
  auto length = r.opt_uint("length");
  if (!length) throw WireError(r.at("length"), "is required");
  return {*length};
}

CompleteRequest complete_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  CompleteRequest v;
  v.fence = fence_from(r);
  v.result = r.object("result");
  ObjectReader result(v.result, r.at("result"));
  std::string status = result.non_empty_string("status");
  if (!is_result_status(status)) {
    throw WireError(result.at("status"),
                    "'" + status +
                        "' is not one of succeeded, failed, timeout, limit_exceeded, cancelled, "
                        "error");
  }
  read_report_tail(r, v);
  return v;
}

FailRequest fail_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  FailRequest v;
  v.fence = fence_from(r);
  v.error = failure_from_json(r.object("error"), r.at("error"));
  if (const json* result = r.find("result")) {
    if (!result->is_object()) throw WireError(r.at("result"), "expected an object");
    v.result = *result;
  }
  read_report_tail(r, v);
  return v;
}

ReportAnswer report_answer_from_json(const json& j) {
  ObjectReader r(j, "$");
  ReportAnswer v;
  const std::string state = r.non_empty_string("state");
  auto parsed = task_state_from_string(state);
  if (!parsed) throw WireError(r.at("state"), "'" + state + "' is not a task state");
  v.state = *parsed;
  if (const json* next = r.find("next")) v.next = assignment_from(*next, r.at("next"));
  return v;
}

SubmitRequest submit_request_from_json(const json& j) {
  ObjectReader r(j, "$");
  SubmitRequest v;
  v.task = r.object("task");
  v.priority = static_cast<int>(r.opt_int("priority", -1'000'000, 1'000'000).value_or(0));
  v.max_retries = static_cast<int>(r.opt_int("maxRetries", 0, 100).value_or(3));
  v.labels = labels_from_json(r, "labels");
  v.idempotency_key = r.opt_string("idempotencyKey");
  if (v.idempotency_key && (v.idempotency_key->empty() || v.idempotency_key->size() > 256)) {
    throw WireError(r.at("idempotencyKey"), "has 1 to 256 characters");
  }
  return v;
}

TaskView task_view_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  TaskView v;
  v.id = r.non_empty_string("id");
  v.type = r.string("type");
  std::string state = r.string("state");
  auto parsed = task_state_from_string(state);
  if (!parsed) throw WireError(r.at("state"), "unknown task state '" + state + "'");
  v.state = *parsed;
  v.attempt = static_cast<int>(r.int_value("attempt", 0, kMaxAttempt));
  v.max_retries = static_cast<int>(r.opt_int("maxRetries", 0, 100).value_or(3));
  v.priority = static_cast<int>(r.opt_int("priority", -1'000'000, 1'000'000).value_or(0));
  v.labels = labels_from_json(r, "labels");
  v.worker_id = r.opt_string("workerId");
  v.idempotency_key = r.opt_string("idempotencyKey");
  if (const json* p = r.find("progress"))
    v.progress = progress_from(ObjectReader(*p, r.at("progress")));
  if (const json* result = r.find("result")) v.result = *result;
  if (const json* e = r.find("error")) v.error = failure_from_json(*e, r.at("error"));
  v.retry_in_ms = r.opt_int("retryInMs", 0, INT64_MAX);
  v.log_length = r.opt_uint("logLength").value_or(0);
  v.log_missing_bytes = r.opt_uint("logMissingBytes").value_or(0);
  if (const json* a = r.opt_array("artifacts")) {
    for (std::size_t i = 0; i < a->size(); ++i) {
      v.artifacts.push_back(artifact_from_json((*a)[i], index_path(r.at("artifacts"), i)));
    }
  }
  v.created_at = r.string("createdAt");
  v.updated_at = r.string("updatedAt");
  v.started_at = r.opt_string("startedAt");
  v.finished_at = r.opt_string("finishedAt");
  v.task = r.object("task");
  return v;
}

TaskList task_list_from_json(const json& j) {
  ObjectReader r(j, "$");
  TaskList v;
  const json& tasks = r.array("tasks");
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    v.tasks.push_back(task_view_from_json(tasks[i], index_path(r.at("tasks"), i)));
  }
  return v;
}

WorkerView worker_view_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  WorkerView v;
  v.id = r.non_empty_string("id");
  std::string state = r.string("state");
  auto parsed = worker_state_from_string(state);
  if (!parsed) throw WireError(r.at("state"), "unknown worker state '" + state + "'");
  v.state = *parsed;
  v.capabilities = capabilities_from_json(r.object("capabilities"), r.at("capabilities"));
  if (const json* leases = r.opt_array("leases")) {
    for (std::size_t i = 0; i < leases->size(); ++i) {
      v.leases.push_back(lease_ref_from_json((*leases)[i], index_path(r.at("leases"), i)));
    }
  }
  v.registered_at = r.string("registeredAt");
  v.last_seen_at = r.string("lastSeenAt");
  v.last_seen_ago_ms = r.int_value("lastSeenAgoMs", 0, INT64_MAX);
  v.unhealthy = r.opt_string("unhealthy");
  return v;
}

WorkerList worker_list_from_json(const json& j) {
  ObjectReader r(j, "$");
  WorkerList v;
  const json& workers = r.array("workers");
  for (std::size_t i = 0; i < workers.size(); ++i) {
    v.workers.push_back(worker_view_from_json(workers[i], index_path(r.at("workers"), i)));
  }
  return v;
}

ErrorBody error_body_from_json(const json& j) {
  ObjectReader outer(j, "$");
  ObjectReader r(outer.object("error"), outer.at("error"));
  ErrorBody v;
  v.code = r.non_empty_string("code");
  v.message = r.string("message");
  v.field = r.opt_string("field");
  if (const json* problems = r.opt_array("problems")) {
    for (std::size_t i = 0; i < problems->size(); ++i) {
      ObjectReader p((*problems)[i], index_path(r.at("problems"), i));
      v.problems.push_back({p.string("path"), p.string("message")});
    }
  }
  v.state = r.opt_string("state");
  if (auto a = r.opt_int("attempt", 0, kMaxAttempt)) v.attempt = static_cast<int>(*a);
  v.length = r.opt_uint("length");
  return v;
}

AuditRecord audit_record_from_json(const json& j, const std::string& path) {
  ObjectReader r(j, path);
  AuditRecord v;
  v.seq = r.int_value("seq", 1, INT64_MAX);
  v.at = r.string("at");
  ObjectReader actor(r.object("actor"), r.at("actor"));
  std::string kind = actor.string("kind");
  auto parsed_kind = actor_kind_from_string(kind);
  if (!parsed_kind) throw WireError(actor.at("kind"), "unknown actor kind '" + kind + "'");
  v.actor.kind = *parsed_kind;
  v.actor.id = actor.opt_string("id");
  v.actor.address = actor.opt_string("address");
  std::string action = r.string("action");
  auto parsed_action = audit_action_from_string(action);
  if (!parsed_action) throw WireError(r.at("action"), "unknown action '" + action + "'");
  v.action = *parsed_action;
  v.task_id = r.opt_string("taskId");
  if (auto a = r.opt_int("attempt", 1, kMaxAttempt)) v.attempt = static_cast<int>(*a);
  v.worker_id = r.opt_string("workerId");
  v.detail = r.object("detail");
  return v;
}

AuditList audit_list_from_json(const json& j) {
  ObjectReader r(j, "$");
  AuditList v;
  const json& records = r.array("records");
  for (std::size_t i = 0; i < records.size(); ++i) {
    v.records.push_back(audit_record_from_json(records[i], index_path(r.at("records"), i)));
  }
  v.next = r.opt_int("next", 1, INT64_MAX);
  return v;
}

}  // namespace tamma::protocol::wire
