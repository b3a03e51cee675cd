#include "orchestrator/lease_reaper.h"

#include <spdlog/spdlog.h>

namespace tamma::orchestrator {
namespace {

// A floor so a storm of deadlines does not spin the core thread, and a ceiling so a deadline
// written behind the reaper's back (another process, a clock step) is still seen soon.
constexpr std::chrono::milliseconds kMinDelay{5};
constexpr std::chrono::milliseconds kMaxDelay{1000};

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
  timer_.expires_after(delay);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) tick();
  });
}

void LeaseReaper::tick() {
  std::chrono::milliseconds next = kMaxDelay;
  try {
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
  } catch (const Error& e) {
    // The database may come back (a lock held by a backup): keep trying at the slow pace.
    spdlog::error("lease reaper: {}", e.what());
  }
  if (!stopped_) schedule(next);
}

}  // namespace tamma::orchestrator
