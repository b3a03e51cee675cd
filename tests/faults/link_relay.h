#pragma once
// A userspace "netem" between two network namespaces, for hosts without sch_netem.
//
// LinkRelay makes two fresh network namespaces (names unique per process and relay, deleted
// by the destructor), opens a TAP device (IFF_TAP | IFF_NO_PI) inside each by opening
// /dev/net/tun from a thread that has setns()'d into it, gives them 10.77.N.1/24 (side A) and
// 10.77.N.2/24 (side B), brings them and loopback up, and forwards every Ethernet frame
// between the two descriptors on its own thread. ARP passes because every frame is forwarded.
//
// Each frame, in either direction, is dropped while the link is partitioned, dropped with
// probability `loss`, and otherwise written to the other side `delay` after it was read (a
// time-ordered queue per direction; the round trip is twice the delay). The setters are
// thread-safe and take effect for the next frame read. A queue holds at most kQueueLimit
// frames (netem's default limit is 1000 packets; this is larger so a delay alone does not
// drop), beyond which frames are dropped and counted.
//
// A process runs inside a side by setns(CLONE_NEWNET) on netns_path(side) in the child before
// exec (see faults/fault_harness.h). A namespace is a bind mount under /run/netns made by
// `ip netns add`; a relay left by a killed test is removed by sweep_stale() on the next run.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>
#include <thread>

namespace tamma::faults {

class LinkRelay {
 public:
  enum class Side { kA, kB };
  static constexpr std::size_t kQueueLimit = 20000;

  // Throws std::runtime_error (naming what is missing: root, /dev/net/tun, ip) when the
  // namespaces or devices cannot be made; whatever was made is removed first.
  LinkRelay();
  ~LinkRelay();
  LinkRelay(const LinkRelay&) = delete;
  LinkRelay& operator=(const LinkRelay&) = delete;

  void set_delay(std::chrono::milliseconds delay) { delay_ms_.store(delay.count()); }
  void set_loss(double probability) { loss_.store(probability); }
  void set_partition(bool on) { partition_.store(on); }

  [[nodiscard]] const std::string& netns_name(Side side) const {
    return side == Side::kA ? name_a_ : name_b_;
  }
  [[nodiscard]] std::filesystem::path netns_path(Side side) const {
    return std::filesystem::path("/run/netns") / netns_name(side);
  }
  // "10.77.N.1" for side A, "10.77.N.2" for side B.
  [[nodiscard]] std::string address(Side side) const;

  struct Stats {
    std::uint64_t forwarded = 0;
    std::uint64_t dropped_loss = 0;
    std::uint64_t dropped_partition = 0;
    std::uint64_t dropped_overflow = 0;
  };
  [[nodiscard]] Stats stats() const;

  // Deletes namespaces named by an earlier relay whose process is gone (a test killed before
  // its destructors ran). Safe while other test processes run relays of their own.
  static void sweep_stale();

 private:
  void forward_loop();
  void teardown() noexcept;

  std::string name_a_;
  std::string name_b_;
  int subnet_ = 0;
  int fd_a_ = -1;
  int fd_b_ = -1;
  int stop_fd_ = -1;  // eventfd: the destructor wakes the loop
  bool made_a_ = false;
  bool made_b_ = false;

  std::atomic<std::int64_t> delay_ms_{0};
  std::atomic<double> loss_{0.0};
  std::atomic<bool> partition_{false};
  std::atomic<std::uint64_t> forwarded_{0};
  std::atomic<std::uint64_t> dropped_loss_{0};
  std::atomic<std::uint64_t> dropped_partition_{0};
  std::atomic<std::uint64_t> dropped_overflow_{0};
  std::thread thread_;
};

// Runs `argv` (no shell) and throws std::runtime_error with its output when it fails.
void run_checked(const std::vector<std::string>& argv);

}  // namespace tamma::faults
