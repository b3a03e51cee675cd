// Worker lifecycle: register, heartbeat, poll (long-poll), unregister, drain.

#include <spdlog/spdlog.h>

#include "orchestrator/core.h"

namespace tamma::orchestrator {
namespace {

constexpr const char* kWorkers = "/api/v1/workers";

void register_worker(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_registration(request);
  Store::ActorScope as(core.store, Actor::registration(request.remote_address));
  auto body = wire::register_request_from_json(json_body(request));
  wire::RegisterResponse out;
  out.worker_id = "wrk_" + random_hex(10);
  out.token = random_token();
  out.heartbeat_interval_ms = core.config.heartbeat_interval.count();
  out.lease_ttl_ms = core.config.lease_ttl.count();
  out.poll_timeout_ms = core.config.poll_timeout.count();
  core.store.register_worker(out.worker_id, sha256_hex(out.token), body.capabilities);
  spdlog::info("worker {} registered ({} slots, types {})", out.worker_id, body.capabilities.slots,
               nlohmann::json(body.capabilities.task_types).dump());
  exchange->reply(Response::json(201, wire::to_json(out)));
}

void unregister_worker(Core& core, Request& request, const ExchangePtr& exchange) {
  const std::string& id = request.params.at(0);
  core.require_admin_or_worker_self(request, id);
  // The HTTP layer names the worker a token belongs to; the admin's token names none.
  const std::string caller = request.authenticated_worker.empty()
                                 ? core.authenticate(Access::kAdminOrWorker, request.authorization)
                                 : request.authenticated_worker;
  Store::ActorScope as(core.store, caller.empty() ? Actor::admin(request.remote_address)
                                                  : Actor::worker(caller, request.remote_address));
  if (!core.store.worker(id)) throw HttpError(404, "worker_not_found", "no worker " + id);
  auto requeued = core.store.unregister_worker(id);
  core.forget_worker(id);
  spdlog::info("worker {} unregistered; {} task(s) put back", id, requeued.size());
  core.after_requeue(requeued);
  exchange->reply(Response::no_content());
}

void heartbeat(Core& core, Request& request, const ExchangePtr& exchange) {
  const std::string& id = request.params.at(0);
  core.require_worker_self(request, id);
  Store::ActorScope as(core.store, Actor::worker(id, request.remote_address));
  auto body = wire::heartbeat_request_from_json(json_body(request));
  auto outcome = core.store.heartbeat(id, body, core.config.lease_ttl);
  if (!outcome.known) throw HttpError(401, "invalid_token", "worker " + id + " is unregistered");
  if (!outcome.response.lost_leases.empty()) {
    spdlog::info("worker {} reported {} lease(s) it no longer holds", id,
                 outcome.response.lost_leases.size());
  }
  exchange->reply(Response::json(200, wire::to_json(outcome.response)));
}

std::chrono::milliseconds poll_wait(const Core& core, const Request& request) {
  std::optional<std::int64_t> wait;
  if (auto it = request.query.find("waitMs"); it != request.query.end()) {
    try {
      std::size_t used = 0;
      wait = std::stoll(it->second, &used);
      if (used != it->second.size() || *wait < 0) throw std::invalid_argument("negative");
    } catch (const std::exception&) {
      throw wire::WireError("waitMs", "expected a non-negative integer of milliseconds");
    }
  } else if (!request.body.empty()) {
    wait = wire::poll_request_from_json(json_body(request)).wait_ms;
  }
  auto limit = core.config.poll_timeout;
  if (!wait) return limit;
  return std::min(std::chrono::milliseconds(*wait), limit);
}

void poll(Core& core, Request& request, const ExchangePtr& exchange) {
  const std::string& id = request.params.at(0);
  core.require_worker_self(request, id);
  // A claim made now is this worker's doing; one made later for its parked poll is the doing
  // of whoever made the task available then.
  Store::ActorScope as(core.store, Actor::worker(id, request.remote_address));
  auto wait = poll_wait(core, request);
  auto worker = core.store.worker(id);
  if (!worker || worker->gone) throw HttpError(401, "invalid_token", "worker " + id + " is gone");
  if (worker->draining || worker->drain_requested || core.shutting_down) {
    exchange->reply(Response::no_content());
    return;
  }
  if (worker->leased >= worker->capabilities.slots) {
    throw HttpError(409, "no_free_slot",
                    "worker " + id + " already holds " + std::to_string(worker->leased) +
                        " lease(s) for its " + std::to_string(worker->capabilities.slots) +
                        " slot(s); finish or heartbeat them first");
  }
  // The wait counts from when the request arrived: after a stall of this process its client
  // may have given up already, and a task handed to it would sit unacknowledged.
  const auto deadline = request.received_at + wait;
  // A request read only now may have waited unread in the listen queue while this process
  // stood still: if its client has hung up meanwhile, no task goes to it.
  const bool expired =
      (wait.count() > 0 && std::chrono::steady_clock::now() >= deadline) || exchange->client_gone();
  if (expired) {
    exchange->reply(Response::no_content());
    return;
  }
  if (auto claim = core.store.claim(*worker, random_hex(16), core.config.lease_ttl)) {
    core.deliver(PollWaiters::Waiter{0, *worker, exchange, nullptr}, *claim);
    return;
  }
  if (wait.count() == 0) {
    exchange->reply(Response::no_content());
    return;
  }
  auto waiter = core.polls.add(*worker, exchange, deadline, [&core](std::uint64_t waiter_id) {
    if (auto w = core.polls.take(waiter_id)) {
      w->exchange->reply(Response::no_content());
      core.update_gauges();
    }
  });
  exchange->watch_disconnect([&core, waiter] {
    core.polls.take(waiter);
    core.update_gauges();
  });
  core.update_gauges();
}

void drain(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  Store::ActorScope as(core.store, Actor::admin(request.remote_address));
  const std::string& id = request.params.at(0);
  if (!core.store.request_drain(id)) throw HttpError(404, "worker_not_found", "no worker " + id);
  spdlog::info("worker {} asked to drain", id);
  exchange->reply(Response::json(202, {{"workerId", id}, {"drain", true}}));
}

void list_workers(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  bool all = request.query.count("all") > 0 && request.query.at("all") != "0";
  wire::WorkerList list;
  list.workers = core.store.list_workers(
      core.config.heartbeat_interval * core.config.offline_after_heartbeats, all);
  exchange->reply(Response::json(200, wire::to_json(list)));
}

}  // namespace

void add_worker_routes(Router& router, Core& core) {
  using V = http::verb;
  auto bind = [&core](void (*fn)(Core&, Request&, const ExchangePtr&)) {
    return [&core, fn](Request& r, const ExchangePtr& e) { fn(core, r, e); };
  };
  std::string base = kWorkers;
  router.add(V::post, base + "/register", BodyKind::kSmall, Access::kRegistration,
             bind(register_worker));
  router.add(V::get, base, BodyKind::kSmall, Access::kAdmin, bind(list_workers));
  router.add(V::delete_, base + "/{id}", BodyKind::kSmall, Access::kAdminOrWorker,
             bind(unregister_worker));
  router.add(V::post, base + "/{id}/heartbeat", BodyKind::kSmall, Access::kWorker, bind(heartbeat));
  router.add(V::post, base + "/{id}/poll", BodyKind::kSmall, Access::kWorker, bind(poll));
  router.add(V::post, base + "/{id}/drain", BodyKind::kSmall, Access::kAdmin, bind(drain));
}

}  // namespace tamma::orchestrator
