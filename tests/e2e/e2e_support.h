#pragma once
// Real `tamma-orchestrator serve` and `tamma-worker start` processes on loopback for the suites
// that kill and restart them. The orchestrator is driven through its admin API, and what it
// recorded is read back from its database (its SQLite file, or the PostgreSQL cluster several
// replicas share), the one witness that survives every kill.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "orchestrator/http_client.h"
#include "orchestrator/store/sqlite.h"
#include "support/postgres_cluster.h"
#include "support/test_support.h"

namespace tamma::e2e {

using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

inline const std::string kOrchestratorBinary = TAMMA_ORCHESTRATOR_BINARY;
inline const std::string kWorkerBinary = TAMMA_WORKER_BINARY;
inline const std::string kAdminToken = "e2e-admin-token-0123456789abcdef";
inline const std::string kRegistrationToken = "e2e-registration-token-0123456789abcdef";

using tamma::testing::free_port;

// Heartbeats every 500 ms, leases lost after 2 s without one, retries after 100 ms.
inline std::vector<std::string> fast_orchestrator_flags() {
  return {"--heartbeat-interval", "500ms", "--lease-ttl",    "2s",
          "--retry-base",         "100ms", "--poll-timeout", "5s"};
}

// One orchestrator that keeps its port, database and data directory across kills and restarts.
// `db` is what --db gets: empty for a SQLite file of its own under `dir`, or a PostgreSQL
// connection string several replicas share (their `dir`, so their --data-dir, shared as well).
class OrchestratorProcess {
 public:
  OrchestratorProcess(std::filesystem::path dir, std::vector<std::string> flags,
                      std::string db = {})
      : dir_(std::move(dir)), flags_(std::move(flags)), db_(std::move(db)), port_(free_port()) {
    start();
  }
  ~OrchestratorProcess() {
    if (child_) kill();
  }

  void start() {
    std::vector<std::string> argv = {kOrchestratorBinary,
                                     "serve",
                                     "--listen",
                                     "127.0.0.1:" + std::to_string(port_),
                                     "--db",
                                     db_.empty() ? "sqlite:" + db_path().string() : db_,
                                     "--data-dir",
                                     (dir_ / "data").string()};
    argv.insert(argv.end(), flags_.begin(), flags_.end());
    child_ = std::make_unique<testing::ChildProcess>(
        argv, std::vector<std::string>{"TAMMA_ADMIN_TOKEN=" + kAdminToken,
                                       "TAMMA_REGISTRATION_TOKEN=" + kRegistrationToken});
    ASSERT_TRUE(child_->wait_for_output("listening on", 20s)) << "the orchestrator did not start";
    admin_ = std::make_unique<orchestrator::HttpClient>(url(), kAdminToken);
  }

  // SIGKILL: no goodbye, no flush beyond what SQLite already made durable.
  void kill() {
    child_->send_signal(SIGKILL);
    child_->wait(20s);
    child_.reset();
  }

  testing::ProcessResult stop() {
    child_->send_signal(SIGTERM);
    auto r = child_->wait(20s);
    child_.reset();
    return r;
  }

  void pump() {
    if (child_) child_->drain_output();
  }

  [[nodiscard]] bool running() const { return child_ != nullptr; }
  // What the process wrote to stderr so far (its log), for failure messages.
  [[nodiscard]] std::string log_so_far() const { return child_ ? child_->err_so_far() : ""; }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::filesystem::path db_path() const { return dir_ / "db.sqlite"; }

  // An admin request, retried while nothing answers (the orchestrator restarting).
  orchestrator::HttpResult admin(const std::string& method, const std::string& path,
                                 const std::string& body = {},
                                 std::vector<std::string> headers = {}) {
    const auto deadline = Clock::now() + 30s;
    for (;;) {
      try {
        if (!admin_) admin_ = std::make_unique<orchestrator::HttpClient>(url(), kAdminToken);
        return admin_->request(method, path, body, headers, 30s);
      } catch (const Error& e) {
        admin_.reset();  // a connection to the killed process is no use
        if (Clock::now() > deadline) throw;
        std::this_thread::sleep_for(100ms);
      }
    }
  }

  // Submits with an idempotency key, so a retry after a lost answer cannot create a twin.
  std::string submit(const json& spec, const std::string& key, int max_retries = 3) {
    json body = {{"task", spec}, {"maxRetries", max_retries}};
    auto r = admin("POST", "/api/v1/tasks", body.dump(),
                   {"Content-Type: application/json", "Idempotency-Key: " + key});
    EXPECT_TRUE(r.status == 201 || r.status == 200) << r.status << " " << r.body;
    return r.json().value("id", "");
  }

  json task(const std::string& id) {
    auto r = admin("GET", "/api/v1/tasks/" + id);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json();
  }

  std::string logs(const std::string& id) {
    return admin("GET", "/api/v1/tasks/" + id + "/logs").body;
  }

  // Waits until `until` holds for the task (50 ms apart), or `limit` passes.
  json wait_task(const std::string& id, const std::function<bool(const json&)>& until,
                 std::chrono::milliseconds limit = 30s) {
    const auto deadline = Clock::now() + limit;
    json t = task(id);
    while (!until(t) && Clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
      pump();
      t = task(id);
    }
    return t;
  }

