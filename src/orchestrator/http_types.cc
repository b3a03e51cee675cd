#include "orchestrator/http_types.h"

namespace tamma::orchestrator {

Response Response::json(unsigned status, const nlohmann::json& body) {
  Response r;
  r.status = status;
  // Replacement instead of a throw: a result document with stray bytes must still be shown.
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

Response Response::no_content() {
  Response r;
  r.status = 204;
  r.content_type.clear();
  return r;
}

Response Response::error(unsigned status, const wire::ErrorBody& body) {
  return json(status, wire::to_json(body));
}

HttpError::HttpError(unsigned status, std::string code, const std::string& message)
    : Error(ErrorKind::kConfig, code, message), status_(status) {
  body_.code = std::move(code);
  body_.message = message;
}

HttpError::HttpError(unsigned status, wire::ErrorBody body)
    : Error(ErrorKind::kConfig, body.code, body.message), status_(status), body_(std::move(body)) {}

std::optional<std::string> url_decode(std::string_view text) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      int hi = hex(text[i + 1]);
      int lo = hex(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::pair<std::string, std::map<std::string, std::string>> split_target(std::string_view target) {
  std::map<std::string, std::string> query;
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
      auto amp = rest.find('&');
      std::string_view pair = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
      if (pair.empty()) continue;
      auto eq = pair.find('=');
      auto key = url_decode(pair.substr(0, eq));
      auto value =
          url_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
      if (!key || !value) {
        throw HttpError(400, "invalid_query", "malformed percent-escape in the query string");
      }
      query[*key] = *value;
    }
  }
  auto decoded = url_decode(path);
  if (!decoded) throw HttpError(400, "invalid_path", "malformed percent-escape in the path");
  return {std::string(path), std::move(query)};
}

}  // namespace tamma::orchestrator
