#pragma once
// Which addresses the egress proxy may connect to, whatever name led there: the check made
// after the proxy resolved an allowed name, so that a name the task's author (or whoever owns
// its DNS) points at the host's loopback or a cloud metadata endpoint reaches nothing
// ("DNS rebinding").
//
// Always refused, whatever the operator says: unspecified (0.0.0.0/8, ::), loopback
// (127.0.0.0/8, ::1), link-local (169.254.0.0/16, which holds 169.254.169.254, and fe80::/10),
// multicast and reserved/broadcast (224.0.0.0/3, ff00::/8), the metadata addresses outside
// those (100.100.100.200 of Alibaba Cloud, fd00:ec2::254 of AWS), and every address of the
// worker's host's own interfaces (its services listen there too). IPv4-mapped and NAT64-free
// IPv4-compatible IPv6 forms are judged as the IPv4 address they carry.
//
// The operator adds ranges (networkPolicy.denyAddresses, e.g. the office's 10.0.0.0/8) and
// exceptions to those additions (networkPolicy.allowAddresses, e.g. 10.0.0.5/32 for the
// package mirror); exceptions never open the built-in ranges.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace tamma::egress {

struct Cidr {
  boost::asio::ip::address network;
  unsigned prefix = 0;
  [[nodiscard]] bool contains(const boost::asio::ip::address& address) const;
  // The plain prefix comparison, without the IPv4-in-IPv6 forms.
  [[nodiscard]] bool contains_as_is(const boost::asio::ip::address& address) const;
  [[nodiscard]] std::string text() const;
};

// "10.0.0.0/8", "fd00::/8", or an address alone (a /32 or /128). Error: a sentence.
std::variant<Cidr, std::string> parse_cidr(std::string_view text);

class AddressPolicy {
 public:
  // Built-in ranges only, plus the host's own addresses when `deny_host_addresses`.
  explicit AddressPolicy(bool deny_host_addresses = true);
  void deny(Cidr range) { denied_.push_back(std::move(range)); }
  void except(Cidr range) { excepted_.push_back(std::move(range)); }
  // Why `address` is refused ("loopback", "link-local", "the worker host's own address",
  // "denied by the operator (10.0.0.0/8)"), or nullopt when allowed.
  [[nodiscard]] std::optional<std::string> refusal(const boost::asio::ip::address& address) const;

 private:
  std::vector<std::string> host_addresses_;  // canonical text
  std::vector<Cidr> denied_;
  std::vector<Cidr> excepted_;
};

}  // namespace tamma::egress
