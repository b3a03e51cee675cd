#include "egress/destination.h"

#include <arpa/inet.h>

#include <charconv>

#include <fmt/format.h>

namespace tamma::egress {
namespace {

constexpr std::size_t kMaxName = 253;
constexpr std::size_t kMaxLabel = 63;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// RFC 1123 host names, with "_" allowed as in real DNS names (_dmarc, service records).
bool is_dns_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxName) return false;
  std::size_t label = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '.') {
      if (label == 0) return false;
      if (name[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
    if (label == 0 && c == '-') return false;
    if (++label > kMaxLabel) return false;
  }
  return label > 0 && name.back() != '-';
}

// The canonical text of an address literal, or nullopt. Only the strict dotted quad: inet_pton
// refuses "010.1.1.1" and "1.1" where inet_aton would read octal and short forms.
std::optional<std::string> canonical_address(std::string_view text, bool& ipv6) {
  if (text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string copy(text);
  unsigned char bytes[16];
  char out[INET6_ADDRSTRLEN];
  if (::inet_pton(AF_INET, copy.c_str(), bytes) == 1) {
    ipv6 = false;
    return std::string(::inet_ntop(AF_INET, bytes, out, sizeof out));
  }
  if (::inet_pton(AF_INET6, copy.c_str(), bytes) == 1) {
    ipv6 = true;
    return std::string(::inet_ntop(AF_INET6, bytes, out, sizeof out));
  }
  return std::nullopt;
}

std::optional<std::uint16_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (value == 0 || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

bool printable(std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

// Quotes hostile text for an error message, cut short.
std::string quote(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text.substr(0, 80)) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > 80) out += "...";
  return out + "\"";
}

}  // namespace

std::optional<Authority> split_authority(std::string_view text) {
  if (text.empty() || text.size() > kMaxDestinationLength) return std::nullopt;
  std::string_view host;
  std::string_view port;
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    // An IPv6 literal must come in brackets: "::1:80" is ambiguous.
    if (host.find(':') != std::string_view::npos) return std::nullopt;
  }
  auto number = parse_port(port);
  if (host.empty() || !number) return std::nullopt;
  return Authority{std::string(host), *number};
}

std::optional<Host> normalise_host(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host.size() > kMaxName + 1) return std::nullopt;
  bool ipv6 = false;
  if (auto address = canonical_address(host, ipv6)) return Host{*address, true};
  std::string name;
  name.reserve(host.size());
  for (char c : host) name += lower(c);
  if (name.back() == '.') name.pop_back();
  if (!is_dns_name(name)) return std::nullopt;
  // Names that inet_aton reads as an address ("127.1", "2130706433", "0x7f.1"): glibc's
  // getaddrinfo does, so they would be a way around address entries. Never names.
  in_addr ignored{};
  if (::inet_aton(name.c_str(), &ignored) != 0) return std::nullopt;
  return Host{std::move(name), false};
}

std::variant<Destination, std::string> parse_destination(std::string_view text,
                                                         DestinationOptions options) {
  if (text.empty()) return std::string("must be \"host:port\", not an empty string");
  if (text.size() > kMaxDestinationLength) {
    return fmt::format("is {} characters long; at most {}", text.size(), kMaxDestinationLength);
  }
  if (!printable(text)) {
    return fmt::format("{} has spaces or control characters", quote(text));
  }
  if (text.find("://") != std::string_view::npos || text.find('/') != std::string_view::npos) {
    return fmt::format("{} must be \"host:port\", without a scheme or path", quote(text));
  }
  Destination d;
  std::string_view host;
  std::string_view port;
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fmt::format("{} must be \"[IPv6]:port\"", quote(text));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fmt::format("{} has no port: write \"{}:443\"", quote(text), text);
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fmt::format("{}: an IPv6 address must be in brackets, \"[::1]:443\"", quote(text));
    }
  }
  if (port == "*") {
    if (!options.allow_any_port) {
      return fmt::format("{} must name one port (1 to 65535), not \"*\"", quote(text));
    }
    d.port_any = true;
  } else if (auto number = parse_port(port)) {
    d.port = *number;
  } else {
    return fmt::format("{} has no valid port (1 to 65535)", quote(text));
  }
  if (host.starts_with("*.")) {
    auto suffix = normalise_host(host.substr(2));
    if (!suffix || suffix->is_address) {
      return fmt::format("{}: \"*.\" must be followed by a DNS name", quote(text));
    }
    // "*.com" would allow half the internet; a suffix needs at least two labels.
    if (suffix->text.find('.') == std::string::npos) {
      return fmt::format("{}: a wildcard needs a name of two labels or more after \"*.\"",
                         quote(text));
    }
    d.kind = Destination::Kind::kWildcard;
    d.host = suffix->text;
    return d;
  }
  if (host.find('*') != std::string_view::npos) {
    return fmt::format("{}: \"*\" is only allowed as the first label, \"*.example.com\"",
                       quote(text));
  }
  bool ipv6 = false;
  if (auto address = canonical_address(host, ipv6)) {
    if (ipv6 && text.front() != '[') {
      return fmt::format("{}: an IPv6 address must be in brackets", quote(text));
    }
    d.kind = Destination::Kind::kAddress;
    d.host = *address;
    d.ipv6 = ipv6;
    return d;
  }
  if (text.front() == '[') return fmt::format("{}: not an IPv6 address", quote(text));
  auto name = normalise_host(host);
  if (!name) return fmt::format("{} is not a valid DNS name or IP address", quote(host));
  d.kind = Destination::Kind::kName;
  d.host = name->text;
  return d;
}

std::string Destination::text() const {
  std::string h;
  switch (kind) {
    case Kind::kName:
      h = host;
      break;
    case Kind::kWildcard:
      h = "*." + host;
      break;
    case Kind::kAddress:
      h = ipv6 ? "[" + host + "]" : host;
      break;
  }
  return h + ":" + (port_any ? std::string("*") : std::to_string(port));
}

bool Destination::matches(std::string_view request_host, std::uint16_t request_port) const {
  if (!port_any && request_port != port) return false;
  auto normal = normalise_host(request_host);
  if (!normal) return false;
  switch (kind) {
    case Kind::kAddress:
      return normal->is_address && normal->text == host;
    case Kind::kName:
      return !normal->is_address && normal->text == host;
    case Kind::kWildcard:
      return !normal->is_address && normal->text.size() > host.size() + 1 &&
             normal->text.ends_with(host) &&
             normal->text[normal->text.size() - host.size() - 1] == '.';
  }
  return false;
}

bool Destination::covers(const Destination& other) const {
  if (!port_any && (other.port_any || other.port != port)) return false;
  switch (kind) {
    case Kind::kAddress:
    case Kind::kName:
      return other.kind == kind && other.host == host;
    case Kind::kWildcard:
      if (other.kind == Kind::kAddress) return false;
      // *.a.com covers x.a.com and *.x.a.com, not a.com nor *.a.com's own apex.
      if (other.kind == Kind::kWildcard && other.host == host) return true;
      return other.host.size() > host.size() + 1 && other.host.ends_with(host) &&
             other.host[other.host.size() - host.size() - 1] == '.';
  }
  return false;
}

}  // namespace tamma::egress
