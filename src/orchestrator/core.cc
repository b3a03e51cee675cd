#include "orchestrator/core.h"

#include <spdlog/spdlog.h>

namespace tamma::orchestrator {

Core::Core(const ServerConfig& config_in, Store& store_in, Metrics& metrics_in, SharedTokens tokens,
           asio::io_context& core_io)
    : config(config_in),
      store(store_in),
      metrics(metrics_in),
      io(core_io),
      polls(core_io),
      log_followers(core_io),
      tokens_(std::move(tokens)) {}

namespace {

std::string presented_token(const Request& request) {
  if (request.authorization.empty()) {
    throw HttpError(401, "missing_token", "an Authorization: Bearer <token> header is required");
  }
  auto token = bearer_token(request.authorization);
  if (!token) {
    throw HttpError(401, "invalid_token", "the Authorization header is not 'Bearer <token>'");
  }
  return *token;
}

constexpr auto kWorkerTokenCacheFor = std::chrono::seconds(5);
constexpr std::size_t kWorkerTokenCacheSize = 10000;

}  // namespace

std::string Core::authenticate(Access access, const std::string& authorization) const {
  Request request;
  request.authorization = authorization;
  switch (access) {
    case Access::kPublic:
      return {};
    case Access::kAdmin:
      require_admin(request);
      return {};
    case Access::kRegistration:
      require_registration(request);
      return {};
    case Access::kWorker:
      return require_worker(request);
    case Access::kAdminOrWorker: {
      if (constant_time_equal(sha256_hex(presented_token(request)), tokens_.admin_hash)) return {};
      return require_worker(request);
    }
  }
  return {};
}

void Core::require_admin(const Request& request) const {
  if (!constant_time_equal(sha256_hex(presented_token(request)), tokens_.admin_hash)) {
    throw HttpError(401, "invalid_token", "this endpoint needs the admin token");
  }
}

void Core::require_registration(const Request& request) const {
  if (!constant_time_equal(sha256_hex(presented_token(request)), tokens_.registration_hash)) {
    throw HttpError(401, "invalid_token", "registration needs the registration token");
  }
}

std::string Core::require_worker(const Request& request) const {
  if (!request.authenticated_worker.empty()) return request.authenticated_worker;
  // The lookup is by hash, so its timing says nothing about the token itself.
  const std::string hash = sha256_hex(presented_token(request));
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(worker_tokens_mutex_);
    if (auto it = worker_tokens_.find(hash); it != worker_tokens_.end()) {
      if (now < it->second.until) return it->second.id;
      worker_tokens_.erase(it);
    }
  }
  auto worker = store.worker_by_token_hash(hash);
  if (!worker) throw HttpError(401, "invalid_token", "unknown or revoked worker token");
  std::lock_guard lock(worker_tokens_mutex_);
  // Bounded: tokens of workers long gone must not pile up.
  if (worker_tokens_.size() >= kWorkerTokenCacheSize) worker_tokens_.clear();
  worker_tokens_[hash] = {*worker, now + kWorkerTokenCacheFor};
  return *worker;
}

std::optional<std::string> Core::recently_authenticated(Access access,
                                                        const std::string& authorization) const {
  if (access != Access::kWorker && access != Access::kAdminOrWorker) return std::nullopt;
  Request request;
  request.authorization = authorization;
  std::string hash;
  try {
    hash = sha256_hex(presented_token(request));
  } catch (const std::exception&) {
    // A malformed header: the core's check answers it (401) as it always did. Thrown here,
    // on an I/O thread, it would end the orchestrator (found by the http_request fuzzer).
    return std::nullopt;
  }
  if (access == Access::kAdminOrWorker && constant_time_equal(hash, tokens_.admin_hash)) {
    return std::string();
  }
  std::lock_guard lock(worker_tokens_mutex_);
  auto it = worker_tokens_.find(hash);
  if (it == worker_tokens_.end() || std::chrono::steady_clock::now() >= it->second.until) {
    return std::nullopt;
  }
  return it->second.id;
}

void Core::forget_worker(const std::string& worker_id) {
  std::lock_guard lock(worker_tokens_mutex_);
  std::erase_if(worker_tokens_, [&](const auto& entry) { return entry.second.id == worker_id; });
}

void Core::require_worker_self(const Request& request, const std::string& worker_id) const {
  std::string caller = require_worker(request);
  if (!constant_time_equal(caller, worker_id)) {
    throw HttpError(403, "forbidden", "a worker token reaches only its own worker's endpoints");
  }
}

void Core::require_admin_or_worker_self(const Request& request,
                                        const std::string& worker_id) const {
  std::string hash = sha256_hex(presented_token(request));
  if (constant_time_equal(hash, tokens_.admin_hash)) return;
  require_worker_self(request, worker_id);
}

