#include "orchestrator/router.h"

#include <stdexcept>

namespace tamma::orchestrator {
namespace {

template <typename T>
std::vector<T> split_path(std::string_view path) {
  std::vector<T> out;
  std::size_t start = 1;  // paths begin with '/'
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    out.emplace_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return out;
}

}  // namespace

void Router::add(http::verb method, std::string pattern, BodyKind body, Access access,
                 Handler handler, Runs runs) {
  if (runs == Runs::kEdge && access != Access::kPublic && access != Access::kAdmin) {
    throw std::logic_error("edge route " + pattern + ": a worker token needs the core to check");
  }
  split_.push_back(split_path<std::string>(pattern));
  routes_.push_back({method, std::move(pattern), body, access, std::move(handler), runs});
}

bool Router::match_pattern(const std::vector<std::string>& pattern,
                           const std::vector<std::string_view>& segments,
                           std::vector<std::string>* params) {
  if (pattern.size() != segments.size()) return false;
  std::vector<std::string> found;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (!pattern[i].empty() && pattern[i].front() == '{') {
      auto decoded = url_decode(segments[i]);
      if (!decoded || decoded->empty()) return false;
      found.push_back(std::move(*decoded));
    } else if (pattern[i] != segments[i]) {
      return false;
    }
  }
  if (params) *params = std::move(found);
  return true;
}

RouteMatch Router::match(http::verb method, std::string_view path) const {
  RouteMatch m;
  if (path.empty() || path.front() != '/') return m;
  auto segments = split_path<std::string_view>(path);
  const http::verb wanted = method == http::verb::head ? http::verb::get : method;
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    std::vector<std::string> params;
    if (!match_pattern(split_[i], segments, &params)) continue;
    if (routes_[i].method == wanted) {
      m.route = &routes_[i];
      m.params = std::move(params);
      m.allowed.clear();
      return m;
    }
    m.allowed.push_back(routes_[i].method);
    if (routes_[i].method == http::verb::get) m.allowed.push_back(http::verb::head);
  }
  return m;
}

}  // namespace tamma::orchestrator
