#include "egress/socks5.h"

#include <arpa/inet.h>

namespace tamma::egress::socks5 {

Greeting parse_greeting(std::span<const unsigned char> b) {
  Greeting g;
  if (b.size() < 2) return g;
  if (b[0] != kVersion || b[1] == 0) {
    g.state = Parse::kBad;
    return g;
  }
  const std::size_t total = 2 + static_cast<std::size_t>(b[1]);
  if (b.size() < total) return g;
  for (std::size_t i = 2; i < total; ++i) g.no_auth_offered = g.no_auth_offered || b[i] == 0;
  g.state = Parse::kDone;
  g.consumed = total;
  return g;
}

Request parse_request(std::span<const unsigned char> b) {
  Request r;
  if (b.size() < 5) return r;
  if (b[0] != kVersion || b[2] != 0) {
    r.state = Parse::kBad;
    return r;
  }
  r.command = b[1];
  r.address_type = b[3];
  std::size_t address_length = 0;
  std::size_t start = 4;
  switch (r.address_type) {
    case 1:
      address_length = 4;
      break;
    case 4:
      address_length = 16;
      break;
    case 3:
      address_length = b[4];
      start = 5;
      if (address_length == 0) {
        r.state = Parse::kBad;
        r.error = Reply::kHostUnreachable;
        return r;
      }
      break;
    default:
      r.state = Parse::kBad;
      r.error = Reply::kAddressTypeNotSupported;
      return r;
  }
  const std::size_t total = start + address_length + 2;
  if (b.size() < total) return r;
  const unsigned char* address = b.data() + start;
  if (r.address_type == 3) {
    r.host.assign(reinterpret_cast<const char*>(address), address_length);
  } else {
    char text[INET6_ADDRSTRLEN];
    ::inet_ntop(r.address_type == 1 ? AF_INET : AF_INET6, address, text, sizeof text);
    r.host = text;
  }
  r.port = static_cast<std::uint16_t>((b[total - 2] << 8) | b[total - 1]);
  r.consumed = total;
  r.state = Parse::kDone;
  return r;
}

std::string reply(Reply code) {
  return std::string{static_cast<char>(kVersion), static_cast<char>(code), 0, 1, 0, 0, 0, 0, 0, 0};
}

}  // namespace tamma::egress::socks5