void Core::check_fence(const FenceOutcome& outcome, const std::string& task_id) {
  switch (outcome.status) {
    case FenceStatus::kOk:
      return;
    case FenceStatus::kNotFound:
      throw HttpError(404, "task_not_found", "no task " + task_id);
    case FenceStatus::kForbidden:
      throw HttpError(403, "not_your_task",
                      "task " + task_id + " was not leased to this worker with that attempt");
    case FenceStatus::kLeaseLost: {
      wire::ErrorBody body;
      body.code = "lease_lost";
      body.message = "task " + task_id + " is no longer running this attempt under this lease (" +
                     std::string(wire::to_string(outcome.state)) + ", attempt " +
                     std::to_string(outcome.attempt) + "); stop working on it";
      body.state = std::string(wire::to_string(outcome.state));
      body.attempt = outcome.attempt;
      HttpError refusal(409, std::move(body));
      // As on every fenced answer (protocol.md): the worker reads the state from the header.
      refusal.headers.emplace_back("X-Tamma-Task-State",
                                   std::string(wire::to_string(outcome.state)));
      throw refusal;
    }
  }
}

void Core::deliver(PollWaiters::Waiter waiter, const Claim& claim) {
  send_assignment(waiter.exchange, Response::json(200, wire::to_json(claim.assignment)), claim);
}

void Core::send_assignment(const ExchangePtr& exchange, Response response, const Claim& claim) {
  metrics.task_assigned();
  metrics.pickup_latency(static_cast<double>(claim.pickup_latency_ms) / 1000.0);
  update_gauges();
  exchange->reply(std::move(response), [this, assignment = claim.assignment](bool written) {
    if (written) return;
    // The worker never got it: give it back now rather than after a lease TTL.
    spdlog::warn("task {} attempt {} could not be delivered; releasing it", assignment.task_id,
                 assignment.attempt);
    if (store.release(assignment.task_id, assignment.attempt, assignment.lease_id)) {
      offer(assignment.task_id);
    }
  });
}

void Core::offer(const std::string& task_id, bool announce, const Store::Queued* known) {
  if (shutting_down) return;
  if (polls.size() == 0) {
    // No poll parked here to offer it to: the others may have one.
    if (announce) store.announce_queued(task_id, known);
    return;
  }
  std::optional<Store::Queued> read;
  if (known == nullptr) {
    read = store.queued_task(task_id);
    if (!read) return;
  }
  const Store::Queued* task = known != nullptr ? known : &*read;
  std::set<std::uint64_t> tried;
  int refused = 0;
  while (const auto* candidate = polls.find_match(task->type, task->labels, tried)) {
    tried.insert(candidate->id);
    auto claim = store.claim(candidate->worker, random_hex(16), config.lease_ttl);
    if (!claim) {
      // Its slots filled up since it parked, or the task is kept from its worker, or another
      // orchestrator took the task: after a few refusals, look before asking the rest.
      if (++refused % 3 == 0) {
        auto now = store.task(task_id);
        if (!now || now->state != wire::TaskState::kQueued) return;
      }
      continue;
    }
    bool got_offered = claim->assignment.task_id == task_id;
    auto waiter = polls.take(candidate->id);
    deliver(std::move(*waiter), *claim);
    // A higher-priority task may have gone instead; the offered one still waits for a taker.
    if (got_offered) return;
  }
  if (announce) store.announce_queued(task_id, task);
}

void Core::offer_announced(const std::vector<Store::Announced>& tasks) {
  if (shutting_down || polls.size() == 0) return;
  if (tasks.empty()) {
    constexpr int kLookAtMost = 32;
    for (const auto& id : store.queued_task_ids(kLookAtMost)) {
      if (polls.size() == 0) return;
      offer(id, /*announce=*/false);
    }
    return;
  }
  for (const auto& announced : tasks) {
    if (polls.size() == 0) return;
    offer(announced.task_id, /*announce=*/false, announced.queued ? &*announced.queued : nullptr);
  }
}

void Core::after_requeue(const std::vector<Requeued>& requeued) {
  for (const auto& r : requeued) {
    log_followers.notify(r.task_id);
    if (r.state == wire::TaskState::kQueued) offer(r.task_id);
  }
  if (poke_reaper) poke_reaper();
  update_gauges();
}

void Core::drain_waiters() {
  for (auto& w : polls.take_all()) w.exchange->reply(Response::no_content());
  log_followers.wake_all();
  update_gauges();
}

void Core::update_gauges() {
  metrics.waiting_polls(static_cast<std::int64_t>(polls.size()));
  metrics.log_followers(static_cast<std::int64_t>(log_followers.size()));
}

nlohmann::json json_body(const Request& request) { return wire::parse_body(request.body); }

Response error_response(const std::exception& e) {
  if (const auto* h = dynamic_cast<const HttpError*>(&e)) {
    Response r = Response::error(h->status(), h->body());
    for (const auto& header : h->headers) r.headers.push_back(header);
    return r;
  }
  if (const auto* w = dynamic_cast<const wire::WireError*>(&e)) {
    wire::ErrorBody body;
    body.code = "invalid_field";
    body.message = w->what();
    body.field = w->field();
    return Response::error(400, body);
  }
  wire::ErrorBody body;
  if (const auto* t = dynamic_cast<const Error*>(&e)) {
    spdlog::error("request failed: {} ({})", t->what(), t->code());
    body.code = t->code();
    body.message = t->what();
    // A locked database is worth retrying (503); anything else is a fault here (500).
    return Response::error(t->retryable() ? 503 : 500, body);
  }
  spdlog::error("request failed: {}", e.what());
  body.code = "internal_error";
  body.message = e.what();
  return Response::error(500, body);
}

}  // namespace tamma::orchestrator
