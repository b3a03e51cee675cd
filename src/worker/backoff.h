#pragma once
// Retry pacing for the daemon's conversations with the orchestrator: exponential backoff with
// full jitter, and waits that a drain or a shutdown can cut short.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <random>
#include <vector>

namespace tamma::worker {

struct BackoffPolicy {
  std::chrono::milliseconds base{200};
  std::chrono::milliseconds cap{30000};
};

// Full jitter (each wait uniform in [0, min(cap, base * 2^n)]): many workers that lost the
// orchestrator at the same moment do not come back in step and knock it over again.
class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy = {});
  Backoff(BackoffPolicy policy, std::uint64_t seed);

  // The wait before the next attempt; each call doubles the ceiling up to the cap.
  std::chrono::milliseconds next();
  // After a success: the next failure starts again from the base.
  void reset() { failures_ = 0; }
  [[nodiscard]] int failures() const { return failures_; }
  // The ceiling the next call draws under.
  [[nodiscard]] std::chrono::milliseconds ceiling() const;

 private:
  BackoffPolicy policy_;
  int failures_ = 0;
  std::mt19937_64 random_;
};

// A one-way "stop now" that sleeping threads and in-flight HTTP requests watch. Firing it
// wakes every wait_for and calls every attached waker (the HTTP client's curl_multi_wakeup).
class StopSignal {
 public:
  StopSignal() = default;
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  void fire();
  [[nodiscard]] bool fired() const { return fired_.load(); }
  // Sleeps for `duration` unless fired first; returns true when it was fired.
  bool wait_for(std::chrono::milliseconds duration) const;

  // While attached, `wake` is called (once) when the signal fires, under an internal lock: it
  // must be quick and must not use this StopSignal. Returns an id for detach.
  std::uint64_t attach(std::function<void()> wake) const;
  void detach(std::uint64_t id) const;

 private:
  std::atomic<bool> fired_{false};
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  mutable std::uint64_t next_id_ = 1;
  mutable std::vector<std::pair<std::uint64_t, std::function<void()>>> wakers_;
};

// "The orchestrator answers again": wakes every thread sleeping out a backoff at once, without
// ending anything, so a worker that waited through an outage resumes within one heartbeat of
// the orchestrator's return instead of after its longest backoff (up to the 30 s cap).
class Pulse {
 public:
  void fire();
  // Sleeps for `duration` unless the pulse fires or `stop` fires first; true when `stop` fired.
  bool wait_for(std::chrono::milliseconds duration, const StopSignal& stop);

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t generation_ = 0;
};

}  // namespace tamma::worker
