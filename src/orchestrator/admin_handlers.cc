// The admin's side of tasks: submit, list, show, cancel, read (and follow) logs, download
// artifacts. Every route needs the admin token.

#include <spdlog/spdlog.h>

#include "orchestrator/core.h"
#include "protocol/task_spec.h"

namespace tamma::orchestrator {
namespace {

constexpr const char* kTasks = "/api/v1/tasks";
constexpr std::uint64_t kLogReadLimit = 1ULL << 20;

// Admin views never show secret values: the worker needs them, people reading task lists don't.
wire::TaskView masked(wire::TaskView view) {
  if (auto it = view.task.find("secrets"); it != view.task.end() && it->is_object()) {
    for (auto& [name, value] : it->items()) value = "[MASKED]";
  }
  return view;
}

void submit(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  // Covers the claims this submit makes for parked polls too: the admin's request caused them.
  Store::ActorScope as(core.store, Actor::admin(request.remote_address));
  nlohmann::json document = json_body(request);
  auto body = wire::submit_request_from_json(document);
  if (!request.idempotency_key.empty()) {
    if (body.idempotency_key && *body.idempotency_key != request.idempotency_key) {
      throw wire::WireError("$.idempotencyKey", "differs from the Idempotency-Key header");
    }
    if (request.idempotency_key.size() > 256) {
      throw wire::WireError("Idempotency-Key", "has at most 256 characters");
    }
    body.idempotency_key = request.idempotency_key;
  }

  NewTask task;
  task.id = "tsk_" + random_hex(10);
  task.spec = body.task;
  // The orchestrator names tasks; a spec's own id would not be unique across submissions.
  task.spec["id"] = task.id;
  auto parsed = protocol::parse_task_spec(task.spec);
  if (!parsed.problems.empty()) {
    wire::ErrorBody error;
    error.code = "invalid_task_spec";
    error.message = "the task spec has " + std::to_string(parsed.problems.size()) + " problem(s)";
    for (const auto& p : parsed.problems) {
      // parse_task_spec paths are relative to the spec, which sits at $.task here.
      error.problems.push_back({"$.task" + p.path.substr(1), p.message});
    }
    error.field = error.problems.front().path;
    throw HttpError(400, std::move(error));
  }
  task.type = parsed.spec->type;
  task.priority = body.priority;
  task.max_retries = body.max_retries;
  task.labels = body.labels;
  task.idempotency_key = body.idempotency_key;
  nlohmann::json fingerprint = wire::to_json(body);
  fingerprint.erase("idempotencyKey");
  task.request_hash = sha256_hex(fingerprint.dump());

  // A parked poll that can run this task gets it in the submit's own transaction.
  const PollWaiters::Waiter* candidate =
      core.shutting_down ? nullptr : core.polls.find_match(task.type, task.labels, {});
  std::string lease_id = random_hex(16);
  auto outcome = core.store.submit(task, candidate ? &candidate->worker : nullptr, lease_id,
                                   core.config.lease_ttl);
  if (outcome.key_reused) {
    wire::ErrorBody error;
    error.code = "idempotency_key_reused";
    error.message = "idempotency key '" + *body.idempotency_key + "' was used for task " +
                    outcome.task.id + " with a different request";
    throw HttpError(422, std::move(error));
  }
  if (outcome.created) {
    core.metrics.task_submitted();
    spdlog::info("task {} ({}) submitted, priority {}", outcome.task.id, outcome.task.type,
                 outcome.task.priority);
  }
  Response response =
      Response::json(outcome.created ? 201 : 200, wire::to_json(masked(outcome.task)));
  response.headers.emplace_back("Location", std::string(kTasks) + "/" + outcome.task.id);
  exchange->reply(std::move(response));
  bool handed_over = false;
  if (outcome.claim) {
    handed_over = outcome.claim->assignment.task_id == outcome.task.id;
    core.deliver(std::move(*core.polls.take(candidate->id)), *outcome.claim);
  }
  // Not handed over (no parked taker, or it got a higher-priority task): offer it around.
  if (outcome.created && !handed_over) {
    const Store::Queued queued{outcome.task.type, outcome.task.labels};
    core.offer(outcome.task.id, /*announce=*/true, &queued);
  }
}

void list_tasks(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  std::optional<wire::TaskState> state;
  if (auto it = request.query.find("state"); it != request.query.end() && !it->second.empty()) {
    state = wire::task_state_from_string(it->second);
    if (!state) throw wire::WireError("state", "unknown task state '" + it->second + "'");
  }
  int limit = 100;
  if (auto it = request.query.find("limit"); it != request.query.end()) {
    try {
      std::size_t used = 0;
      limit = std::stoi(it->second, &used);
      if (used != it->second.size() || limit < 1 || limit > 1000) throw std::out_of_range("limit");
    } catch (const std::exception&) {
      throw wire::WireError("limit", "expected an integer from 1 to 1000");
    }
  }
  wire::TaskList list;
  for (auto& t : core.store.list_tasks(state, limit)) list.tasks.push_back(masked(std::move(t)));
  exchange->reply(Response::json(200, wire::to_json(list)));
}

wire::TaskView existing_task(Core& core, const std::string& id) {
  auto task = core.store.task(id);
  if (!task) throw HttpError(404, "task_not_found", "no task " + id);
  return *task;
}

void get_task(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  exchange->reply(
      Response::json(200, wire::to_json(masked(existing_task(core, request.params.at(0))))));
}

void cancel(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  Store::ActorScope as(core.store, Actor::admin(request.remote_address));
  const std::string& id = request.params.at(0);
  auto task = core.store.cancel(id);
  if (!task) throw HttpError(404, "task_not_found", "no task " + id);
  if (task->state == wire::TaskState::kCancelRequested) {
    spdlog::info("task {} cancel requested; worker {} is told at its next heartbeat", id,
                 task->worker_id.value_or("?"));
    exchange->reply(Response::json(202, wire::to_json(masked(*task))));
    return;
  }
  if (task->state != wire::TaskState::kCancelled) {
    wire::ErrorBody error;
    error.code = "task_final";
    error.message = "task " + id + " already ended " + std::string(wire::to_string(task->state));
    error.state = std::string(wire::to_string(task->state));
    error.attempt = task->attempt;
    throw HttpError(409, std::move(error));
  }
  spdlog::info("task {} cancelled", id);
  core.log_followers.notify(id);
  exchange->reply(Response::json(200, wire::to_json(masked(*task))));
}

Response log_response(const LogRead& log) {
  Response r;
  r.status = 200;
  r.content_type = "application/octet-stream";
  r.body = log.data;
  r.headers.emplace_back("X-Tamma-Log-Length", std::to_string(log.length));
  r.headers.emplace_back("X-Tamma-Log-Attempt", std::to_string(log.attempt));
  // "false": nothing more will be appended to this attempt, a follower can stop.
  r.headers.emplace_back("X-Tamma-Log-Open", log.open ? "true" : "false");
  return r;
}

std::uint64_t query_number(const Request& request, const char* name, std::uint64_t fallback) {
  auto it = request.query.find(name);
  if (it == request.query.end()) return fallback;
  try {
    std::size_t used = 0;
    auto value = std::stoull(it->second, &used);
    if (used != it->second.size() || it->second.front() == '-') throw std::invalid_argument(name);
    return value;
  } catch (const std::exception&) {
    throw wire::WireError(name, "expected a non-negative integer, got '" + it->second + "'");
  }
}

void read_logs(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  std::string id = request.params.at(0);
  std::uint64_t offset = query_number(request, "offset", 0);
  std::optional<int> attempt;
  if (request.query.count("attempt"))
    attempt = static_cast<int>(query_number(request, "attempt", 0));
  bool follow = request.query.count("wait") && request.query.at("wait") != "0";
  auto log = core.store.read_log(id, attempt, offset, kLogReadLimit);
  if (!log) throw HttpError(404, "task_not_found", "no task " + id);
  if (!follow || !log->data.empty() || !log->open || core.shutting_down) {
    exchange->reply(log_response(*log));
    return;
  }
  // Nothing new yet on a running attempt: hold the read until output arrives, the task ends or
  // the poll timeout passes, then answer with whatever is there.
  int held_attempt = log->attempt;
  auto follower = core.log_followers.add(
      id, core.config.poll_timeout, [&core, id, held_attempt, offset, exchange] {
        try {
          auto now = core.store.read_log(id, held_attempt, offset, kLogReadLimit);
          exchange->reply(log_response(*now));
        } catch (const std::exception& e) {
          exchange->reply(error_response(e));
        }
        core.update_gauges();
      });
  exchange->watch_disconnect([&core, follower] {
    core.log_followers.cancel(follower);
    core.update_gauges();
  });
  core.update_gauges();
}

void download_artifact(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  const std::string& id = request.params.at(0);
  const std::string& name = request.params.at(1);
  auto task = existing_task(core, id);
  int attempt = static_cast<int>(query_number(request, "attempt", 0));
  if (attempt == 0) {
    // The newest attempt that uploaded this name.
    for (const auto& a : task.artifacts) {
      if (a.name == name) attempt = std::max(attempt, a.attempt);
    }
  }
  // Throws artifact_damaged (500) when the stored bytes are known not to match the record.
  auto bytes = core.store.open_artifact(id, attempt, name);
  if (!bytes) {
    throw HttpError(404, "artifact_not_found", "task " + id + " has no artifact " + name);
  }
  Response r;
  r.content_type = "application/octet-stream";
  // The digest header lets a client check every byte.
  r.headers.emplace_back("X-Checksum-Sha256", bytes->info.sha256);
  if (bytes->file) {
    r.file = *bytes->file;
  } else {
    // Kept in PostgreSQL: read chunk by chunk on the store's reader thread, never here on the
    // core thread, and never whole in memory (docs/adr/0027).
    r.stream = [stream = bytes->stream](Response::PieceDone done) {
      stream->next(std::move(done));
    };
    r.stream_length = bytes->info.size;
  }
  exchange->reply(std::move(r));
}

}  // namespace

void add_admin_routes(Router& router, Core& core) {
  using V = http::verb;
  auto bind = [&core](void (*fn)(Core&, Request&, const ExchangePtr&)) {
    return [&core, fn](Request& r, const ExchangePtr& e) { fn(core, r, e); };
  };
  std::string base = kTasks;
  router.add(V::post, base, BodyKind::kSmall, Access::kAdmin, bind(submit));
  router.add(V::get, base, BodyKind::kSmall, Access::kAdmin, bind(list_tasks));
  router.add(V::get, base + "/{id}", BodyKind::kSmall, Access::kAdmin, bind(get_task));
  router.add(V::post, base + "/{id}/cancel", BodyKind::kSmall, Access::kAdmin, bind(cancel));
  router.add(V::get, base + "/{id}/logs", BodyKind::kSmall, Access::kAdmin, bind(read_logs));
  router.add(V::get, base + "/{id}/artifacts/{name}", BodyKind::kSmall, Access::kAdmin,
             bind(download_artifact));
}

}  // namespace tamma::orchestrator
