#include "orchestrator/lease_reaper.h"

#include <spdlog/spdlog.h>

namespace tamma::orchestrator {
namespace {

// A floor so a storm of deadlines does not spin the core thread, and a ceiling so a deadline
// written behind the reaper's back (another process, a clock step) is still seen soon.
constexpr std::chrono::milliseconds kMinDelay{5};
constexpr std::chrono::milliseconds kMaxDelay{1000};
// A tick this late means the process or its core thread did not run: a stall, not load.
constexpr std::chrono::milliseconds kStallTolerance{2000};
// How often a probe write checks the disk still takes writes (and the file is in place).
constexpr std::chrono::milliseconds kProbeAfter{2000};
// Retention: tasks per transaction and transactions per tick, so one tick holds the core thread
// (and any lock) briefly however large the backlog; a tick that left work behind makes the next
// one come soon. Without a backlog the sweep runs every quarter of the retention, at most
// every kPruneEvery.
constexpr int kPruneBatch = 100;
constexpr int kPruneBatchesPerTick = 4;
constexpr std::chrono::milliseconds kPruneEvery{10000};
constexpr std::chrono::milliseconds kPruneBacklogDelay{50};

}  // namespace

LeaseReaper::LeaseReaper(Core& core) : core_(core), timer_(core.io) {}

void LeaseReaper::start() {
  core_.poke_reaper = [this] { poke(); };
  schedule(std::chrono::milliseconds(0));
}

void LeaseReaper::stop() {
  stopped_ = true;
  core_.poke_reaper = nullptr;
  timer_.cancel();
}

void LeaseReaper::poke() {
  if (!stopped_) schedule(std::chrono::milliseconds(0));
}

void LeaseReaper::schedule(std::chrono::milliseconds delay) {
  expected_at_ = std::chrono::steady_clock::now() + delay;
  timer_.expires_after(delay);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) tick();
  });
}

void LeaseReaper::grant_grace(std::chrono::milliseconds late, bool storage_failed) {
  const int held = core_.store.extend_leases(core_.config.lease_ttl);
  if (storage_failed) {
    spdlog::warn(
        "database writes failed since the last check: {} lease(s) run at least one lease TTL "
        "({} ms) from now, so workers that could not renew meanwhile keep their tasks",
        held, core_.config.lease_ttl.count());
  } else {
    spdlog::warn(
        "the orchestrator did not run for {} ms (stopped, or waiting on its disk): {} lease(s) "
        "run at least one lease TTL ({} ms) from now",
        late.count(), held, core_.config.lease_ttl.count());
  }
  core_.metrics.stall_grace();
}

void LeaseReaper::prune() {
  const auto retain = core_.config.retain_finished;
  if (retain.count() <= 0) return;
  const auto now = std::chrono::steady_clock::now();
  const auto every = std::clamp(retain / 4, kMinDelay, kPruneEvery);
  if (!prune_more_ && now - last_prune_ < every) return;
  last_prune_ = now;
  prune_more_ = false;
  auto pruned = core_.store.prune_finished(retain, kPruneBatch, kPruneBatchesPerTick);
  prune_more_ = pruned.more;
  if (pruned.tasks > 0 || pruned.workers > 0) {
    core_.metrics.pruned(static_cast<std::uint64_t>(pruned.tasks),
                         static_cast<std::uint64_t>(pruned.workers));
    spdlog::info("retention: pruned {} finished task(s) and {} worker(s) older than {} ms{}",
                 pruned.tasks, pruned.workers, retain.count(), pruned.more ? ", more left" : "");
  }
}

void LeaseReaper::tick() {
  // Nobody asked for what the reaper does: the orchestrator is the actor of its records.
  Store::ActorScope as(core_.store, Actor::orchestrator());
  std::chrono::milliseconds next = kMaxDelay;
  auto& watch = core_.store.watch();
  watch.core_alive();
  const auto late = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - expected_at_);
  const std::uint64_t failures = watch.failures();
  const bool storage_failed = failures != failures_seen_;
  if (late > kStallTolerance || storage_failed) grace_pending_ = true;
  try {
    if (grace_pending_) {
      // Until this write works nothing below runs: no lease is judged while the database
      // cannot record the workers' heartbeats.
      grant_grace(late, storage_failed);
      grace_pending_ = false;
      failures_seen_ = failures;
    }
    // The reaper's own transactions commit without writing when nothing changed, so they
    // say little about the disk: a small real write every kProbeAfter does.
    if (std::chrono::steady_clock::now() - last_probe_ >= kProbeAfter) {
      last_probe_ = std::chrono::steady_clock::now();
      core_.store.probe();
    }
    auto expired = core_.store.expire_leases(core_.retry_policy());
    if (!expired.empty()) {
      core_.metrics.lease_expired(expired.size());
      for (const auto& e : expired) {
        spdlog::warn("task {} attempt {}: lease expired, now {}", e.task_id, e.attempt,
                     wire::to_string(e.state));
      }
    }
    auto unacknowledged = core_.store.requeue_unacknowledged(core_.config.ack_timeout);
    for (const auto& u : unacknowledged) {
      spdlog::warn(
          "task {} attempt {}: its worker never acknowledged the assignment; queued again "
          "under the same attempt",
          u.task_id, u.attempt);
    }
    core_.metrics.assignment_unacknowledged(unacknowledged.size());
    for (const auto& u : unacknowledged) core_.offer(u.task_id);
    auto promoted = core_.store.promote_retries();
    for (const auto& r : expired) core_.log_followers.notify(r.task_id);
    for (const auto& p : promoted) core_.offer(p.task_id);
    core_.update_gauges();
    if (auto deadline = core_.store.next_deadline_ms(core_.config.ack_timeout)) {
      next = std::clamp(std::chrono::milliseconds(*deadline), kMinDelay, kMaxDelay);
    }
    prune();
    if (prune_more_) next = std::min(next, kPruneBacklogDelay);
  } catch (const Error& e) {
    // The database may come back (a lock held by a backup): keep trying at the slow pace.
    spdlog::error("lease reaper: {}", e.what());
  }
  if (!stopped_) schedule(next);
}

}  // namespace tamma::orchestrator
