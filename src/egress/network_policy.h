#pragma once
// The operator's bound on what tasks may ask of the network: the worker configuration's
// "networkPolicy". Without it a task's spec alone decided; with it, a spec asking for more is
// refused before anything runs, naming the entry.
//
//   "networkPolicy": {
//     "hostNetwork": false,                        // may a task ask "network": "host"? (true)
//     "allow": ["*.npmjs.org:443", "10.0.0.5:*"],  // entries tasks may list (absent: any)
//     "denyAddresses": ["10.0.0.0/8"],             // more ranges the proxy never connects to
//     "allowAddresses": ["10.0.0.5"],              // exceptions to denyAddresses only
//     "denyHostAddresses": true                    // the host's own interface addresses (true)
//   }

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "egress/address_policy.h"
#include "egress/destination.h"

namespace tamma::egress {

// Entries in one list (a task's "allow" or the operator's), bounded like any hostile input.
inline constexpr std::size_t kMaxAllowEntries = 256;
inline constexpr std::size_t kMaxAddressRanges = 256;

struct NetworkPolicy {
  bool host_network = true;
  std::optional<std::vector<Destination>> allow;
  std::vector<Cidr> deny_addresses;
  std::vector<Cidr> allow_addresses;
  bool deny_host_addresses = true;

  // The problem with a task's allow-list under this policy (e.g. "$.network.allow[1]:
  // "x.com:443" is not among the destinations this worker allows"), or nullopt.
  [[nodiscard]] std::optional<std::string> check(const std::vector<Destination>& task_allow) const;
  [[nodiscard]] AddressPolicy address_policy() const;
};

// Reads "networkPolicy" (an object, or its JSON text from the environment or command line,
// parsed with the project's limits). Problems name the member ("allow[2]: ..."), all of them.
std::vector<std::string> parse_network_policy(const nlohmann::json& value, NetworkPolicy& out);

}  // namespace tamma::egress
