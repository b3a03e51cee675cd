#pragma once
// Ends leases whose worker stopped heartbeating and brings retry_wait tasks back to the queue,
// on the core thread, woken at the next deadline the database knows of.

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

  Core& core_;
  asio::steady_timer timer_;
  bool stopped_ = false;
};

}  // namespace tamma::orchestrator
