#pragma once
// SOCKS5 (RFC 1928) as the egress proxy speaks it: no authentication, CONNECT only, with the
// destination as a name (the client's "remote resolution", socks5h://) or an address. Pure
// functions over the bytes received so far, for the proxy and its fuzz target.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace tamma::egress::socks5 {

inline constexpr unsigned char kVersion = 5;

// Reply codes (RFC 1928 section 6).
enum class Reply : unsigned char {
  kSucceeded = 0,
  kGeneralFailure = 1,
  kNotAllowed = 2,
  kNetworkUnreachable = 3,
  kHostUnreachable = 4,
  kConnectionRefused = 5,
  kTtlExpired = 6,
  kCommandNotSupported = 7,
  kAddressTypeNotSupported = 8,
};

enum class Parse { kNeedMore, kDone, kBad };

// VER NMETHODS METHODS...: whether "no authentication" (0) is offered.
struct Greeting {
  Parse state = Parse::kNeedMore;
  std::size_t consumed = 0;
  bool no_auth_offered = false;
};
Greeting parse_greeting(std::span<const unsigned char> bytes);

// VER CMD RSV ATYP DST.ADDR DST.PORT.
struct Request {
  Parse state = Parse::kNeedMore;
  std::size_t consumed = 0;
  unsigned char command = 0;       // 1 CONNECT, 2 BIND, 3 UDP ASSOCIATE
  unsigned char address_type = 0;  // 1 IPv4, 3 name, 4 IPv6
  std::string host;                // the name as sent, or the address's text
  std::uint16_t port = 0;
  Reply error = Reply::kGeneralFailure;  // with kBad: what to answer
};
Request parse_request(std::span<const unsigned char> bytes);

// The 10-byte reply with a 0.0.0.0:0 bound address (clients ignore it for CONNECT).
std::string reply(Reply code);

}  // namespace tamma::egress::socks5
