#include "egress/http_target.h"

#include "egress/destination.h"

namespace tamma::egress {

std::optional<AbsoluteHttpTarget> parse_absolute_http(std::string_view target) {
  constexpr std::string_view kScheme = "http://";
  if (target.size() <= kScheme.size() || target.size() > 8192) return std::nullopt;
  // The scheme is case-insensitive (RFC 3986 section 3.1).
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    const char c = target[i];
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower != kScheme[i]) return std::nullopt;
  }
  const std::string_view rest = target.substr(kScheme.size());
  const auto path_start = rest.find_first_of("/?#");
  AbsoluteHttpTarget out;
  out.authority = std::string(rest.substr(0, path_start));
  out.path = path_start == std::string_view::npos ? "/" : std::string(rest.substr(path_start));
  if (out.path.front() != '/') out.path.insert(out.path.begin(), '/');
  if (out.authority.empty() || out.authority.find('@') != std::string::npos) return std::nullopt;
  const bool bracketed = out.authority.front() == '[';
  const auto last_colon = out.authority.rfind(':');
  const bool has_port = bracketed ? out.authority.back() != ']' : last_colon != std::string::npos;
  if (has_port) {
    auto split = split_authority(out.authority);
    if (!split) return std::nullopt;
    out.host = split->host;
    out.port = split->port;
  } else if (bracketed) {
    out.host = out.authority.substr(1, out.authority.size() - 2);
  } else {
    out.host = out.authority;
  }
  if (out.host.empty()) return std::nullopt;
  return out;
}

}  // namespace tamma::egress
