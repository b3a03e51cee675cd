// Operations: restarts keep everything, /metrics is valid Prometheus text, readiness.

#include <future>
#include <regex>
#include <set>

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

TEST(OrchestratorOps, RestartOnTheSameDatabaseKeepsTasksTokensAndLeases) {
  TestServer server;
  auto worker = server.register_worker();
  std::string running = server.submit(submit_body(task_spec()));
  auto lease = worker->poll(1000).json();
  std::string queued = server.submit(submit_body(task_spec(), 5));
  auto append = worker->append_raw(running, 1, lease["leaseId"], 0, "before restart\n");
  ASSERT_EQ(append.status, 200);

  server.restart();
  // The worker reconnects to the new port with its old token.
  TestWorker again(server.url(), worker->id, worker->token);
  auto hb = again.heartbeat(
      json::array({{{"taskId", running}, {"attempt", 1}, {"leaseId", lease["leaseId"]}}}));
  ASSERT_EQ(hb.status, 200) << hb.body;
  EXPECT_TRUE(hb.json()["lostLeases"].empty());
  auto more = again.append_raw(running, 1, lease["leaseId"], 15, "after\n");
  EXPECT_EQ(more.status, 200) << more.body;
  EXPECT_EQ(again.complete(running, 1, lease["leaseId"]).status, 200);
  EXPECT_EQ(server.task(running)["state"], "succeeded");
  EXPECT_EQ(server.task(queued)["state"], "queued");
  EXPECT_EQ(server.task(queued)["priority"], 5);
  auto log = server.admin()->get("/api/v1/tasks/" + running + "/logs");
  EXPECT_EQ(log.body, "before restart\nafter\n");
  auto next = again.poll(1000);
  ASSERT_EQ(next.status, 200);
  EXPECT_EQ(next.json()["taskId"], queued);
}

TEST(OrchestratorOps, GeneratedTokensArePersistedAsHashesAndSurviveARestart) {
  tamma::testing::TempDir dir;
  ServerConfig config;
  config.listen_port = 0;
  config.db_path = dir.path() / "db.sqlite";
  config.data_dir = dir.path() / "data";
  std::string admin_token;
  {
    std::ostringstream announce;
    Server server(config, announce);
    std::string text = announce.str();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(text, m, std::regex("TAMMA_ADMIN_TOKEN=([0-9a-f]{64})"))) << text;
    admin_token = m[1];
    EXPECT_NE(text.find("TAMMA_REGISTRATION_TOKEN="), std::string::npos);
  }
  {
    std::ostringstream announce;
    Server server(config, announce);
    EXPECT_EQ(announce.str(), "") << "printed once, at first start only";
    server.start();
    HttpClient admin("http://127.0.0.1:" + std::to_string(server.port()), admin_token);
    EXPECT_EQ(admin.get("/api/v1/tasks").status, 200);
    server.shutdown();
  }
  // The database holds no token in clear.
  auto db = tamma::testing::read_file(config.db_path);
  EXPECT_EQ(db.find(admin_token), std::string::npos);
}

