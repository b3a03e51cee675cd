#pragma once
// The state the handlers share, all of it confined to the core thread: the store (the one
// writer connection), the parked polls and log followers, and the token hashes.

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <boost/asio/io_context.hpp>

#include "orchestrator/auth.h"
#include "orchestrator/config.h"
#include "orchestrator/http_types.h"
#include "orchestrator/long_poll.h"
#include "orchestrator/metrics.h"
#include "orchestrator/router.h"
#include "orchestrator/store/store.h"

namespace tamma::orchestrator {

class Core {
 public:
  Core(const ServerConfig& config, Store& store, Metrics& metrics, SharedTokens tokens,
       asio::io_context& core_io);

  const ServerConfig& config;
  Store& store;
  Metrics& metrics;
  asio::io_context& io;
  PollWaiters polls;
  LogFollowers log_followers;
  // Set by the lease reaper: reschedules it after a write that created a retry deadline.
  std::function<void()> poke_reaper;
  // Read by /ready from an I/O thread.
  std::atomic<bool> shutting_down{false};

  // ---- auth: each throws HttpError(401/403) ----
  // The check made from the headers alone, before the body is read: who may call a route at
  // all. Returns the worker the token belongs to (empty for the admin or registration token).
  [[nodiscard]] std::string authenticate(Access access, const std::string& authorization) const;
  void require_admin(const Request& request) const;
  void require_registration(const Request& request) const;
  // The worker the bearer token belongs to.
  std::string require_worker(const Request& request) const;
  // The token must be worker `worker_id`'s own.
  void require_worker_self(const Request& request, const std::string& worker_id) const;
  // Admin, or the worker itself.
  void require_admin_or_worker_self(const Request& request, const std::string& worker_id) const;

  [[nodiscard]] RetryPolicy retry_policy() const {
    return {config.retry_base, config.retry_max, config.avoid_failed_host};
  }

  // Offers a task that just became available to ONE waiting poll that can run it (then to the
  // next, only if that one turned out unable to take it). When none here took it, the other
  // orchestrators on the same database are told (unless `announce` is false: it came from them).
  // `known`: the task's type and labels when the caller has them (a submit, an announcement),
  // which spares reading them back; a task taken meanwhile then costs one refused claim.
  void offer(const std::string& task_id, bool announce = true,
             const Store::Queued* known = nullptr);
  // Tasks other orchestrators announced (none: the best queued ones), offered to the polls
  // parked here.
  void offer_announced(const std::vector<Store::Announced>& tasks);
  // Hands a claimed task to a parked poll; undoes the claim if the answer cannot be written.
  void deliver(PollWaiters::Waiter waiter, const Claim& claim);
  // Sends `response`, which carries `claim`'s assignment (a poll's answer, or a report's with
  // the next task); undoes the claim if it cannot be written.
  void send_assignment(const ExchangePtr& exchange, Response response, const Claim& claim);
  // After tasks left "running" without their worker: wake followers, offer re-queued ones.
  void after_requeue(const std::vector<Requeued>& requeued);
  // Answers every parked request (polls with 204) for a graceful shutdown.
  void drain_waiters();
  void update_gauges();

  // Throws the HTTP form of a refused fenced write; returns when it was accepted.
  static void check_fence(const FenceOutcome& outcome, const std::string& task_id);

  // After an unregistration through this orchestrator: its token stops working at once.
  void forget_worker(const std::string& worker_id);
  // Any thread: the worker (or "" for the admin) a kWorker or kAdminOrWorker request's token
  // names, when that needs no store read (a worker found by authenticate() within
  // kWorkerTokenCacheFor); nullopt otherwise, and for every other access.
  // Never throws: whatever it cannot decide (a malformed header too) is the core's.
  std::optional<std::string> recently_authenticated(Access access,
                                                    const std::string& authorization) const;

 private:
  SharedTokens tokens_;
  // Worker tokens the store recently knew, by hash: every request of a worker is authenticated,
  // and with PostgreSQL each lookup is a round trip to the database. An entry lives
  // kWorkerTokenCacheFor. A worker unregistered through another replica meanwhile gets no
  // further: the store itself refuses its polls and heartbeats (gone) and its task writes
  // (its leases were revoked).
  struct CachedWorker {
    std::string id;
    std::chrono::steady_clock::time_point until;
  };
  // Written on the core thread, read from the I/O threads too (recently_authenticated).
  mutable std::mutex worker_tokens_mutex_;
  mutable std::unordered_map<std::string, CachedWorker> worker_tokens_;
};

// Registers every route: one function per resource, each in its own file.
void add_worker_routes(Router& router, Core& core);
void add_task_routes(Router& router, Core& core);
void add_admin_routes(Router& router, Core& core);
void add_audit_routes(Router& router, Core& core);
void add_health_routes(Router& router, Core& core);

// The answer to an uncaught handler exception: HttpError as itself, WireError as a 400 naming
// the field, anything else as 500/503 (logged, never swallowed).
Response error_response(const std::exception& e);

// Parses the JSON body; a WireError names "$" for malformed JSON.
nlohmann::json json_body(const Request& request);

}  // namespace tamma::orchestrator
