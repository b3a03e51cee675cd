#pragma once
// A cancel request that a poll() loop can wait on: signal handlers and the daemon's
// heartbeat thread set it; step runners watch its fd.

#include <atomic>
#include <string>

#include "common/unique_fd.h"

namespace tamma::worker {

class Cancellation {
 public:
  Cancellation();
  // Async-signal-safe: only an atomic store and a write(2).
  void request() noexcept;
  // A second request: skip the grace period and kill now.
  void request_immediate() noexcept;

  [[nodiscard]] bool requested() const { return level_.load() > 0; }
  [[nodiscard]] bool immediate() const { return level_.load() > 1; }
  // Readable once a request was made (an eventfd; never reset).
  [[nodiscard]] int fd() const { return event_.get(); }

 private:
  std::atomic<int> level_{0};
  UniqueFd event_;
};

}  // namespace tamma::worker
