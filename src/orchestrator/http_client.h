#pragma once
// A small blocking HTTP client on libcurl for the admin CLI, the tests and the benchmarks: one
// connection reused across calls (keep-alive), bearer token on every request.

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

typedef void CURL;

namespace tamma::orchestrator {

struct HttpResult {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names in lower case

  [[nodiscard]] nlohmann::json json() const;
  [[nodiscard]] std::string header(const std::string& lower_name) const;
};

class HttpClient {
 public:
  // `base_url` like "http://127.0.0.1:8080"; `token` may be empty (no Authorization header).
  HttpClient(std::string base_url, std::string token);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Throws Error(kInfrastructure, "orchestrator_unreachable") when no HTTP answer came back.
  HttpResult request(std::string_view method, const std::string& path, const std::string& body = {},
                     const std::vector<std::string>& headers = {},
                     std::chrono::milliseconds timeout = std::chrono::seconds(60));
  HttpResult get(const std::string& path,
                 std::chrono::milliseconds timeout = std::chrono::seconds(60));
  HttpResult post_json(const std::string& path, const nlohmann::json& body,
                       const std::vector<std::string>& headers = {},
                       std::chrono::milliseconds timeout = std::chrono::seconds(60));

  void set_token(std::string token) { token_ = std::move(token); }
  // PEM CA certificates that verify an https:// orchestrator; empty: the system's store.
  void set_ca_file(std::string file) { ca_file_ = std::move(file); }
  [[nodiscard]] const std::string& base_url() const { return base_url_; }

 private:
  std::string base_url_;
  std::string token_;
  std::string ca_file_;
  CURL* curl_;
};

}  // namespace tamma::orchestrator