  json workers() {
    auto r = admin("GET", "/api/v1/workers?all=1");
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json().at("workers");
  }

 private:
  std::filesystem::path dir_;
  std::vector<std::string> flags_;
  std::string db_;
  int port_;
  std::unique_ptr<testing::ChildProcess> child_;
  std::unique_ptr<orchestrator::HttpClient> admin_;
};

// Orchestrator replicas, each `tamma-orchestrator serve --db <conninfo>` on its own loopback
// port, on one database of a throwaway PostgreSQL cluster, sharing one --data-dir (artifacts
// are files there).
class PostgresReplicas {
 public:
  PostgresReplicas(testing::PostgresCluster& cluster, const std::string& database_prefix,
                   const std::filesystem::path& dir, std::size_t count,
                   const std::vector<std::string>& flags)
      : cluster_(cluster), database_(cluster.create_database(database_prefix)) {
    for (std::size_t i = 0; i < count; ++i) {
      nodes_.push_back(
          std::make_unique<OrchestratorProcess>(dir, flags, cluster.conninfo(database_)));
    }
  }

  OrchestratorProcess& operator[](std::size_t i) { return *nodes_[i]; }
  [[nodiscard]] std::size_t size() const { return nodes_.size(); }
  [[nodiscard]] const std::string& database() const { return database_; }
  // Every replica's URL, comma-separated, as `tamma-worker start --orchestrator` takes them.
  [[nodiscard]] std::string urls() const {
    std::string list;
    for (const auto& n : nodes_) {
      if (!list.empty()) list += ',';  // not `(... ? "" : ",") + url`: GCC 12's -Wrestrict
      list += n->url();
    }
    return list;
  }
  [[nodiscard]] std::size_t running() const {
    std::size_t n = 0;
    for (const auto& node : nodes_) n += node->running() ? 1 : 0;
    return n;
  }
  void pump() {
    for (auto& n : nodes_) n->pump();
  }

  // An admin request through a running replica picked at random, tried again through another
  // while none answers or the one asked answers 5xx (a replica that cannot reach PostgreSQL
  // says 503), for up to `limit`. Returns the last answer, or throws the last error.
  orchestrator::HttpResult any(std::mt19937_64& rng, const std::string& method,
                               const std::string& path, const std::string& body = {},
                               const std::vector<std::string>& headers = {},
                               std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    const auto deadline = Clock::now() + limit;
    for (;;) {
      std::vector<std::size_t> up;
      for (std::size_t i = 0; i < nodes_.size(); ++i) {
        if (nodes_[i]->running()) up.push_back(i);
      }
      if (up.empty()) throw std::runtime_error("no orchestrator replica is running");
      const std::size_t i = up[std::uniform_int_distribution<std::size_t>(0, up.size() - 1)(rng)];
      try {
        orchestrator::HttpClient client(nodes_[i]->url(), kAdminToken);
        auto r = client.request(method, path, body, headers, std::chrono::seconds(20));
        if (r.status < 500 || Clock::now() > deadline) return r;
      } catch (const Error&) {
        if (Clock::now() > deadline) throw;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Rows of `sql` in the replicas' database, each column as text ("" for NULL).
  std::vector<std::vector<std::string>> query(const std::string& sql) const {
    std::vector<std::vector<std::string>> rows;
    for (auto& row : cluster_.execute(database_, sql)) {
      auto& out = rows.emplace_back();
      for (auto& column : row) out.push_back(column.value_or(""));
    }
    return rows;
  }

 private:
  testing::PostgresCluster& cluster_;
  std::string database_;
  std::vector<std::unique_ptr<OrchestratorProcess>> nodes_;
};

// One `tamma-worker start` daemon; its workspaces live under its own root.
inline std::unique_ptr<testing::ChildProcess> start_worker(const std::string& url,
                                                           const std::filesystem::path& root,
                                                           std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {kWorkerBinary,      "start",      "--orchestrator", url,
                                   "--workspace-root", root.string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<testing::ChildProcess>(
      argv, std::vector<std::string>{"TAMMA_TOKEN=" + kRegistrationToken});
}

// What the orchestrator's database says about every attempt of every task, read after the
// orchestrator has stopped (or while it runs: SQLite's WAL lets a reader in).
struct AttemptRow {
  std::string task_id;
  int attempt = 0;
  std::string worker_id;
  std::string outcome;  // empty while the attempt has not ended
};

inline std::vector<AttemptRow> attempts_in(const std::filesystem::path& db_file) {
  orchestrator::SqliteDb db(db_file);
  std::vector<AttemptRow> rows;
  auto s = db.prepare(
      "SELECT task_id, attempt, worker_id, COALESCE(outcome, '') FROM attempts "
      "ORDER BY task_id, attempt");
  while (s.step()) rows.push_back({s.text(0), s.integer(1), s.text(2), s.text(3)});
  return rows;
}

}  // namespace tamma::e2e
