#pragma once
// What both stores write into and read back from their audit table the same way
// (docs/adr/0026-audit-trail.md). The table's columns, in this order: seq, at, actor_kind,
// actor_id, address, action, task_id, attempt, worker_id, detail. A Row is anything with
// text(c), opt_text(c), int64(c) and opt_int64(c) by column index.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "orchestrator/store/task_row.h"
#include "protocol/wire.h"

namespace tamma::orchestrator {

// One operation as the audit trail keeps it, besides who did it and when (the store adds
// those). Never a token, a lease id, a spec, a log or a message: `detail` holds only the plain
// facts docs/openapi.yaml lists under AuditDetail.
struct AuditEntry {
  wire::AuditAction action = wire::AuditAction::kSubmit;
  std::string task_id;    // empty: not about one task
  int attempt = 0;        // 0: no attempt (a task never handed out)
  std::string worker_id;  // the worker the operation concerns; empty: none
  nlohmann::json detail = nlohmann::json::object();
};

// The SELECT list audit_record() reads.
#define TAMMA_AUDIT_COLUMNS \
  "seq, at, actor_kind, actor_id, address, action, task_id, attempt, worker_id, detail"

template <class Row>
wire::AuditRecord audit_record(const Row& s) {
  wire::AuditRecord r;
  r.seq = s.int64(0);
  r.at = rfc3339(s.int64(1));
  const std::string kind = s.text(2);
  const std::string action = s.text(5);
  auto parsed_kind = wire::actor_kind_from_string(kind);
  auto parsed_action = wire::audit_action_from_string(action);
  if (!parsed_kind || !parsed_action) {
    throw Error(ErrorKind::kInfrastructure, "database_corrupt",
                "the audit trail holds an unknown actor '" + kind + "' or action '" + action + "'");
  }
  r.actor.kind = *parsed_kind;
  r.actor.id = s.opt_text(3);
  r.actor.address = s.opt_text(4);
  r.action = *parsed_action;
  r.task_id = s.opt_text(6);
  if (auto attempt = s.opt_int64(7)) r.attempt = static_cast<int>(*attempt);
  r.worker_id = s.opt_text(8);
  r.detail = nlohmann::json::parse(s.text(9));
  return r;
}

// The detail of most records: the state the task went to.
inline nlohmann::json state_detail(wire::TaskState state) {
  return {{"state", wire::to_string(state)}};
}

// A failure's code and whether it may be retried, never its message: that is the worker's free
// text. The code is the worker's too, so it is kept short, cut where no UTF-8 character is split.
inline nlohmann::json fail_detail(wire::TaskState state, const wire::TaskFailure& error) {
  constexpr std::size_t kMaxCode = 128;
  std::size_t end = std::min(error.code.size(), kMaxCode);
  while (end < error.code.size() && end > 0 &&
         (static_cast<unsigned char>(error.code[end]) & 0xC0) == 0x80) {
    --end;
  }
  return {{"state", wire::to_string(state)},
          {"code", error.code.substr(0, end)},
          {"retryable", error.retryable}};
}

// A cancel that changed the task, as its view after it shows.
inline AuditEntry cancel_entry(const wire::TaskView& view) {
  AuditEntry entry{wire::AuditAction::kCancel, view.id, view.attempt, {}, state_detail(view.state)};
  // The worker that is told to stop, while one runs the task.
  if (view.state == wire::TaskState::kCancelRequested && view.worker_id) {
    entry.worker_id = *view.worker_id;
  }
  return entry;
}

// The entries whose detail is more than a state, made here once so both stores record the
// same facts.
inline AuditEntry register_entry(const std::string& worker_id,
                                 const wire::Capabilities& capabilities) {
  return {wire::AuditAction::kRegister,
          {},
          0,
          worker_id,
          {{"slots", capabilities.slots}, {"taskTypes", capabilities.task_types}}};
}

inline AuditEntry submit_entry(const std::string& task_id, const std::string& type, int priority,
                               int max_retries) {
  return {
      wire::AuditAction::kSubmit,
      task_id,
      0,
      {},
      {{"state", "queued"}, {"type", type}, {"priority", priority}, {"maxRetries", max_retries}}};
}

inline AuditEntry complete_entry(const std::string& task_id, int attempt,
                                 const std::string& worker_id, wire::TaskState state,
                                 const std::string& status) {
  return {wire::AuditAction::kComplete,
          task_id,
          attempt,
          worker_id,
          {{"state", wire::to_string(state)}, {"status", status}}};
}

inline AuditEntry artifact_entry(const std::string& task_id, int attempt,
                                 const std::string& worker_id, const wire::ArtifactInfo& info) {
  return {wire::AuditAction::kArtifact,
          task_id,
          attempt,
          worker_id,
          {{"name", info.name}, {"size", info.size}, {"sha256", info.sha256}}};
}

// Empty strings are stored as NULL: "none", not "the empty one".
inline std::optional<std::string> audit_text(const std::string& text) {
  if (text.empty()) return std::nullopt;
  return text;
}

}  // namespace tamma::orchestrator
