// Liveness, readiness and Prometheus metrics.

#include <spdlog/spdlog.h>

#include "orchestrator/core.h"

namespace tamma::orchestrator {
namespace {

// Liveness answers without a token and without touching the database: a slow disk must not get
// the process restarted.
void health(Core&, Request&, const ExchangePtr& exchange) {
  exchange->reply(Response::json(200, {{"status", "ok"}}));
}

void ready(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  if (core.shutting_down) {
    exchange->reply(Response::json(503, {{"status", "shutting_down"}}));
    return;
  }
  try {
    core.store.ping();
  } catch (const Error& e) {
    spdlog::warn("readiness: database unreachable: {}", e.what());
    exchange->reply(
        Response::json(503, {{"status", "database_unreachable"}, {"message", e.what()}}));
    return;
  }
  exchange->reply(Response::json(200, {{"status", "ready"}}));
}

void metrics(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  std::map<std::string, std::int64_t> workers;
  for (const auto& w : core.store.list_workers(
           core.config.heartbeat_interval * core.config.offline_after_heartbeats, false)) {
    ++workers[std::string(wire::to_string(w.state))];
  }
  core.update_gauges();
  Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = core.metrics.render(core.store.count_tasks(), workers);
  exchange->reply(std::move(r));
}

}  // namespace

void add_health_routes(Router& router, Core& core) {
  using V = http::verb;
  auto bind = [&core](void (*fn)(Core&, Request&, const ExchangePtr&)) {
    return [&core, fn](Request& r, const ExchangePtr& e) { fn(core, r, e); };
  };
  router.add(V::get, "/health", BodyKind::kSmall, Access::kPublic, bind(health));
  router.add(V::get, "/ready", BodyKind::kSmall, Access::kAdmin, bind(ready));
  router.add(V::get, "/metrics", BodyKind::kSmall, Access::kAdmin, bind(metrics));
}

}  // namespace tamma::orchestrator
