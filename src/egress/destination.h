#pragma once
// One entry of a network allow-list, "host:port": what a task (its spec's "network.allow") or
// the operator (the configuration's "networkPolicy.allow") names as a destination.
//
//   registry.npmjs.org:443      that name, that port
//   *.githubusercontent.com:443 any name below githubusercontent.com (not the name itself)
//   10.0.0.5:5432               that address, given as a literal (no name resolves to it)
//   [2001:db8::5]:443           an IPv6 literal, in brackets
//   *.example.com:*             any port: only in the operator's policy (port_any)
//
// Names are matched without their case and trailing dot. A name entry never matches an
// address literal nor the other way round: a task allowed "registry.npmjs.org:443" that asks
// for the registry's IP address is refused, since the proxy cannot know which name it meant.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace tamma::egress {

// Longest entry text accepted: a DNS name (253) with "*.", brackets and a port.
inline constexpr std::size_t kMaxDestinationLength = 270;

struct Destination {
  enum class Kind { kName, kWildcard, kAddress };
  Kind kind = Kind::kName;
  // kName: the lower-case name without a trailing dot; kWildcard: the suffix after "*.";
  // kAddress: the address in its canonical text (IPv6 without brackets).
  std::string host;
  std::uint16_t port = 0;  // 0 with port_any
  bool port_any = false;
  bool ipv6 = false;  // kAddress only

  // The canonical entry text, e.g. "*.example.com:443", "[::1]:80".
  [[nodiscard]] std::string text() const;
  // Whether a request for host:port falls under this entry. `host` is as a client sent it
  // (a name or an address literal, brackets optional); it is normalised the same way.
  [[nodiscard]] bool matches(std::string_view host, std::uint16_t port) const;
  // Whether everything `other` admits is admitted by this entry (the operator's bound).
  [[nodiscard]] bool covers(const Destination& other) const;
  bool operator==(const Destination&) const = default;
};

struct DestinationOptions {
  bool allow_any_port = false;  // "host:*"
};

// Parses an entry; the error is a sentence about the text (quoted), without a JSON path.
std::variant<Destination, std::string> parse_destination(std::string_view text,
                                                         DestinationOptions options = {});

// A host as clients send it (CONNECT's authority, SOCKS5's name or address, an URL's host),
// normalised: lower case, no trailing dot, an address literal in canonical text and without
// brackets. nullopt when it is neither a valid DNS name nor an address literal.
struct Host {
  std::string text;
  bool is_address = false;
};
std::optional<Host> normalise_host(std::string_view host);

// Splits "host:port" / "[v6]:port" (an authority without user info); nullopt when malformed
// or the port is not 1..65535.
struct Authority {
  std::string host;  // without brackets, not yet normalised
  std::uint16_t port = 0;
};
std::optional<Authority> split_authority(std::string_view text);

}  // namespace tamma::egress
