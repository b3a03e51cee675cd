#pragma once
// Ends leases whose worker stopped heartbeating and brings retry_wait tasks back to the queue,
// on the core thread, woken at the next deadline the database knows of.
//
// Time the orchestrator itself could not serve is not held against workers: when a tick comes
// late (the process was stopped, or the core thread waited on a frozen disk) or database writes
// failed since the last tick (a full or read-only disk), every lease first gets one lease TTL
// from now, as after a restart, and only then are expiries judged. Between ticks it also keeps
// /ready honest: a small write goes to the database when none has committed for a while.
//
// It also runs retention (--retain-finished): a few small batches of finished tasks older
// than the retention are pruned per tick, every replica doing it at once without a leader
// (docs/adr/0027-artifacts-in-postgresql-and-retention.md).

#include <boost/asio/steady_timer.hpp>

#include "orchestrator/core.h"

namespace tamma::orchestrator {

class LeaseReaper {
 public:
  explicit LeaseReaper(Core& core);
  void start();
  void stop();
  // Re-reads the next deadline now (a write may have created an earlier one).
  void poke();

 private:
  void tick();
  void schedule(std::chrono::milliseconds delay);
  // One retention sweep when it is due; throws when the database refuses.
  void prune();

  // Gives every lease a TTL from now; throws when the database refuses (then nothing expires).
  void grant_grace(std::chrono::milliseconds late, bool storage_failed);

  Core& core_;
  asio::steady_timer timer_;
  bool stopped_ = false;
  std::chrono::steady_clock::time_point expected_at_;  // when the timer should fire
  std::uint64_t failures_seen_ = 0;  // storage failures already answered with a grace
  std::chrono::steady_clock::time_point last_probe_{};
  // Retention (--retain-finished): when the last sweep ran, and whether it left work behind.
  std::chrono::steady_clock::time_point last_prune_{};
  bool prune_more_ = false;
  bool grace_pending_ = false;
};

}  // namespace tamma::orchestrator
