#pragma once
// The target of a request a client sends the proxy for a plain http:// URL (the absolute form,
// "GET http://host:port/path HTTP/1.1", RFC 9112 section 3.2.2): pure, for the proxy and its
// fuzz target. Beast parses the request head; this only takes its target apart.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tamma::egress {

struct AbsoluteHttpTarget {
  std::string authority;  // as sent, "host:port" or "host" (for the Host header)
  std::string host;       // without brackets, not normalised
  std::uint16_t port = 80;
  std::string path;  // the origin form for the server: "/path?query", at least "/"
};

// nullopt unless `target` is "http://" + an authority without user information + an optional
// path; the fragment, if a client sent one, stays in the path as sent.
std::optional<AbsoluteHttpTarget> parse_absolute_http(std::string_view target);

}  // namespace tamma::egress
