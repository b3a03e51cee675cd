#pragma once
// `tamma-worker start`: the worker as a daemon of an orchestrator (docs/daemon.md).
//
// Startup: capabilities -> register (retried with backoff until it works; a refused token is
// fatal) -> one heartbeat thread -> one thread per slot, each long-polling for a task, running
// it through the Engine, streaming its output and progress, and delivering its result until
// the orchestrator has it. Shutdown: drain() stops taking tasks and lets running ones finish;
// cancel_tasks() cancels them (reported cancelled, retryable, so they run again elsewhere);
// abort() stops waiting for deliveries.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "protocol/task_result.h"
#include "protocol/wire.h"
#include "worker/backoff.h"
#include "worker/config.h"

namespace tamma::worker {

inline constexpr std::string_view kWorkerVersion = "0.1.0";

struct DaemonOptions {
  Config config;  // orchestrator_url, token (the registration token), slots, labels, ...
  // How long a drain waits for running tasks before cancelling them.
  std::chrono::milliseconds drain_timeout{std::chrono::minutes(10)};
  // After cancelling (second signal or drain timeout): how long results may still take to be
  // delivered, on top of the tasks' grace period, before the daemon gives up on them.
  std::chrono::milliseconds final_delivery{std::chrono::seconds(30)};
  // How long unregistering is retried at the very end.
  std::chrono::milliseconds unregister_timeout{std::chrono::seconds(10)};
  std::optional<std::string> health_listen;  // HOST:PORT for GET /health
  BackoffPolicy backoff;                     // every retry against the orchestrator
  // Upper bound on the long-poll wait asked for; the orchestrator's own limit applies too.
  std::optional<std::chrono::milliseconds> poll_wait;
};

// What this host offers: task types of the configured handlers, labels, slots, memory, CPUs,
// free disk under the workspace root, version and platform (uname).
protocol::wire::Capabilities detect_capabilities(const Config& config);

// A result document that fits in `max_bytes` of JSON: captured step output is cut in the
// middle (head and tail kept, the cut counted as dropped) until it does. The whole output is
// in the task's log on the orchestrator already.
nlohmann::json fit_result(const protocol::TaskResult& result, std::size_t max_bytes);

struct HealthSnapshot {
  std::string status;  // registering, running, draining, stopping, unhealthy
  std::string worker_id;
  std::size_t running_tasks = 0;
  std::optional<std::int64_t> last_heartbeat_ago_ms;
  // false: heartbeats have failed for longer than the lease TTL while running, or the worker
  // stands down because its host failed several tasks in a row (`reason` says which).
  bool healthy = true;
  std::string reason;
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until drained and unregistered. Returns 0 when every task's result was delivered
  // (or its lease was taken away by the orchestrator), 6 otherwise. Throws Error(kConfig) when
  // the orchestrator refuses the registration token.
  int run();

  // Thread-safe; meant for the signal thread. Each is idempotent.
  void drain(const std::string& why);         // no new tasks; running ones finish
  void cancel_tasks(const std::string& why);  // cancel running tasks, report them
  void abort(const std::string& why);         // stop waiting for deliveries; exit soon

  [[nodiscard]] HealthSnapshot health() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tamma::worker
