#include "worker/backoff.h"

#include <algorithm>

namespace tamma::worker {

Backoff::Backoff(BackoffPolicy policy) : Backoff(policy, std::random_device{}()) {}

Backoff::Backoff(BackoffPolicy policy, std::uint64_t seed) : policy_(policy), random_(seed) {
  if (policy_.base.count() < 1) policy_.base = std::chrono::milliseconds(1);
  policy_.cap = std::max(policy_.cap, policy_.base);
}

std::chrono::milliseconds Backoff::ceiling() const {
  // Doubling stops once the cap is reached, so the shift never overflows.
  std::int64_t ceiling = policy_.base.count();
  for (int i = 0; i < failures_ && ceiling < policy_.cap.count(); ++i) ceiling *= 2;
  return std::chrono::milliseconds(std::min(ceiling, policy_.cap.count()));
}

std::chrono::milliseconds Backoff::next() {
  const auto limit = ceiling();
  ++failures_;
  std::uniform_int_distribution<std::int64_t> pick(0, limit.count());
  return std::chrono::milliseconds(pick(random_));
}

void StopSignal::fire() {
  {
    // Wakers run under the lock so that detach() cannot return while one is running: the
    // object a waker touches (a curl multi handle) may be destroyed right after detach.
    std::lock_guard lock(mutex_);
    if (fired_.exchange(true)) return;
    for (auto& [id, fn] : wakers_) fn();
    wakers_.clear();
  }
  changed_.notify_all();
}

bool StopSignal::wait_for(std::chrono::milliseconds duration) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, duration, [this] { return fired_.load(); });
}

std::uint64_t StopSignal::attach(std::function<void()> wake) const {
  std::unique_lock lock(mutex_);
  if (fired_.load()) {
    lock.unlock();
    wake();
    return 0;
  }
  const std::uint64_t id = next_id_++;
  wakers_.emplace_back(id, std::move(wake));
  return id;
}

void StopSignal::detach(std::uint64_t id) const {
  std::lock_guard lock(mutex_);
  std::erase_if(wakers_, [id](const auto& entry) { return entry.first == id; });
}

void Pulse::fire() {
  {
    std::lock_guard lock(mutex_);
    ++generation_;
  }
  changed_.notify_all();
}

bool Pulse::wait_for(std::chrono::milliseconds duration, const StopSignal& stop) {
  // The stop signal's waker takes this mutex before notifying, so a stop that fires between
  // the predicate's check and the sleep is not missed.
  const auto id = stop.attach([this] {
    std::lock_guard lock(mutex_);
    changed_.notify_all();
  });
  {
    std::unique_lock lock(mutex_);
    const auto seen = generation_;
    changed_.wait_for(lock, duration, [&] { return generation_ != seen || stop.fired(); });
  }
  stop.detach(id);
  return stop.fired();
}

}  // namespace tamma::worker
