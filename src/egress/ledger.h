#pragma once
// What a task's egress proxy carried and refused, for the task's result: bytes each way per
// destination ("host:port" as the task asked for it) and every refused connection with its
// time and reason. Bounded: a task that asks for a million names gets the first entries and
// a count of the rest, not a result document of a million entries.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tamma::egress {

inline constexpr std::size_t kMaxLedgerDestinations = 256;
inline constexpr std::size_t kMaxLedgerRefusals = 256;

struct Counters {
  std::atomic<std::uint64_t> bytes_out{0};  // task -> destination
  std::atomic<std::uint64_t> bytes_in{0};   // destination -> task
  std::atomic<std::uint64_t> connections{0};
};

struct TrafficEntry {
  std::string destination;
  std::uint64_t bytes_out = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t connections = 0;
};

struct Refusal {
  std::string destination;  // as asked: "evil.com:443", "10.0.0.9:22", "udp" for SOCKS5 UDP
  std::string reason;       // "not in the allow-list", "resolves to loopback (127.0.0.1)"
  std::string protocol;     // "connect", "socks5", "http"
  std::chrono::system_clock::time_point at;
};

struct LedgerReport {
  std::vector<TrafficEntry> traffic;  // by destination, in name order
  std::vector<Refusal> refused;       // in time order
  std::uint64_t refused_dropped = 0;  // refusals beyond kMaxLedgerRefusals
};

class Ledger {
 public:
  // Counters of one destination, shared by its connections; past kMaxLedgerDestinations
  // destinations, the counters of "(other destinations)".
  std::shared_ptr<Counters> counters(const std::string& destination);
  void refuse(Refusal refusal);
  [[nodiscard]] LedgerReport report() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Counters>> traffic_;
  std::vector<Refusal> refused_;
  std::uint64_t refused_dropped_ = 0;
};

}  // namespace tamma::egress
