#pragma once
// What both stores read back the same way: a task row as the wire's TaskView, times as
// RFC 3339, states and labels from their stored text. A Row is anything with text(c),
// opt_text(c), integer(c), int64(c) and opt_int64(c) by column index.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "protocol/wire.h"

namespace tamma::orchestrator {

namespace wire = tamma::protocol::wire;

// Milliseconds since the epoch as 2026-01-02T03:04:05.678Z.
std::string rfc3339(std::int64_t ms);
// Throws Error("database_corrupt") for a state this orchestrator does not know.
wire::TaskState state_of(const std::string& text);
std::map<std::string, std::string> labels_of(const std::string& text);
nlohmann::json labels_json(const std::map<std::string, std::string>& labels);
// A report's progress as the progress column holds it; nullopt (NULL) keeps the task's own.
std::optional<std::string> progress_text(const std::optional<wire::Progress>& progress);

// The columns, in this order: id, type, state, attempt, max_retries, priority, labels,
// worker_id, idempotency_key, progress, result, error, retry_in_ms, log_length, created_at,
// updated_at, started_at, finished_at, spec, log_missing_bytes.
template <class Row>
wire::TaskView task_view(const Row& s) {
  using nlohmann::json;
  wire::TaskView v;
  v.id = s.text(0);
  v.type = s.text(1);
  v.state = state_of(s.text(2));
  v.attempt = s.integer(3);
  v.max_retries = s.integer(4);
  v.priority = s.integer(5);
  v.labels = labels_of(s.text(6));
  v.worker_id = s.opt_text(7);
  v.idempotency_key = s.opt_text(8);
  if (auto p = s.opt_text(9)) {
    json progress = json::parse(*p);
    if (progress.contains("percent")) v.progress.percent = progress["percent"].get<double>();
    if (progress.contains("step")) v.progress.step = progress["step"].get<std::string>();
    if (progress.contains("message")) v.progress.message = progress["message"].get<std::string>();
  }
  if (auto r = s.opt_text(10)) v.result = json::parse(*r);
  if (auto e = s.opt_text(11)) {
    json error = json::parse(*e);
    v.error = wire::TaskFailure{error.value("code", ""), error.value("message", ""),
                                error.value("retryable", false)};
  }
  v.retry_in_ms = s.opt_int64(12);
  v.log_length = static_cast<std::uint64_t>(s.int64(13));
  v.created_at = rfc3339(s.int64(14));
  v.updated_at = rfc3339(s.int64(15));
  if (auto t = s.opt_int64(16)) v.started_at = rfc3339(*t);
  if (auto t = s.opt_int64(17)) v.finished_at = rfc3339(*t);
  v.task = json::parse(s.text(18));
  v.log_missing_bytes = static_cast<std::uint64_t>(s.int64(19));
  return v;
}

}  // namespace tamma::orchestrator
