#include "orchestrator/http_client.h"
#include "common/json_parse.h"

#include <curl/curl.h>

#include <algorithm>
#include <mutex>

#include "common/error.h"

namespace tamma::orchestrator {
namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { ::curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  std::string_view line(data, size * count);
  auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() &&
           (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) {
      value.remove_suffix(1);
    }
    (*static_cast<std::map<std::string, std::string>*>(user))[name] = std::string(value);
  }
  return size * count;
}

}  // namespace

nlohmann::json HttpResult::json() const {
  try {
    return parse_json_text(body);
  } catch (const JsonTextError& e) {
    throw Error(ErrorKind::kInfrastructure, "malformed_answer",
                "the orchestrator answered " + std::to_string(status) +
                    " with a body that is not JSON: " + e.what());
  }
}

std::string HttpResult::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

HttpClient::HttpClient(std::string base_url, std::string token)
    : base_url_(std::move(base_url)), token_(std::move(token)) {
  global_init();
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
  curl_ = ::curl_easy_init();
  if (curl_ == nullptr) {
    throw Error(ErrorKind::kInfrastructure, "curl_init_failed", "libcurl could not start");
  }
}

HttpClient::~HttpClient() { ::curl_easy_cleanup(curl_); }

HttpResult HttpClient::request(std::string_view method, const std::string& path,
                               const std::string& body, const std::vector<std::string>& headers,
                               std::chrono::milliseconds timeout) {
  HttpResult result;
  ::curl_easy_reset(curl_);
  std::string url = base_url_ + path;
  std::string method_text(method);
  ::curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
  ::curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, method_text.c_str());
  ::curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
  ::curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  ::curl_easy_setopt(curl_, CURLOPT_TCP_NODELAY, 1L);
  if (!ca_file_.empty()) ::curl_easy_setopt(curl_, CURLOPT_CAINFO, ca_file_.c_str());
  ::curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, on_body);
  ::curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &result.body);
  ::curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, on_header);
  ::curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &result.headers);
  if (method == "HEAD") ::curl_easy_setopt(curl_, CURLOPT_NOBODY, 1L);
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    ::curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.data());
    ::curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_slist* list = nullptr;
  std::string auth;
  if (!token_.empty()) {
    auth = "Authorization: Bearer " + token_;
    list = ::curl_slist_append(list, auth.c_str());
  }
  for (const auto& h : headers) list = ::curl_slist_append(list, h.c_str());
  ::curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, list);
  CURLcode rc = ::curl_easy_perform(curl_);
  ::curl_slist_free_all(list);
  if (rc != CURLE_OK) {
    throw Error(ErrorKind::kInfrastructure, "orchestrator_unreachable",
                std::string(method) + " " + url + ": " + ::curl_easy_strerror(rc),
                /*retryable=*/true);
  }
  ::curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &result.status);
  return result;
}

HttpResult HttpClient::get(const std::string& path, std::chrono::milliseconds timeout) {
  return request("GET", path, {}, {}, timeout);
}

HttpResult HttpClient::post_json(const std::string& path, const nlohmann::json& body,
                                 const std::vector<std::string>& headers,
                                 std::chrono::milliseconds timeout) {
  std::vector<std::string> all = headers;
  all.emplace_back("Content-Type: application/json");
  return request("POST", path, body.dump(), all, timeout);
}

}  // namespace tamma::orchestrator
