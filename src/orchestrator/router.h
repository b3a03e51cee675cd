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

// Who may call a route, checked from the headers before a byte of the body is read: an
// unauthenticated client can make the server hold neither memory nor disk. Handlers still make
// their own, finer checks (a worker reaches only its own worker's endpoints).
enum class Access {
  kPublic,         // no token (/health)
  kAdmin,          // the admin token
  kRegistration,   // the shared registration token
  kWorker,         // any registered worker's own token
  kAdminOrWorker,  // either
};

// Where the handler runs. Nearly everything runs on the core thread, which owns the store. An
// edge route runs on the I/O thread that read it and touches nothing of the core's: /health and
// /ready must answer while the core thread waits on a stalled disk. Its access can only be
// kPublic or kAdmin, which are checked against fixed token hashes without the core.
enum class Runs { kCore, kEdge };

struct Route {
  http::verb method;
  std::string pattern;
  BodyKind body = BodyKind::kSmall;
  Access access = Access::kAdmin;
  Handler handler;
  Runs runs = Runs::kCore;
};

struct RouteMatch {
  const Route* route = nullptr;     // null: see `allowed`
  std::vector<std::string> params;  // percent-decoded
  std::vector<http::verb> allowed;  // non-empty: the path exists with these methods
};

class Router {
 public:
  void add(http::verb method, std::string pattern, BodyKind body, Access access, Handler handler,
           Runs runs = Runs::kCore);
  // HEAD is matched as GET: the answer is GET's without its body.
  [[nodiscard]] RouteMatch match(http::verb method, std::string_view path) const;

 private:
  static bool match_pattern(const std::vector<std::string>& pattern,
                            const std::vector<std::string_view>& segments,
                            std::vector<std::string>* params);
  std::vector<Route> routes_;
  std::vector<std::vector<std::string>> split_;  // each route's pattern segments
};

}  // namespace tamma::orchestrator
