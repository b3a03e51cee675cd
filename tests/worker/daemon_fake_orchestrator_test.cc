// The daemon in-process against a scripted orchestrator: what it does while the orchestrator
// refuses results, takes leases away, or holds polls; the timing of its heartbeats through all
// of it.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <future>
#include <thread>

#include "support/test_support.h"
#include "worker/artifacts.h"
#include "worker/daemon.h"
#include "worker/daemon_http_responder.h"

namespace tamma::worker {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::HttpReply;
using testing::HttpRequest;
using testing::HttpResponder;
using Clock = std::chrono::steady_clock;

struct Heartbeat {
  Clock::time_point at;
  json body;
};

// Register, poll (one task, then empty polls held as asked), heartbeat, started, logs,
// progress; `on_result` decides the answers to complete and fail.
// An assignment of task tsk_1, as a poll or a report's `next` carries it.
json assignment_of(const json& task, int attempt, const std::string& lease_id) {
  return {{"task", task},
          {"taskId", "tsk_1"},
          {"attempt", attempt},
          {"leaseId", lease_id},
          {"leaseTtlMs", 2000}};
}

class ScriptedOrchestrator {
 public:
  ScriptedOrchestrator(json task,
                       std::function<HttpReply(const std::string& what, int n)> on_result,
                       std::function<json(const json& heartbeat)> heartbeat_answer = {})
      : task_(std::move(task)),
        on_result_(std::move(on_result)),
        heartbeat_answer_(std::move(heartbeat_answer)),
        server_([this](const HttpRequest& r) { return handle(r); }) {}

  [[nodiscard]] std::string url() const { return server_.url(); }

  std::vector<Heartbeat> heartbeats() {
    std::lock_guard lock(mutex_);
    return heartbeats_;
  }
  std::vector<std::pair<Clock::time_point, std::string>> results() {
    std::lock_guard lock(mutex_);
    return results_;
  }
  bool unregistered() {
    std::lock_guard lock(mutex_);
    return unregistered_;
  }
  std::string log() {
    std::lock_guard lock(mutex_);
    return log_;
  }
  // The next poll after the first assignment answers with this one.
  void assign_next(json assignment) {
    std::lock_guard lock(mutex_);
    next_assignment_ = std::move(assignment);
  }

 private:
  HttpReply handle(const HttpRequest& r) {
    const std::string path = r.target.substr(0, r.target.find('?'));
    if (path == "/api/v1/workers/register") {
      return {201,
              json{{"workerId", "wrk_t"},
                   {"token", "tok"},
                   {"heartbeatIntervalMs", 200},
                   {"leaseTtlMs", 2000},
                   {"pollTimeoutMs", 300}}
                  .dump(),
              {}};
    }
    if (r.headers.count("authorization") == 0 || r.headers.at("authorization") != "Bearer tok") {
      return {401, R"({"error":{"code":"invalid_token","message":"no"}})", {}};
    }
    if (path == "/api/v1/workers/wrk_t/poll") {
      {
        std::lock_guard lock(mutex_);
        if (!assigned_) {
          assigned_ = true;
          return {200, assignment_of(task_, 1, "L1").dump(), {}};
        }
        if (next_assignment_) {
          const std::string body = next_assignment_->dump();
          next_assignment_.reset();
          return {200, body, {}};
        }
      }
      std::this_thread::sleep_for(300ms);
      return {204, "", {}};
    }
    if (path == "/api/v1/workers/wrk_t/heartbeat") {
      json body = json::parse(r.body);
      json answer =
          heartbeat_answer_
              ? heartbeat_answer_(body)
              : json{{"cancel", json::array()}, {"lostLeases", json::array()}, {"drain", false}};
      answer["leaseTtlMs"] = 2000;
      std::lock_guard lock(mutex_);
      heartbeats_.push_back({Clock::now(), body});
      return {200, answer.dump(), {}};
    }
    if (path == "/api/v1/workers/wrk_t" && r.method == "DELETE") {
      std::lock_guard lock(mutex_);
      unregistered_ = true;
      return {204, "", {}};
    }
    if (path == "/api/v1/tasks/tsk_1/logs") {
      std::lock_guard lock(mutex_);
      log_ += r.body;
      return {200, json{{"length", log_.size()}}.dump(), {{"X-Tamma-Task-State", "running"}}};
    }
    if (path == "/api/v1/tasks/tsk_1/started" || path == "/api/v1/tasks/tsk_1/progress") {
      return {200, R"({"state":"running"})", {{"X-Tamma-Task-State", "running"}}};
    }
    if (path == "/api/v1/tasks/tsk_1/artifacts") {
      int n;
      {
        std::lock_guard lock(mutex_);
        results_.emplace_back(Clock::now(),
                              "artifacts " + r.target.substr(r.target.find('?')) + " " + r.body);
        n = static_cast<int>(results_.size());
      }
      return on_result_("artifacts", n);
    }
    if (path == "/api/v1/tasks/tsk_1/complete" || path == "/api/v1/tasks/tsk_1/fail") {
      const std::string what = path.substr(path.rfind('/') + 1);
      int n;
      {
        std::lock_guard lock(mutex_);
        results_.emplace_back(Clock::now(), what + " " + r.body);
        n = static_cast<int>(results_.size());
      }
      return on_result_(what, n);
    }
    return {404, R"({"error":{"code":"not_found","message":"?"}})", {}};
  }

