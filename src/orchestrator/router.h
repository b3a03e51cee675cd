#pragma once
// Maps (method, path) to a handler: "/api/v1/tasks/{id}/logs" patterns, 404 for an unknown
// path, 405 with the allowed methods for a known path and another method.

#include <string>
#include <vector>

#include "orchestrator/http_types.h"

namespace tamma::orchestrator {

// How the HTTP layer reads the body before the handler runs.
enum class BodyKind {
  kSmall,   // into memory, up to the JSON body limit
  kUpload,  // streamed to a file, up to the artifact limit
};

struct Route {
  http::verb method;
  std::string pattern;
  BodyKind body = BodyKind::kSmall;
  Handler handler;
};

struct RouteMatch {
  const Route* route = nullptr;     // null: see `allowed`
  std::vector<std::string> params;  // percent-decoded
  std::vector<http::verb> allowed;  // non-empty: the path exists with these methods
};

class Router {
 public:
  void add(http::verb method, std::string pattern, BodyKind body, Handler handler);
  [[nodiscard]] RouteMatch match(http::verb method, std::string_view path) const;

 private:
  static bool match_pattern(const std::vector<std::string>& pattern,
                            const std::vector<std::string_view>& segments,
                            std::vector<std::string>* params);
  std::vector<Route> routes_;
  std::vector<std::vector<std::string>> split_;  // each route's pattern segments
};

}  // namespace tamma::orchestrator