// The text exposition format, line by line: comments, then `name{labels} value`.
TEST(OrchestratorOps, MetricsParseAsPrometheusTextWithTheExpectedSeries) {
  TestServer server;
  auto worker = server.register_worker();
  std::string id = server.submit(submit_body(task_spec()));
  server.submit(submit_body(task_spec()));
  auto lease = worker->poll(1000).json();
  ASSERT_EQ(worker->complete(id, 1, lease["leaseId"]).status, 200);
  server.anonymous()->get("/no/such/route");

  auto r = server.admin()->get("/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.header("content-type").find("text/plain"), std::string::npos);
  std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|\+Inf|NaN)$)");
  std::regex type_line(
      R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  std::set<std::string> typed;
  std::map<std::string, double> values;
  std::istringstream lines(r.body);
  std::string line;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (std::regex_match(line, m, type_line)) {
      typed.insert(m[1]);
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, m, sample)) << "not a sample: " << line;
    std::string name = m[1];
    std::string base = std::regex_replace(name, std::regex("_(bucket|sum|count)$"), "");
    EXPECT_TRUE(typed.count(name) || typed.count(base)) << name << " has no # TYPE before it";
    values[line.substr(0, line.rfind(' '))] = std::stod(m[5] == "+Inf" ? "inf" : m[5].str());
  }
  EXPECT_EQ(values["tamma_tasks{state=\"succeeded\"}"], 1);
  EXPECT_EQ(values["tamma_tasks{state=\"queued\"}"], 1);
  EXPECT_EQ(values["tamma_queue_depth"], 1);
  EXPECT_EQ(values["tamma_waiting_polls"], 0);
  EXPECT_EQ(values["tamma_workers{state=\"online\"}"], 1);
  EXPECT_EQ(values["tamma_lease_expiries_total"], 0);
  // The SQLite store's checkpoints, on a thread of its own (ADR 0040).
  EXPECT_EQ(values.count("tamma_sqlite_checkpoints_total"), 1u);
  EXPECT_EQ(values["tamma_sqlite_checkpoint_failures_total"], 0);
  EXPECT_GT(values["tamma_sqlite_wal_pages"], 0) << "every commit so far is in the WAL";
  EXPECT_EQ(values["tamma_task_pickup_latency_seconds_count"], 1);
  EXPECT_EQ(values["tamma_task_pickup_latency_seconds_bucket{le=\"+Inf\"}"], 1);
  EXPECT_EQ(
      values["tamma_http_requests_total{route=\"/api/v1/tasks\",method=\"POST\",code=\"201\"}"], 2);
  EXPECT_EQ(values["tamma_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"}"],
            1);
  EXPECT_EQ(values["tamma_http_requests_total{route=\"/api/v1/tasks/{id}/"
                   "complete\",method=\"POST\",code=\"200\"}"],
            1);
}

// Asks /ready until it answers `status` (the probe write runs on the reaper's next ticks).
::testing::AssertionResult ready_becomes(TestServer& server, unsigned status,
                                         const std::string& state) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  HttpResult last;
  while (std::chrono::steady_clock::now() < deadline) {
    last = server.admin()->get("/ready");
    if (last.status == status && last.json()["status"] == state) {
      return ::testing::AssertionSuccess();
    }
    std::this_thread::sleep_for(50ms);
  }
  return ::testing::AssertionFailure() << "last /ready: " << last.status << " " << last.body;
}

TEST(OrchestratorOps, ReadyIs503WhenTheDatabaseFileIsGone) {
  TestServer server;
  ASSERT_EQ(server.admin()->get("/ready").status, 200);
  // A database file moved or deleted under a running server would lose every write at the next
  // restart: readiness must say so; liveness must not care.
  auto moved = server.dir() / "moved.sqlite";
  std::filesystem::rename(server.config().db_path, moved);
  EXPECT_TRUE(ready_becomes(server, 503, "storage_failing"));
  auto ready = server.admin()->get("/ready");
  // The admin sees why, without the server's paths.
  EXPECT_NE(ready.body.find("moved or deleted"), std::string::npos) << ready.body;
  EXPECT_EQ(ready.body.find(server.dir().string()), std::string::npos) << ready.body;
  EXPECT_EQ(server.anonymous()->get("/health").status, 200);
  std::filesystem::rename(moved, server.config().db_path);
  EXPECT_TRUE(ready_becomes(server, 200, "ready"));
}

TEST(OrchestratorOps, ShutdownAnswersParkedPollsWith204) {
  TestServer server([](ServerConfig& c) { c.poll_timeout = 20s; });
  auto worker = server.register_worker();
  auto parked = std::async(std::launch::async, [&] { return worker->poll(20000); });
  std::this_thread::sleep_for(200ms);
  auto start = std::chrono::steady_clock::now();
  server.stop();
  auto r = parked.get();
  EXPECT_EQ(r.status, 204);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

}  // namespace
}  // namespace tamma::orchestrator::testing
