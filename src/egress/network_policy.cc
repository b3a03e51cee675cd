#include "egress/network_policy.h"

#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "common/json_parse.h"
#include "common/json_text.h"

namespace tamma::egress {
namespace {

using nlohmann::json;

void read_bool(const json& object, const char* key, bool& out, std::vector<std::string>& problems) {
  auto it = object.find(key);
  if (it == object.end()) return;
  if (!it->is_boolean()) {
    problems.push_back(fmt::format("{}: must be true or false, not {}", key, describe_json(*it)));
    return;
  }
  out = it->get<bool>();
}

void read_ranges(const json& object, const char* key, std::vector<Cidr>& out,
                 std::vector<std::string>& problems) {
  auto it = object.find(key);
  if (it == object.end()) return;
  if (!it->is_array()) {
    problems.push_back(
        fmt::format("{}: must be an array of address ranges, not {}", key, describe_json(*it)));
    return;
  }
  if (it->size() > kMaxAddressRanges) {
    problems.push_back(
        fmt::format("{}: {} ranges; at most {}", key, it->size(), kMaxAddressRanges));
    return;
  }
  for (std::size_t i = 0; i < it->size(); ++i) {
    const json& entry = (*it)[i];
    if (!entry.is_string()) {
      problems.push_back(
          fmt::format("{}[{}]: must be a string, not {}", key, i, describe_json(entry)));
      continue;
    }
    auto parsed = parse_cidr(entry.get<std::string>());
    if (auto* problem = std::get_if<std::string>(&parsed)) {
      problems.push_back(fmt::format("{}[{}]: {}", key, i, *problem));
    } else {
      out.push_back(std::get<Cidr>(parsed));
    }
  }
}

}  // namespace

std::optional<std::string> NetworkPolicy::check(const std::vector<Destination>& task_allow) const {
  if (!allow) return std::nullopt;
  for (std::size_t i = 0; i < task_allow.size(); ++i) {
    bool covered = false;
    for (const auto& bound : *allow) covered = covered || bound.covers(task_allow[i]);
    if (!covered) {
      return fmt::format(
          "$.network.allow[{}]: \"{}\" is not among the destinations this worker's network "
          "policy allows",
          i, task_allow[i].text());
    }
  }
  return std::nullopt;
}

AddressPolicy NetworkPolicy::address_policy() const {
  AddressPolicy policy(deny_host_addresses);
  for (const auto& range : deny_addresses) policy.deny(range);
  for (const auto& range : allow_addresses) policy.except(range);
  return policy;
}

std::vector<std::string> parse_network_policy(const json& given, NetworkPolicy& out) {
  std::vector<std::string> problems;
  json parsed;
  const json* value = &given;
  if (given.is_string()) {
    try {
      parsed = parse_json_text(given.get<std::string>(), JsonLimits{64U << 10, 8});
      value = &parsed;
    } catch (const JsonTextError& error) {
      return {std::string("is not a JSON object: ") + error.what()};
    }
  }
  if (!value->is_object()) {
    return {fmt::format("must be an object such as {{\"allow\": [\"*.npmjs.org:443\"]}}, not {}",
                        describe_json(*value))};
  }
  NetworkPolicy policy;
  for (const auto& [key, _] : value->items()) {
    if (key != "hostNetwork" && key != "allow" && key != "denyAddresses" &&
        key != "allowAddresses" && key != "denyHostAddresses") {
      problems.push_back(
          fmt::format("{}: unknown member (the members are hostNetwork, allow, denyAddresses, "
                      "allowAddresses, denyHostAddresses)",
                      json_quote(key)));
    }
  }
  read_bool(*value, "hostNetwork", policy.host_network, problems);
  read_bool(*value, "denyHostAddresses", policy.deny_host_addresses, problems);
  read_ranges(*value, "denyAddresses", policy.deny_addresses, problems);
  read_ranges(*value, "allowAddresses", policy.allow_addresses, problems);
  if (auto it = value->find("allow"); it != value->end()) {
    if (!it->is_array()) {
      problems.push_back(fmt::format("allow: must be an array of \"host:port\" entries, not {}",
                                     describe_json(*it)));
    } else if (it->size() > kMaxAllowEntries) {
      problems.push_back(
          fmt::format("allow: {} entries; at most {}", it->size(), kMaxAllowEntries));
    } else {
      policy.allow.emplace();
      for (std::size_t i = 0; i < it->size(); ++i) {
        const json& entry = (*it)[i];
        if (!entry.is_string()) {
          problems.push_back(
              fmt::format("allow[{}]: must be a string, not {}", i, describe_json(entry)));
          continue;
        }
        auto destination =
            parse_destination(entry.get<std::string>(), DestinationOptions{.allow_any_port = true});
        if (auto* problem = std::get_if<std::string>(&destination)) {
          problems.push_back(fmt::format("allow[{}]: {}", i, *problem));
        } else {
          policy.allow->push_back(std::get<Destination>(destination));
        }
      }
    }
  }
  if (problems.empty()) out = std::move(policy);
  return problems;
}

}  // namespace tamma::egress
