#pragma once
// Counters and histograms in Prometheus text exposition format (version 0.0.4). Written from the
// I/O threads (HTTP counts) and the core thread (everything else), hence the lock.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace tamma::orchestrator {

struct TaskCounts;

class Metrics {
 public:
  void http_request(const std::string& route, const std::string& method, unsigned status);
  void pickup_latency(double seconds);
  void lease_expired(std::uint64_t count) { lease_expiries_ += count; }
  void assignment_unacknowledged(std::uint64_t count) { unacknowledged_ += count; }
  void stall_grace() { ++stall_graces_; }
  void pruned(std::uint64_t tasks, std::uint64_t workers) {
    tasks_pruned_ += tasks;
    workers_pruned_ += workers;
  }
  void task_submitted() { ++submitted_; }
  void task_assigned() { ++assigned_; }
  void waiting_polls(std::int64_t count) { waiting_polls_ = count; }
  void log_followers(std::int64_t count) { log_followers_ = count; }

  // The exposition text; gauges read from the store at scrape time come in through `tasks` and
  // `workers`.
  [[nodiscard]] std::string render(const TaskCounts& tasks,
                                   const std::map<std::string, std::int64_t>& workers) const;

  // Upper bounds of the pickup latency buckets, in seconds.
  static constexpr std::array<double, 14> kLatencyBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60};

 private:
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, unsigned>, std::uint64_t> http_;
  std::array<std::uint64_t, kLatencyBuckets.size()> latency_buckets_{};
  std::uint64_t latency_count_ = 0;
  double latency_sum_ = 0;
  std::atomic<std::uint64_t> lease_expiries_{0};
  std::atomic<std::uint64_t> unacknowledged_{0};
  std::atomic<std::uint64_t> stall_graces_{0};
  std::atomic<std::uint64_t> tasks_pruned_{0};
  std::atomic<std::uint64_t> workers_pruned_{0};
  std::atomic<std::uint64_t> submitted_{0};
  std::atomic<std::uint64_t> assigned_{0};
  std::atomic<std::int64_t> waiting_polls_{0};
  std::atomic<std::int64_t> log_followers_{0};
};

}  // namespace tamma::orchestrator
