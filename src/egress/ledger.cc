#include "egress/ledger.h"

namespace tamma::egress {

std::shared_ptr<Counters> Ledger::counters(const std::string& destination) {
  std::lock_guard lock(mutex_);
  auto it = traffic_.find(destination);
  if (it != traffic_.end()) return it->second;
  const std::string key =
      traffic_.size() < kMaxLedgerDestinations ? destination : std::string("(other destinations)");
  auto& slot = traffic_[key];
  if (!slot) slot = std::make_shared<Counters>();
  return slot;
}

void Ledger::refuse(Refusal refusal) {
  std::lock_guard lock(mutex_);
  if (refused_.size() < kMaxLedgerRefusals) {
    refused_.push_back(std::move(refusal));
  } else {
    ++refused_dropped_;
  }
}

LedgerReport Ledger::report() const {
  std::lock_guard lock(mutex_);
  LedgerReport out;
  for (const auto& [destination, c] : traffic_) {
    out.traffic.push_back(
        TrafficEntry{destination, c->bytes_out.load(), c->bytes_in.load(), c->connections.load()});
  }
  out.refused = refused_;
  out.refused_dropped = refused_dropped_;
  return out;
}

}  // namespace tamma::egress
