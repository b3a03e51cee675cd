#include "egress/address_policy.h"

#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

namespace tamma::egress {
namespace {

namespace ip = boost::asio::ip;

struct Builtin {
  const char* cidr;
  const char* why;
};

constexpr std::array kBuiltins{
    Builtin{"0.0.0.0/8", "an unspecified address"},
    Builtin{"127.0.0.0/8", "loopback"},
    Builtin{"169.254.0.0/16", "link-local (cloud metadata)"},
    Builtin{"224.0.0.0/3", "multicast or reserved"},
    Builtin{"100.100.100.200/32", "a cloud metadata address"},
    Builtin{"::/128", "an unspecified address"},
    Builtin{"::1/128", "loopback"},
    Builtin{"fe80::/10", "link-local"},
    Builtin{"ff00::/8", "multicast"},
    Builtin{"fd00:ec2::254/128", "a cloud metadata address"},
};

// An IPv6 address that carries an IPv4 one (::ffff:a.b.c.d, ::a.b.c.d) is judged as that:
// connecting to ::ffff:127.0.0.1 reaches the IPv4 loopback.
ip::address effective(const ip::address& address) {
  if (!address.is_v6()) return address;
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, v6);
  const auto b = v6.to_bytes();
  bool compat = true;
  for (int i = 0; i < 12; ++i) compat = compat && b[static_cast<std::size_t>(i)] == 0;
  if (compat && !(b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1)) {
    return ip::address_v4(ip::address_v4::bytes_type{b[12], b[13], b[14], b[15]});
  }
  return address;
}

std::vector<std::string> host_addresses() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      ip::address_v4::bytes_type bytes;
      std::memcpy(bytes.data(), &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, 4);
      out.push_back(ip::address_v4(bytes).to_string());
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      ip::address_v6::bytes_type bytes;
      std::memcpy(bytes.data(), &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, 16);
      out.push_back(ip::address_v6(bytes).to_string());
    }
  }
  ::freeifaddrs(list);
  return out;
}

}  // namespace

// An address carrying an IPv4 one is in the range if either form of it is: ::2 is in ::2/128
// (found by the egress_destination fuzz target) and 0.0.0.2 in 0.0.0.0/8.
bool Cidr::contains(const ip::address& candidate) const {
  const ip::address carried = effective(candidate);
  return contains_as_is(carried) || (carried != candidate && contains_as_is(candidate));
}

bool Cidr::contains_as_is(const ip::address& a) const {
  if (a.is_v4() != network.is_v4()) return false;
  auto compare = [&](const auto& x, const auto& y) {
    unsigned bits = prefix;
    for (std::size_t i = 0; i < x.size() && bits > 0; ++i) {
      const unsigned take = std::min(bits, 8u);
      const unsigned mask = (0xffu << (8 - take)) & 0xffu;
      if ((x[i] & mask) != (y[i] & mask)) return false;
      bits -= take;
    }
    return true;
  };
  if (a.is_v4()) return compare(a.to_v4().to_bytes(), network.to_v4().to_bytes());
  return compare(a.to_v6().to_bytes(), network.to_v6().to_bytes());
}

std::string Cidr::text() const { return fmt::format("{}/{}", network.to_string(), prefix); }

std::variant<Cidr, std::string> parse_cidr(std::string_view text) {
  if (text.empty() || text.size() > 64) {
    return std::string("must be an address range such as \"10.0.0.0/8\" or \"fd00::/8\"");
  }
  const auto slash = text.find('/');
  const std::string address_text(text.substr(0, slash));
  boost::system::error_code ec;
  const auto address = ip::make_address(address_text, ec);
  if (ec || address_text.find('%') != std::string::npos) {
    return fmt::format("\"{}\" is not an IP address", address_text.substr(0, 64));
  }
  const unsigned max = address.is_v4() ? 32 : 128;
  unsigned prefix = max;
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::string("has no valid prefix length");
    prefix = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::string("has no valid prefix length");
      prefix = prefix * 10 + static_cast<unsigned>(c - '0');
    }
    if (prefix > max) return fmt::format("has a prefix longer than {} bits", max);
  }
  return Cidr{address, prefix};
}

AddressPolicy::AddressPolicy(bool deny_host_addresses) {
  if (deny_host_addresses) host_addresses_ = host_addresses();
}

std::optional<std::string> AddressPolicy::refusal(const ip::address& candidate) const {
  const ip::address a = effective(candidate);
  for (const auto& b : kBuiltins) {
    const auto range = std::get<Cidr>(parse_cidr(b.cidr));
    if (range.contains(a)) return std::string(b.why);
  }
  const std::string text = a.to_string();
  if (std::find(host_addresses_.begin(), host_addresses_.end(), text) != host_addresses_.end() ||
      std::find(host_addresses_.begin(), host_addresses_.end(), candidate.to_string()) !=
          host_addresses_.end()) {
    return std::string("an address of the worker's host");
  }
  for (const auto& range : denied_) {
    if (!range.contains(a)) continue;
    const bool excepted = std::any_of(excepted_.begin(), excepted_.end(),
                                      [&](const Cidr& e) { return e.contains(a); });
    if (!excepted) return fmt::format("denied by the operator ({})", range.text());
  }
  return std::nullopt;
}

}  // namespace tamma::egress
