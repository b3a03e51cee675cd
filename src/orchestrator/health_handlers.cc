// Liveness, readiness and Prometheus metrics.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "orchestrator/core.h"

namespace tamma::orchestrator {
namespace {

// Liveness answers without a token and without touching the database: a slow disk must not get
// the process restarted.
void health(Core&, Request&, const ExchangePtr& exchange) {
  exchange->reply(Response::json(200, {{"status", "ok"}}));
}

// Readiness from what the core thread and the database writes last said (StorageWatch), read
// on the I/O thread: it answers at once while a write waits on a frozen disk, and says 503 when
// writes fail, stall, or the core thread stops turning.
constexpr std::chrono::milliseconds kStallAfter{3000};

void ready(Core& core, Request&, const ExchangePtr& exchange) {
  if (core.shutting_down) {
    exchange->reply(Response::json(503, {{"status", "shutting_down"}}));
    return;
  }
  const auto verdict = core.store.watch().verdict(kStallAfter);
  if (!verdict.ready) {
    exchange->reply(
        Response::json(503, {{"status", verdict.status}, {"message", verdict.message}}));
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
  if (auto signal = core.store.signal_counts()) {
    // Only with several orchestrators on one database (PostgreSQL): the wake-ups between them.
    r.body += fmt::format(
        "# HELP tamma_queue_notifications_sent_total Wake-ups sent to the other orchestrators.\n"
        "# TYPE tamma_queue_notifications_sent_total counter\n"
        "tamma_queue_notifications_sent_total {}\n"
        "# HELP tamma_queue_notifications_received_total Wake-ups heard from the other "
        "orchestrators.\n"
        "# TYPE tamma_queue_notifications_received_total counter\n"
        "tamma_queue_notifications_received_total {}\n"
        "# HELP tamma_queue_notifications_skipped_total Announcements not sent: no other "
        "orchestrator listened.\n"
        "# TYPE tamma_queue_notifications_skipped_total counter\n"
        "tamma_queue_notifications_skipped_total {}\n",
        signal->sent, signal->received, signal->skipped);
  }
  for (const auto& m : core.store.metrics()) {
    r.body += fmt::format("# HELP tamma_{0} {1}.\n# TYPE tamma_{0} {2}\ntamma_{0} {3}\n", m.name,
                          m.help, m.type, m.value);
  }
  exchange->reply(std::move(r));
}

}  // namespace

void add_health_routes(Router& router, Core& core) {
  using V = http::verb;
  auto bind = [&core](void (*fn)(Core&, Request&, const ExchangePtr&)) {
    return [&core, fn](Request& r, const ExchangePtr& e) { fn(core, r, e); };
  };
  router.add(V::get, "/health", BodyKind::kSmall, Access::kPublic, bind(health), Runs::kEdge);
  router.add(V::get, "/ready", BodyKind::kSmall, Access::kAdmin, bind(ready), Runs::kEdge);
  router.add(V::get, "/metrics", BodyKind::kSmall, Access::kAdmin, bind(metrics));
}

}  // namespace tamma::orchestrator
