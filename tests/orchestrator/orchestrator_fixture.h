#pragma once
// A real orchestrator on 127.0.0.1:<ephemeral> with its own SQLite file in a temporary
// directory, and real HTTP clients (libcurl) for the admin and for workers. Every answer the
// server sends is recorded and, when the TestServer goes, checked against docs/openapi.yaml
// (contract.h): each API test is a contract test too.

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "contract.h"
#include "orchestrator/http_client.h"
#include "orchestrator/server.h"
#include "support/test_support.h"

namespace tamma::orchestrator::testing {

using nlohmann::json;
using namespace std::chrono_literals;

inline constexpr const char* kAdminToken = "admin-token-for-tests-0123456789";
inline constexpr const char* kRegistrationToken = "registration-token-for-tests-0123456789";

// A minimal valid task spec of `type`.
inline json task_spec(const std::string& type = "command", const std::string& script = "true") {
  json spec = {{"type", type}, {"steps", json::array({{{"name", "main"}, {"run", script}}})}};
  // The report-reading types need to be told where their reports are.
  if (type == "test") spec["reports"] = json::array({"reports/*.xml"});
  if (type == "security_scan") spec["sarif"] = "scan.sarif";
  return spec;
}

inline json submit_body(const json& spec, int priority = 0, int max_retries = 3,
                        const json& labels = json::object()) {
  return {{"task", spec}, {"priority", priority}, {"maxRetries", max_retries}, {"labels", labels}};
}

inline json capabilities(const json& types = json::array({"command"}),
                         const json& labels = json::object(), int slots = 1) {
  return {{"taskTypes", types},
          {"labels", labels},
          {"slots", slots},
          {"resources", {{"memoryBytes", 1 << 30}, {"cpus", 2}, {"diskBytes", 1 << 30}}},
          {"version", "test"},
          {"platform", {{"os", "linux"}, {"arch", "x86_64"}, {"kernel", "6.1"}}}};
}

// Waits (up to `limit`) until the server shows `n` parked polls on /metrics; false if never.
inline bool wait_for_parked_polls(HttpClient& admin, int n,
                                  std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const std::string want = "tamma_waiting_polls " + std::to_string(n) + "\n";
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (admin.get("/metrics").body.find(want) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// A registered worker speaking the protocol over its own connection.
class TestWorker {
 public:
  TestWorker(const std::string& url, std::string id, std::string token)
      : id(std::move(id)), token(std::move(token)), http(url, this->token) {}

  // POST /poll; 200 with the assignment, or 204.
  HttpResult poll(int wait_ms) {
    return http.request("POST", "/api/v1/workers/" + id + "/poll?waitMs=" + std::to_string(wait_ms),
                        {}, {}, std::chrono::milliseconds(wait_ms + 10000));
  }
  HttpResult heartbeat(const json& leases, bool draining = false) {
    return http.post_json("/api/v1/workers/" + id + "/heartbeat",
                          {{"leases", leases}, {"draining", draining}});
  }
  HttpResult task_post(const std::string& task_id, const std::string& what, const json& body) {
    return http.post_json("/api/v1/tasks/" + task_id + "/" + what, body);
  }
  HttpResult complete(const std::string& task_id, int attempt, const std::string& lease,
                      const std::string& status = "succeeded") {
    return task_post(task_id, "complete",
                     {{"attempt", attempt},
                      {"leaseId", lease},
                      {"result", {{"status", status}, {"taskId", task_id}}}});
  }
  HttpResult fail(const std::string& task_id, int attempt, const std::string& lease,
                  bool retryable) {
    return task_post(
        task_id, "fail",
        {{"attempt", attempt},
         {"leaseId", lease},
         {"error", {{"code", "boom"}, {"message", "it broke"}, {"retryable", retryable}}}});
  }
  HttpResult append_raw(const std::string& task_id, int attempt, const std::string& lease,
                        std::uint64_t offset, const std::string& data) {
    return http.request("POST",
                        "/api/v1/tasks/" + task_id + "/logs?attempt=" + std::to_string(attempt) +
                            "&leaseId=" + lease + "&offset=" + std::to_string(offset),
                        data, {"Content-Type: application/octet-stream"});
  }

  std::string id;
  std::string token;
  HttpClient http;
};

class TestServer {
 public:
  explicit TestServer(std::function<void(ServerConfig&)> tweak = {}) {
    spdlog::set_level(spdlog::level::warn);
    config_.listen_host = "127.0.0.1";
    config_.listen_port = 0;
    config_.db_path = dir_.path() / "db.sqlite";
    config_.data_dir = dir_.path() / "data";
    config_.admin_token = kAdminToken;
    config_.registration_token = kRegistrationToken;
    config_.poll_timeout = 5s;
    config_.lease_ttl = 30s;
    config_.heartbeat_interval = 10s;
    config_.retry_base = 50ms;
    config_.retry_max = 1s;
    config_.io_threads = 2;
    // ctest's orchestrator_io_on_core runs these suites again with the HTTP I/O on the core
    // thread (--threads 0, ADR 0039).
    if (const char* threads = std::getenv("TAMMA_TEST_ORCHESTRATOR_IO_THREADS")) {
      config_.io_threads = std::stoi(threads);
    }
    if (tweak) tweak(config_);
    // After the tweak, so a test's own observer still sees every answer too.
    config_.observe_answer = [recorder = recorder_,
                              own = config_.observe_answer](const AnsweredRequest& answer) {
      recorder->record(answer);
      if (own) own(answer);
    };
    start();
  }
  ~TestServer() {
    stop();
    // Every answer of this server, checked against docs/openapi.yaml: one ADD_FAILURE each
    // that does not conform.
    recorder_->report_nonconforming();
  }

  void start() {
    std::ostringstream announce;
    server_ = std::make_unique<Server>(config_, announce);
    server_->start();
    url_ = std::string(config_.tls_cert.empty() ? "http" : "https") +
           "://127.0.0.1:" + std::to_string(server_->port());
  }
  void stop() {
    if (server_) server_->shutdown();
    server_.reset();
  }
  // Same database file, a fresh process state, a new port.
  void restart() {
    stop();
    start();
  }

  [[nodiscard]] const std::string& url() const { return url_; }
  [[nodiscard]] const ServerConfig& config() const { return config_; }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_.path(); }
  // The answers sent so far (checked against the documentation at destruction).
  [[nodiscard]] contract::AnswerRecorder& answers() { return *recorder_; }
  std::unique_ptr<HttpClient> admin() { return std::make_unique<HttpClient>(url_, kAdminToken); }
  std::unique_ptr<HttpClient> anonymous() { return std::make_unique<HttpClient>(url_, ""); }

  std::unique_ptr<TestWorker> register_worker(const json& caps = capabilities()) {
    HttpClient http(url_, kRegistrationToken);
    auto r = http.post_json("/api/v1/workers/register", {{"capabilities", caps}});
    EXPECT_EQ(r.status, 201) << r.body;
    auto body = r.json();
    return std::make_unique<TestWorker>(url_, body.at("workerId").get<std::string>(),
                                        body.at("token").get<std::string>());
  }

  // Submits through the admin API; returns the new task id.
  std::string submit(const json& body) {
    auto r = admin()->post_json("/api/v1/tasks", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return r.json().at("id").get<std::string>();
  }

  json task(const std::string& id) {
    auto r = admin()->get("/api/v1/tasks/" + id);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json();
  }

  // Polls the admin view until `predicate` holds or `limit` passes.
  json wait_task(const std::string& id, const std::function<bool(const json&)>& predicate,
                 std::chrono::milliseconds limit = 10s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    json t = task(id);
    while (!predicate(t) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
      t = task(id);
    }
    return t;
  }

 private:
  tamma::testing::TempDir dir_;
  std::shared_ptr<contract::AnswerRecorder> recorder_ =
      std::make_shared<contract::AnswerRecorder>();
  ServerConfig config_;
  std::unique_ptr<Server> server_;
  std::string url_;
};

// A task a worker holds: what every fenced write names.
struct Held {
  std::string task_id;
  int attempt = 0;
  std::string lease_id;
};

// Submits a plain task and has `worker` take it.
inline Held take(TestServer& server, TestWorker& worker) {
  server.submit(submit_body(task_spec()));
  auto r = worker.poll(2000);
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return {};
  auto j = r.json();
  return {j["taskId"], j["attempt"], j["leaseId"]};
}

inline std::string error_code(const HttpResult& r) {
  try {
    return r.json().at("error").at("code").get<std::string>();
  } catch (const std::exception&) {
    return "<no error body: " + r.body + ">";
  }
}

}  // namespace tamma::orchestrator::testing