  json task_;
  std::function<HttpReply(const std::string&, int)> on_result_;
  std::function<json(const json&)> heartbeat_answer_;
  std::mutex mutex_;
  bool assigned_ = false;
  std::optional<json> next_assignment_;
  bool unregistered_ = false;
  std::string log_;
  std::vector<Heartbeat> heartbeats_;
  std::vector<std::pair<Clock::time_point, std::string>> results_;
  HttpResponder server_;  // last: its threads use everything above
};

DaemonOptions options_for(const std::string& url, const std::filesystem::path& workspaces) {
  DaemonOptions o;
  o.config.orchestrator_url = url;
  o.config.token = "registration-token";
  o.config.workspace_root = workspaces;
  o.config.grace_period = 1s;
  o.backoff = {20ms, 200ms};
  o.unregister_timeout = 2s;
  return o;
}

bool holds_lease(const json& heartbeat) {
  for (const auto& l : heartbeat["leases"]) {
    if (l["taskId"] == "tsk_1" && l["leaseId"] == "L1" && l["attempt"] == 1) return true;
  }
  return false;
}

TEST(DaemonWithScriptedOrchestrator, KeepsTheResultAndItsLeaseWhileTheOrchestratorRefusesIt) {
  json task = {{"type", "command"}, {"steps", {{{"name", "s"}, {"run", "echo out"}}}}};
  // Deliveries fail for a second, as a restarting orchestrator would answer.
  std::optional<Clock::time_point> first;
  std::mutex first_mutex;
  ScriptedOrchestrator orchestrator(task, [&](const std::string&, int) -> HttpReply {
    std::lock_guard lock(first_mutex);
    if (!first) first = Clock::now();
    if (Clock::now() - *first < 1s) {
      return {503, R"({"error":{"code":"database_error","message":"locked"}})", {}};
    }
    return {200, R"({"state":"succeeded"})", {}};
  });
  tamma::testing::TempDir workspaces;
  Daemon daemon(options_for(orchestrator.url(), workspaces.path()));
  auto exit_code = std::async(std::launch::async, [&] { return daemon.run(); });
  const auto deadline = Clock::now() + 20s;
  auto delivered = [&] {
    auto r = orchestrator.results();
    return !r.empty() && r.back().second.find(R"("status":"succeeded")") != std::string::npos &&
           Clock::now() - r.front().first >= 1s;
  };
  while (!delivered() && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  auto results = orchestrator.results();
  ASSERT_TRUE(delivered());
  EXPECT_GE(results.size(), 3u) << "retried with backoff (20 ms base, 200 ms cap) for a second";
  EXPECT_EQ(orchestrator.log(), "out\n") << "the log went before the result";
  // Once delivered, the lease is let go: wait for a heartbeat that says so (under a loaded
  // sanitizer build the next one may take a while), so the window below is complete.
  const auto let_go_deadline = Clock::now() + 10s;
  auto let_go = [&] {
    auto beats = orchestrator.heartbeats();
    return !beats.empty() && beats.back().at > results.back().first &&
           !holds_lease(beats.back().body);
  };
  while (!let_go() && Clock::now() < let_go_deadline) std::this_thread::sleep_for(20ms);
  daemon.drain("test");
  EXPECT_EQ(exit_code.get(), 0);
  EXPECT_TRUE(orchestrator.unregistered());

  // While the result was refused, the lease went on being renewed, and heartbeats kept their
  // pace: delivery retries never hold them up.
  int renewing = 0;
  auto heartbeats = orchestrator.heartbeats();
  for (std::size_t i = 0; i < heartbeats.size(); ++i) {
    const auto& h = heartbeats[i];
    if (h.at > results.front().first && h.at < results.back().first && holds_lease(h.body)) {
      ++renewing;
    }
    if (i > 0) {
      EXPECT_LT(h.at - heartbeats[i - 1].at, 600ms) << "heartbeat " << i << " was late";
    }
  }
  EXPECT_GE(renewing, 3) << "the undelivered result's lease was renewed (every 200 ms for 1 s)";
  EXPECT_FALSE(holds_lease(heartbeats.back().body)) << "delivered: the lease is let go";
}

// The report of a task's first attempt brings back its second (a task retried on the same
// worker) while the first attempt's 20,000 files are still being removed after that report:
// the second attempt waits for them to go and gets a fresh workspace of the same name,
// instead of finding the old one's lock held and failing as a task already running.
TEST(DaemonWithScriptedOrchestrator, AnAttemptRunOnTheSameWorkerWaitsForItsOldWorkspaceToGo) {
  const json task = {{"type", "command"},
                     {"steps",
                      {{{"name", "s"},
                        {"run",
                         "test ! -e leftover && touch leftover && mkdir many && cd many && "
                         "seq 20000 | xargs touch"}}}}};
  ScriptedOrchestrator orchestrator(task, [&](const std::string&, int n) -> HttpReply {
    if (n == 1) {
      return {200, json{{"state", "queued"}, {"next", assignment_of(task, 2, "L2")}}.dump(), {}};
    }
    return {200, R"({"state":"succeeded"})", {}};
  });
  tamma::testing::TempDir workspaces;
  Daemon daemon(options_for(orchestrator.url(), workspaces.path()));
  auto exit_code = std::async(std::launch::async, [&] { return daemon.run(); });
  const auto deadline = Clock::now() + 30s;
  while (orchestrator.results().size() < 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  daemon.drain("test");
  EXPECT_EQ(exit_code.get(), 0);
  auto results = orchestrator.results();
  ASSERT_EQ(results.size(), 2u);
  for (const auto& [at, what] : results) {
    EXPECT_EQ(what.rfind("complete ", 0), 0u) << what;
    EXPECT_NE(what.find(R"("status":"succeeded")"), std::string::npos) << what;
  }
  EXPECT_NE(results[1].second.find(R"("leaseId":"L2")"), std::string::npos) << results[1].second;
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(workspaces.path())) {
    left.push_back(e.path().filename());
  }
  EXPECT_TRUE(left.empty()) << ::testing::PrintToString(left);
}

// Attempt 1 runs on one slot; the orchestrator, which could not hear from this worker for
// longer than the lease, assigns attempt 2 to its other slot before the heartbeat has told
// attempt 1 its lease is gone. Attempt 1 is stopped unreported and attempt 2 runs in a fresh
// workspace of the same name, instead of failing for good as task_already_running.
TEST(DaemonWithScriptedOrchestrator, ANewAttemptOnAnotherSlotStopsTheOlderOneAndRuns) {
  const json task = {{"type", "command"},
                     {"steps",
                      {{{"name", "s"},
                        {"run",
                         "if test -e mine; then echo found an old workspace; exit 3; fi; "
                         "touch mine; echo begun; sleep 30"}}}}};
  ScriptedOrchestrator orchestrator(task, [&](const std::string&, int) -> HttpReply {
    return {200, R"({"state":"succeeded"})", {}};
  });
  tamma::testing::TempDir workspaces;
  DaemonOptions options = options_for(orchestrator.url(), workspaces.path());
  options.config.slots = 2;
  Daemon daemon(options);
  auto exit_code = std::async(std::launch::async, [&] { return daemon.run(); });
  auto log_has = [&](const std::string& text, std::size_t times) {
    const std::string log = orchestrator.log();
    std::size_t n = 0;
    for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
    return n >= times;
  };
  const auto deadline = Clock::now() + 30s;
  while (!log_has("begun", 1) && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(log_has("begun", 1)) << orchestrator.log();
  orchestrator.assign_next(assignment_of(task, 2, "L2"));
  while (!log_has("begun", 2) && !log_has("found an old", 1) && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(log_has("begun", 2)) << orchestrator.log();
  EXPECT_FALSE(log_has("found an old", 1)) << orchestrator.log();
  // Attempt 1 said nothing (its lease is gone); attempt 2 is the one that reports.
  daemon.cancel_tasks("test");
  EXPECT_EQ(exit_code.get(), 0);
  for (const auto& [at, what] : orchestrator.results()) {
    EXPECT_EQ(what.find(R"("leaseId":"L1")"), std::string::npos) << what;
    EXPECT_EQ(what.find("task_already_running"), std::string::npos) << what;
  }
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(workspaces.path())) {
    left.push_back(e.path().filename());
  }
  EXPECT_TRUE(left.empty()) << ::testing::PrintToString(left);
}

TEST(DaemonWithScriptedOrchestrator, UploadsArtifactsRetriedUntilStoredAndOnlyThenCompletes) {
  json task = {{"type", "command"},
               {"steps", {{{"name", "s"}, {"run", "mkdir -p d && echo hi > d/a.txt"}}}},
               {"artifacts", {"d/*.txt"}}};
  tamma::testing::TempDir scratch;
  tamma::testing::write_file(scratch.path() / "a.txt", "hi\n");
  const std::string sha = sha256_file(scratch.path() / "a.txt");
  ScriptedOrchestrator orchestrator(task, [&](const std::string& what, int n) -> HttpReply {
    if (what == "artifacts" && n == 1) {
      return {503, R"({"error":{"code":"database_error","message":"locked"}})", {}};
    }
    if (what == "artifacts") {
      return {
          201, json{{"name", "d/a.txt"}, {"attempt", 1}, {"size", 3}, {"sha256", sha}}.dump(), {}};
    }
    return {200, R"({"state":"succeeded"})", {}};
  });
  tamma::testing::TempDir workspaces;
  Daemon daemon(options_for(orchestrator.url(), workspaces.path()));
  auto exit_code = std::async(std::launch::async, [&] { return daemon.run(); });
  const auto deadline = Clock::now() + 20s;
  auto completed = [&] {
    auto r = orchestrator.results();
    return !r.empty() && r.back().second.rfind("complete ", 0) == 0;
  };
  while (!completed() && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  daemon.drain("test");
  EXPECT_EQ(exit_code.get(), 0);

  auto results = orchestrator.results();
  ASSERT_EQ(results.size(), 3u);
  const std::string upload = "artifacts ?name=d%2Fa.txt&attempt=1&leaseId=L1 hi\n";
  EXPECT_EQ(results[0].second, upload) << "the artifact by its workspace path, fenced";
  EXPECT_EQ(results[1].second, upload) << "retried after the 503";
  EXPECT_EQ(results[2].second.rfind("complete ", 0), 0u) << "the completion only after it";
  EXPECT_NE(results[2].second.find(sha), std::string::npos) << "the result lists it";
  // The staging copy went with the task.
  for (const auto& entry : std::filesystem::directory_iterator(workspaces.path())) {
    EXPECT_EQ(entry.path().filename().string().rfind(".artifacts-", 0), std::string::npos)
        << entry.path();
  }
}

TEST(DaemonWithScriptedOrchestrator, ALostLeaseStopsTheTaskAtOnceAndNothingIsReported) {
  json task = {{"type", "command"}, {"steps", {{{"name", "s"}, {"run", "echo begun; sleep 30"}}}}};
  std::atomic<bool> lose{false};
  ScriptedOrchestrator orchestrator(
      task,
      [](const std::string&, int) -> HttpReply {
        return {200, "{}", {}};
      },
      [&](const json& heartbeat) {
        json lost = json::array();
        if (lose.load() && holds_lease(heartbeat))
          lost.push_back({{"taskId", "tsk_1"}, {"attempt", 1}});
        return json{{"cancel", json::array()}, {"lostLeases", lost}, {"drain", false}};
      });
  tamma::testing::TempDir workspaces;
  Daemon daemon(options_for(orchestrator.url(), workspaces.path()));
  auto exit_code = std::async(std::launch::async, [&] { return daemon.run(); });
  const auto deadline = Clock::now() + 20s;
  while (orchestrator.log() != "begun\n" && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(orchestrator.log(), "begun\n");
  EXPECT_EQ(daemon.health().running_tasks, 1u);
  lose = true;
  const auto lost_at = Clock::now();
  while (daemon.health().running_tasks > 0 && Clock::now() < lost_at + 10s) {
    std::this_thread::sleep_for(20ms);
  }
  // One heartbeat (200 ms) to hear of it, then SIGKILL without a grace period; the bound only
  // tells that from a task left running (the loop above gives up after 10 s).
  EXPECT_LT(Clock::now() - lost_at, 8s);
  daemon.drain("test");
  EXPECT_EQ(exit_code.get(), 0) << "a lease the orchestrator took back is not a failure";
  EXPECT_TRUE(orchestrator.results().empty()) << "nothing is reported for a lost lease";
}

TEST(DaemonWithScriptedOrchestrator, AnUnknownTaskTypeIsReportedAsANonRetryableFailure) {
  json task = {{"type", "no_such_type"}, {"steps", {{{"name", "s"}, {"run", "true"}}}}};
  ScriptedOrchestrator orchestrator(task, [](const std::string&, int) -> HttpReply {
    return {200, R"({"state":"failed"})", {}};
  });
  tamma::testing::TempDir workspaces;
  Daemon daemon(options_for(orchestrator.url(), workspaces.path()));
  auto exit_code = std::async(std::launch::async, [&] { return daemon.run(); });
  const auto deadline = Clock::now() + 20s;
  while (orchestrator.results().empty() && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  daemon.drain("test");
  EXPECT_EQ(exit_code.get(), 0);
  auto results = orchestrator.results();
  ASSERT_EQ(results.size(), 1u);
  const std::string& sent = results[0].second;
  ASSERT_EQ(sent.rfind("fail ", 0), 0u) << sent;
  auto body = json::parse(sent.substr(5));
  EXPECT_EQ(body["error"]["code"], "unknown_task_type");
  EXPECT_EQ(body["error"]["retryable"], false);
  EXPECT_EQ(body["attempt"], 1);
  EXPECT_EQ(body["leaseId"], "L1");
}

}  // namespace
}  // namespace tamma::worker
