#pragma once
// What the HTTP edge knows about the database and the core thread without asking either. The
// core thread records each write transaction as it begins and ends, and the lease reaper says
// it is alive on every tick; /ready reads the record from an I/O thread. A write stuck on a
// frozen filesystem, a disk that refuses every commit, or a core thread that stopped turning
// therefore make /ready answer 503 at once, while /health (which reads nothing) stays 200.
//
// The lease reaper reads it too: time the orchestrator could not serve must not count against
// the leases of workers that kept trying (docs/protocol.md, "Faults").

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

namespace tamma::orchestrator {

class StorageWatch {
 public:
  using Clock = std::chrono::steady_clock;

  void write_began() { in_progress_since_.store(now_ms(), std::memory_order_relaxed); }
  void write_succeeded() {
    in_progress_since_.store(0, std::memory_order_relaxed);
    failing_since_.store(0, std::memory_order_relaxed);
  }
  // `message` must not name server paths: /ready shows it to the admin.
  void write_failed(const std::string& message) {
    in_progress_since_.store(0, std::memory_order_relaxed);
    std::int64_t expected = 0;
    failing_since_.compare_exchange_strong(expected, now_ms(), std::memory_order_relaxed);
    failures_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mutex_);
    last_error_ = message;
  }
  // Rolled back for a reason that says nothing about the storage (a refused request).
  void write_abandoned() { in_progress_since_.store(0, std::memory_order_relaxed); }
  void core_alive() { core_alive_at_.store(now_ms(), std::memory_order_relaxed); }
  // The database file is not where it was opened (moved, deleted): writes still work, but
  // are lost at the next restart. Not a write failure: leases are judged as usual.
  void set_misplaced(std::optional<std::string> why) {
    std::lock_guard lock(mutex_);
    misplaced_ = std::move(why);
  }

  // Storage failures so far (monotonic): the reaper compares it across ticks.
  [[nodiscard]] std::uint64_t failures() const { return failures_.load(); }

  struct Verdict {
    bool ready = true;
    std::string status = "ready";  // storage_stalled, storage_failing, core_stalled
    std::string message;
  };
  // `stall_after`: how long a write or the core thread may be silent before it counts.
  [[nodiscard]] Verdict verdict(std::chrono::milliseconds stall_after) const {
    const std::int64_t now = now_ms();
    const std::int64_t limit = stall_after.count();
    if (const auto since = in_progress_since_.load(); since != 0 && now - since > limit) {
      return {false, "storage_stalled",
              "a database write has been waiting for " + std::to_string(now - since) + " ms"};
    }
    if (failing_since_.load() != 0) {
      std::lock_guard lock(mutex_);
      return {false, "storage_failing", "database writes fail: " + last_error_};
    }
    {
      std::lock_guard lock(mutex_);
      if (misplaced_) return {false, "storage_failing", *misplaced_};
    }
    if (const auto alive = core_alive_at_.load(); alive != 0 && now - alive > limit) {
      return {false, "core_stalled",
              "the core thread has not turned for " + std::to_string(now - alive) + " ms"};
    }
    return {};
  }

 private:
  static std::int64_t now_ms() {
    // Never 0, which means "unset".
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
               .count() +
           1;
  }

  std::atomic<std::int64_t> in_progress_since_{0};
  std::atomic<std::int64_t> failing_since_{0};
  std::atomic<std::int64_t> core_alive_at_{0};
  std::atomic<std::uint64_t> failures_{0};
  mutable std::mutex mutex_;
  std::string last_error_;
  std::optional<std::string> misplaced_;
};

}  // namespace tamma::orchestrator
