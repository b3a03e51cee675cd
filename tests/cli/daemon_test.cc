// End-to-end tests of `tamma-worker start` against the real `tamma-orchestrator serve`: real
// processes on loopback, real sandboxed tasks, signals as an init system sends them.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <regex>
#include <thread>

#include "support/test_support.h"

namespace tamma {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;
using testing::ProcessResult;
using testing::TempDir;
using Clock = std::chrono::steady_clock;

#ifdef TAMMA_ORCHESTRATOR_BINARY
const std::string kOrchestrator = TAMMA_ORCHESTRATOR_BINARY;
#else
const std::string kOrchestrator;
#endif

const std::string kAdminToken = "daemon-test-admin-token-0123456789";
const std::string kRegistrationToken = "daemon-test-registration-token-0123456789";

using testing::free_port;

// GET on 127.0.0.1:port; returns the status code and the body (0 when nothing answered).
std::pair<int, std::string> http_get(int port, const std::string& path,
                                     const std::string& token = "") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return {0, ""};
  }
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
  if (!token.empty()) request += "Authorization: Bearer " + token + "\r\n";
  request += "\r\n";
  if (::write(fd, request.data(), request.size()) < 0) {
    ::close(fd);
    return {0, ""};
  }
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) response.append(buffer, n);
  ::close(fd);
  if (response.size() < 12) return {0, ""};
  auto body = response.find("\r\n\r\n");
  return {std::stoi(response.substr(9, 3)),
          body == std::string::npos ? "" : response.substr(body + 4)};
}

class Orchestrator {
 public:
  Orchestrator(const std::filesystem::path& dir, std::vector<std::string> flags, int port = 0)
      : dir_(dir), flags_(std::move(flags)), port_(port ? port : free_port()) {
    start();
  }

  void start() {
    std::vector<std::string> argv = {kOrchestrator, "serve",
                                     "--listen",    "127.0.0.1:" + std::to_string(port_),
                                     "--db",        "sqlite:" + (dir_ / "db.sqlite").string()};
    argv.insert(argv.end(), flags_.begin(), flags_.end());
    child_ = std::make_unique<ChildProcess>(
        argv, std::vector<std::string>{"TAMMA_ADMIN_TOKEN=" + kAdminToken,
                                       "TAMMA_REGISTRATION_TOKEN=" + kRegistrationToken});
    ASSERT_TRUE(child_->wait_for_output("listening on", 20s)) << "the orchestrator did not start";
  }

  ProcessResult stop() {
    child_->send_signal(SIGTERM);
    auto r = child_->wait(20s);
    child_.reset();
    return r;
  }

  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] int port() const { return port_; }

  ProcessResult admin(std::vector<std::string> args) {
    args.insert(args.begin(), kOrchestrator);
    return testing::run_process(
        args, {"TAMMA_ORCHESTRATOR_URL=" + url(), "TAMMA_TOKEN=" + kAdminToken}, 30s);
  }

  std::string submit(const json& spec, std::vector<std::string> extra = {}) {
    auto file = dir_ / ("task-" + std::to_string(++tasks_) + ".json");
    testing::write_file(file, spec.dump());
    std::vector<std::string> args = {"submit", file.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = admin(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }

  // Straight from the API, not through the admin CLI: a process per poll would make the
  // tests' timing (and their view of short-lived states) depend on how fast processes start.
  json task(const std::string& id) {
    auto [status, body] = http_get(port_, "/api/v1/tasks/" + id, kAdminToken);
    EXPECT_EQ(status, 200) << body;
    try {
      return json::parse(body);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not JSON: " << body;
      return json::object();
    }
  }

  std::string logs(const std::string& id) { return admin({"logs", id}).out; }

  json wait_task(const std::string& id, const std::function<bool(const json&)>& until,
                 std::chrono::milliseconds limit = 20s) {
    const auto deadline = Clock::now() + limit;
    json t = task(id);
    while (!until(t) && Clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
      t = task(id);
    }
    return t;
  }

  json worker_view(const std::string& worker_id) {
    auto r = admin({"workers", "--all", "--json"});
    const json list = json::parse(r.out);
    for (const auto& w : list.at("workers")) {
      if (w["id"] == worker_id) return w;
    }
    return json::object();
  }

 private:
  std::filesystem::path dir_;
  std::vector<std::string> flags_;
  int port_;
  int tasks_ = 0;
  std::unique_ptr<ChildProcess> child_;
};

std::function<bool(const json&)> in_state(std::vector<std::string> states) {
  return [states](const json& t) {
    return std::find(states.begin(), states.end(), t.value("state", "")) != states.end();
  };
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kOrchestrator.empty()) GTEST_SKIP() << "tamma-orchestrator is not part of this build";
    std::random_device rd;
    marker_ = "tamma-daemon-marker-" + std::to_string(rd());
  }

  void TearDown() override {
    // Nothing of a task may outlive its worker, not even one that was SIGKILLed.
    const auto deadline = Clock::now() + 5s;
    while (!testing::processes_with(marker_).empty() && Clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(testing::processes_with(marker_).empty()) << "leaked task processes";
  }

  // Heartbeats every 500 ms, leases lost after 2 s without one, retries after 100 ms.
  std::vector<std::string> fast_orchestrator() {
    return {"--heartbeat-interval", "500ms", "--lease-ttl",    "2s",
            "--retry-base",         "100ms", "--poll-timeout", "5s"};
  }

  // `root`: the workspace root, a directory of its own under the test's when empty.
  std::unique_ptr<ChildProcess> start_worker(const std::string& url,
                                             std::vector<std::string> extra = {},
                                             std::vector<std::string> env = {},
                                             std::filesystem::path root = {}) {
    if (root.empty()) root = dir_.path() / ("workspaces-" + std::to_string(++workers_));
    std::vector<std::string> argv = {TAMMA_WORKER_BINARY, "start",       "--orchestrator", url,
                                     "--workspace-root",  root.string(), "--grace-period", "2s",
                                     "--label",           "pool=e2e"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (env.empty()) env = {"TAMMA_TOKEN=" + kRegistrationToken};
    return std::make_unique<ChildProcess>(argv, env);
  }

  json sleeper(const std::string& before, const std::string& seconds, const std::string& after) {
    return {{"type", "command"},
            {"steps",
             {{{"name", "work"},
               {"run",
                "echo " + before + "; sleep " + seconds + "; echo " + after + " # " + marker_}}}}};
  }

  TempDir dir_;
  std::string marker_;
  int workers_ = 0;
};

TEST_F(DaemonTest, RunsASubmittedTaskAndStoresItsResultLogsAndProgress) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  const int health = free_port();
  auto worker = start_worker(orchestrator.url(), {"--slots", "2", "--health-listen",
                                                  "127.0.0.1:" + std::to_string(health)});
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));

  json spec = {{"type", "command"},
               {"secrets", {{"API_KEY", "s3cr3t-value-42"}}},
               {"steps",
                {{{"name", "compile"}, {"run", "echo compiling; echo key=$API_KEY # " + marker_}},
                 {{"name", "check"}, {"run", "echo checked >&2"}}}}};
  // How fast: pipeline_bench (issue 13: no timed assertions in tests).
  const std::string id = orchestrator.submit(spec, {"--label", "pool=e2e"});
  auto task = orchestrator.wait_task(id, in_state({"succeeded", "failed", "dead"}));
  ASSERT_EQ(task["state"], "succeeded") << task.dump(2);
  EXPECT_EQ(task["attempt"], 1);
  EXPECT_EQ(task["result"]["status"], "succeeded");
  ASSERT_EQ(task["result"]["steps"].size(), 2u);
  EXPECT_EQ(task["result"]["steps"][0]["stdout"], "compiling\nkey=[MASKED]\n");
  EXPECT_EQ(task["result"]["steps"][1]["stderr"], "checked\n");
  EXPECT_EQ(task["progress"]["percent"], 100);
  EXPECT_EQ(task["progress"]["step"], "check");
  EXPECT_EQ(orchestrator.logs(id), "compiling\nkey=[MASKED]\nchecked\n")
      << "the log holds the masked output of every step, once";

  auto [status, body] = http_get(health, "/health");
  ASSERT_EQ(status, 200) << body;
  auto h = json::parse(body);
  EXPECT_EQ(h["status"], "running");
  EXPECT_EQ(h["runningTasks"], 0);
  EXPECT_TRUE(std::regex_match(h["workerId"].get<std::string>(), std::regex("wrk_[0-9a-f]+")));
  EXPECT_LT(h["lastHeartbeatAgoMs"].get<std::int64_t>(), 2000);
  EXPECT_EQ(orchestrator.worker_view(h["workerId"])["state"], "online");

  worker->send_signal(SIGTERM);
  auto r = worker->wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(orchestrator.worker_view(h["workerId"])["state"], "gone") << "unregistered";
  EXPECT_EQ(r.err.find(kRegistrationToken), std::string::npos) << "tokens are never logged";
  EXPECT_EQ(r.err.find("s3cr3t-value-42"), std::string::npos);
  EXPECT_NE(r.err.find(h["workerId"].get<std::string>()), std::string::npos)
      << "the worker id is logged instead";
}

// The spare workspaces in a worker's workspace root, sorted.
std::vector<std::string> spares_in(const std::filesystem::path& root) {
  std::vector<std::string> spares;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const std::string name = e.path().filename();
    if (name.rfind("spare-", 0) == 0) spares.push_back(name);
  }
  std::sort(spares.begin(), spares.end());
  return spares;
}

// Polled every 10 ms until `condition` holds or 20 s have passed.
bool eventually(const std::function<bool()>& condition) {
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// An idle slot makes the next task's filesystem while its poll waits (issue 13): the task that
// comes runs in it, and the slot makes another before its next poll. The task still finds an
// empty workspace, HOME and /tmp, and nothing is left once the worker has stopped.
TEST_F(DaemonTest, AnIdleSlotMakesTheNextTasksWorkspaceBeforeTheTaskComes) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  const std::filesystem::path root = dir_.path() / "ws-spare";
  auto worker = start_worker(orchestrator.url(), {}, {}, root);
  std::vector<std::string> before;
  ASSERT_TRUE(eventually([&] { return (before = spares_in(root)).size() == 1; }))
      << "no spare workspace while idle: " << ::testing::PrintToString(spares_in(root));

  const std::string id =
      orchestrator.submit({{"type", "command"},
                           {"steps",
                            {{{"name", "look"},
                              {"run",
                               "ls -A . \"$HOME\" /tmp /var/tmp | tr -d '\\n'; stat -c %a /tmp; "
                               "touch mine # " +
                                   marker_}}}}});
  auto task = orchestrator.wait_task(id, in_state({"succeeded", "failed", "dead"}));
  ASSERT_EQ(task["state"], "succeeded") << task.dump(2);
  EXPECT_EQ(orchestrator.logs(id), ".:" + std::string("/home/tamma:/tmp:/var/tmp:1777\n"))
      << "the spare was not empty, or not the task's";
  // The slot makes or takes another before its next poll; the finished task's emptied
  // filesystem may wait beside it (ADR 0038): at most one of each per slot.
  std::vector<std::string> after;
  EXPECT_TRUE(eventually([&] {
    after = spares_in(root);
    return !after.empty() && after.size() <= 2 &&
           std::find(after.begin(), after.end(), before.front()) == after.end();
  })) << "the spare was not used, or no new one was made: before "
      << ::testing::PrintToString(before) << ", now " << ::testing::PrintToString(after);

  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
  EXPECT_TRUE(std::filesystem::is_empty(root)) << "left behind";
}

// A finished task's filesystem, emptied, serves a later task (ADR 0038): one of the two tasks
// after it runs in the same directories (the slot uses its own spare first, then the emptied
// one), and neither finds anything of it: no file in the workspace, HOME or the temporary
// directories, the modes of fresh ones. Nothing is left once the worker has stopped.
TEST_F(DaemonTest, ALaterTaskRunsInTheEmptiedFilesystemOfAnEarlierOneAndSeesNothingOfIt) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  const std::filesystem::path root = dir_.path() / "ws-reuse";
  auto worker = start_worker(orchestrator.url(), {}, {}, root);
  const auto run = [&](const std::string& script) {
    const std::string id = orchestrator.submit(
        {{"type", "command"}, {"steps", {{{"name", "s"}, {"run", script + " # " + marker_}}}}});
    auto task = orchestrator.wait_task(id, in_state({"succeeded", "failed", "dead"}));
    EXPECT_EQ(task["state"], "succeeded") << task.dump(2);
    return orchestrator.logs(id);
  };
  const std::string first =
      run("stat -c %i .; mkdir -p src/deep; echo x > src/deep/f; ln -s /etc/passwd link; "
          "echo h > \"$HOME/.cache\"; echo t > /tmp/t; echo v > /var/tmp/v; chmod 700 . \"$HOME\"");
  const std::string look =
      "stat -c %i .; ls -A . \"$HOME\" /tmp /var/tmp | tr -d '\\n'; echo; "
      "stat -c %a . \"$HOME\" /tmp /var/tmp | tr '\\n' ' '";
  const std::string second = run(look);
  const std::string third = run(look);
  const std::string empty = ".:/home/tamma:/tmp:/var/tmp:\n755 755 1777 1777 ";
  const auto inode = [](const std::string& output) { return output.substr(0, output.find('\n')); };
  EXPECT_EQ(second.substr(second.find('\n') + 1), empty) << "the second task found something";
  EXPECT_EQ(third.substr(third.find('\n') + 1), empty) << "the third task found something";
  EXPECT_TRUE(inode(first) == inode(second) || inode(first) == inode(third))
      << "the first task's directories were not reused: inodes " << inode(first) << ", "
      << inode(second) << ", " << inode(third);

  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
  EXPECT_TRUE(std::filesystem::is_empty(root)) << "left behind";
}

// At debug level the daemon logs when a task's assignment arrived and when its step's command
// called execve, on the wall clock: bench/pipeline_bench sets them beside the submit to show
// where a pickup's time goes. The times are in order and within the task's life.
TEST_F(DaemonTest, TheDebugLogTimesATasksStartOnTheWallClock) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  auto worker = start_worker(orchestrator.url(), {"--log-level", "debug"});
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));
  const auto micros = [] {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const std::int64_t before = micros();
  const std::string id = orchestrator.submit(
      {{"type", "command"}, {"steps", {{{"name", "only"}, {"run", "true # " + marker_}}}}});
  auto task = orchestrator.wait_task(id, in_state({"succeeded", "failed", "dead"}));
  ASSERT_EQ(task["state"], "succeeded") << task.dump(2);
  const std::int64_t after = micros();
  worker->send_signal(SIGTERM);
  auto r = worker->wait(30s);
  EXPECT_EQ(r.exit_code, 0);
  std::smatch assigned, exec;
  ASSERT_TRUE(std::regex_search(r.err, assigned,
                                std::regex("task " + id + ": timeline: assigned at ([0-9]+) us")))
      << r.err;
  ASSERT_TRUE(std::regex_search(
      r.err, exec, std::regex("task " + id + ": timeline: step 'only' exec'd at ([0-9]+) us")))
      << r.err;
  EXPECT_LE(before, std::stoll(assigned[1]));
  EXPECT_LE(std::stoll(assigned[1]), std::stoll(exec[1]));
  EXPECT_LE(std::stoll(exec[1]), after);
}

// Queued tasks run back to back: each report brings back the next task (ADR 0033), so one poll
// hands out the first and none of the others needs one. Each workspace is removed after its
// report, off the slot's path; none is left once the worker has stopped.
TEST_F(DaemonTest, QueuedTasksRunBackToBackEachReportBringingTheNext) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(orchestrator.submit(
        {{"type", "command"},
         {"steps",
          {{{"name", "only"},
            {"run",
             "mkdir -p a/b \"$HOME/.cache\" && touch a/b/c \"$HOME/.cache/d\" /tmp/e && "
             "echo task " +
                 std::to_string(i) + " # " + marker_}}}}}));
  }
  auto worker = start_worker(orchestrator.url());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto task = orchestrator.wait_task(ids[i], in_state({"succeeded", "failed", "dead"}));
    ASSERT_EQ(task["state"], "succeeded") << task.dump(2);
    EXPECT_EQ(task["attempt"], 1);
    EXPECT_EQ(orchestrator.logs(ids[i]), "task " + std::to_string(i) + "\n");
    EXPECT_EQ(task["progress"]["percent"], 100) << "the last progress goes with the report";
    EXPECT_TRUE(task.contains("startedAt")) << task.dump(2);
  }
  auto [status, metrics] = http_get(orchestrator.port(), "/metrics", kAdminToken);
  ASSERT_EQ(status, 200);
  const std::regex polls_answered(
      R"(tamma_http_requests_total\{route="/api/v1/workers/\{id\}/poll",method="POST",code="200"\} ([0-9]+))");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(metrics, m, polls_answered)) << metrics;
  EXPECT_EQ(m[1], "1") << "only the first task came by poll; each report brought the next";
  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path() / "workspaces-1")) {
    left.push_back(e.path().filename());
  }
  EXPECT_TRUE(left.empty()) << "left behind: " << ::testing::PrintToString(left);
}

TEST_F(DaemonTest, ACancelFromTheOrchestratorReachesTheRunningTaskWithinOneHeartbeat) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  auto worker = start_worker(orchestrator.url());
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));
  const std::string id = orchestrator.submit(sleeper("begun", "60", "never"));
  auto running = orchestrator.wait_task(id, [&](const json& t) {
    return t["state"] == "running" && orchestrator.logs(id) == "begun\n";
  });
  ASSERT_EQ(running["state"], "running");

  auto cancel = orchestrator.admin({"cancel", id});
  const auto asked = Clock::now();  // the request is in the store once the CLI has returned
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(cancel.out, id + " cancel_requested\n");
  auto task = orchestrator.wait_task(id, in_state({"cancelled", "failed", "succeeded"}));
  const auto took = Clock::now() - asked;
  ASSERT_EQ(task["state"], "cancelled") << task.dump(2);
  // One heartbeat interval (500 ms) to hear of it, then SIGTERM ends `sleep` at once and the
  // result is posted. The bound only tells that from the task running its 60 s out.
  EXPECT_LT(took, 30s);
  EXPECT_EQ(task["result"]["status"], "cancelled");
  EXPECT_EQ(task["attempt"], 1) << "a cancelled task is not run again";

  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
}

TEST_F(DaemonTest, ATaskOfASigkilledWorkerIsRequeuedAndCompletedByAnotherWithinTheLeaseTtl) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  auto first = start_worker(orchestrator.url());
  ASSERT_TRUE(first->wait_for_output("registered with", 20s));
  const std::string id = orchestrator.submit(sleeper("begun", "3", "finished"));
  auto running = orchestrator.wait_task(id, [&](const json& t) {
    return t["state"] == "running" && orchestrator.logs(id) == "begun\n";
  });
  ASSERT_EQ(running["state"], "running");
  const std::string lost_worker = running["workerId"];

  first->send_signal(SIGKILL);
  const auto killed = Clock::now();
  first->wait(10s);
  auto second = start_worker(orchestrator.url());
  ASSERT_TRUE(second->wait_for_output("registered with", 20s));

  auto requeued = orchestrator.wait_task(id, [](const json& t) { return t["attempt"] == 2; });
  const auto detected = Clock::now() - killed;
  ASSERT_EQ(requeued["attempt"], 2) << requeued.dump(2);
  // Lease TTL 2 s, then a 100 ms retry backoff: the lost worker costs seconds, not minutes.
  EXPECT_LT(detected, 4s);

  auto task = orchestrator.wait_task(id, in_state({"succeeded", "failed", "dead"}));
  ASSERT_EQ(task["state"], "succeeded") << task.dump(2);
  EXPECT_NE(task["workerId"], lost_worker);
  EXPECT_EQ(orchestrator.logs(id), "begun\nfinished\n") << "the log of the attempt that succeeded";
  second->send_signal(SIGTERM);
  EXPECT_EQ(second->wait(30s).exit_code, 0);
}

TEST_F(DaemonTest, SigtermDrainsTheRunningTaskDeliversItsResultUnregistersAndExits0) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  auto worker = start_worker(orchestrator.url());
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));
  // Long enough that the task is still running when the drain begins on a loaded machine.
  const std::string id = orchestrator.submit(sleeper("begun", "5", "finished"));
  auto running = orchestrator.wait_task(id, [&](const json& t) {
    return t["state"] == "running" && orchestrator.logs(id) == "begun\n";
  });
  ASSERT_EQ(running["state"], "running");
  const std::string worker_id = running["workerId"];

  worker->send_signal(SIGTERM);
  ASSERT_TRUE(worker->wait_for_output("draining", 5s));
  // Polls stop at once: a task submitted during the drain is left for other workers.
  const std::string later = orchestrator.submit(sleeper("later", "0", "done"));
  auto draining = orchestrator.worker_view(worker_id);
  EXPECT_EQ(draining["state"], "draining") << draining.dump();

  auto r = worker->wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto task = orchestrator.task(id);
  EXPECT_EQ(task["state"], "succeeded") << task.dump(2);
  EXPECT_EQ(orchestrator.logs(id), "begun\nfinished\n");
  EXPECT_EQ(orchestrator.task(later)["state"], "queued");
  EXPECT_EQ(orchestrator.worker_view(worker_id)["state"], "gone");
}

TEST_F(DaemonTest, ASecondSigtermCancelsTheRunningTaskWhichIsReportedAndRunsAgainElsewhere) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  auto worker = start_worker(orchestrator.url());
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));
  const std::string id = orchestrator.submit(sleeper("begun", "60", "never"));
  auto running = orchestrator.wait_task(id, [&](const json& t) {
    return t["state"] == "running" && orchestrator.logs(id) == "begun\n";
  });
  ASSERT_EQ(running["state"], "running");

  worker->send_signal(SIGTERM);
  ASSERT_TRUE(worker->wait_for_output("draining", 5s));
  const auto second = Clock::now();
  worker->send_signal(SIGTERM);
  auto r = worker->wait(30s);
  EXPECT_LT(Clock::now() - second, 5s) << "well within the 2 s grace period plus delivery";
  EXPECT_EQ(r.exit_code, 0) << "everything was reported\n" << r.err;

  auto task = orchestrator.task(id);
  EXPECT_TRUE(in_state({"retry_wait", "queued"})(task)) << task.dump(2);
  EXPECT_EQ(task["error"]["code"], "worker_shutdown");
  EXPECT_EQ(task["error"]["retryable"], true);
  EXPECT_EQ(task["result"]["status"], "cancelled");

  // The next worker runs it from the start.
  auto next = start_worker(orchestrator.url());
  auto again = orchestrator.wait_task(
      id, [](const json& t) { return t["attempt"] == 2 && t["state"] == "running"; });
  EXPECT_EQ(again["attempt"], 2) << again.dump(2);
  next->send_signal(SIGTERM);
  // A second SIGTERM sent while the first is still pending would merge with it.
  ASSERT_TRUE(next->wait_for_output("draining", 5s));
  next->send_signal(SIGTERM);
  EXPECT_EQ(next->wait(30s).exit_code, 0);
}

TEST_F(DaemonTest, TheDrainTimeoutCancelsTasksThatTakeTooLong) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  auto worker = start_worker(orchestrator.url(), {"--drain-timeout", "1s"});
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));
  const std::string id = orchestrator.submit(sleeper("begun", "60", "never"));
  auto running = orchestrator.wait_task(id, [&](const json& t) {
    return t["state"] == "running" && orchestrator.logs(id) == "begun\n";
  });
  ASSERT_EQ(running["state"], "running");
  const auto signalled = Clock::now();
  worker->send_signal(SIGTERM);
  auto r = worker->wait(30s);
  const auto took = Clock::now() - signalled;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 30s) << "the drain waited for the task's 60 s instead of its 1 s timeout";
  EXPECT_NE(r.err.find("drain timeout"), std::string::npos) << r.err;
  EXPECT_EQ(orchestrator.task(id)["error"]["code"], "worker_shutdown");
}

TEST_F(DaemonTest, WaitsForAnOrchestratorThatIsNotUpYetAndHealthFollowsHeartbeats) {
  const int port = free_port();
  const int health = free_port();
  auto worker = start_worker("http://127.0.0.1:" + std::to_string(port),
                             {"--health-listen", "127.0.0.1:" + std::to_string(health)});
  ASSERT_TRUE(worker->wait_for_output("registration with", 10s)) << "it retries, and says so";
  auto [starting, starting_body] = http_get(health, "/health");
  EXPECT_EQ(starting, 200) << "alive while it waits: restarting it would not help";
  EXPECT_EQ(json::parse(starting_body)["status"], "registering");

  Orchestrator orchestrator(dir_.path(), fast_orchestrator(), port);
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));
  const std::string id = orchestrator.submit(sleeper("begun", "0", "finished"));
  EXPECT_EQ(orchestrator.wait_task(id, in_state({"succeeded", "failed"}))["state"], "succeeded");

  // Heartbeats failing for longer than the lease TTL (2 s): unhealthy.
  orchestrator.stop();
  std::this_thread::sleep_for(2500ms);
  auto [down, down_body] = http_get(health, "/health");
  EXPECT_EQ(down, 503) << down_body;
  EXPECT_EQ(json::parse(down_body)["status"], "unhealthy");

  // The orchestrator keeps its state: the same worker carries on with its old token.
  orchestrator.start();
  const auto deadline = Clock::now() + 10s;
  int status = 0;
  while (Clock::now() < deadline && (status = http_get(health, "/health").first) != 200) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(status, 200);
  const std::string after = orchestrator.submit(sleeper("again", "0", "done"));
  EXPECT_EQ(orchestrator.wait_task(after, in_state({"succeeded", "failed"}))["state"], "succeeded");
  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
}

TEST_F(DaemonTest, ADrainingWorkerCutOffFromTheOrchestratorStaysHealthyAndDeliversLater) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  const int health = free_port();
  auto worker =
      start_worker(orchestrator.url(), {"--health-listen", "127.0.0.1:" + std::to_string(health)});
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));
  // Long enough to be seen running with its first line shipped (a 500 ms tick) even on a
  // loaded machine under the sanitizers, where 1 s once ended first; it ends during the
  // 6 s without the orchestrator below either way.
  const std::string id = orchestrator.submit(sleeper("begun", "3", "finished"));
  auto running = orchestrator.wait_task(id, [&](const json& t) {
    return t["state"] == "running" && orchestrator.logs(id) == "begun\n";
  });
  ASSERT_EQ(running["state"], "running");

  // The orchestrator goes away; the worker drains, its task ends, and the result waits.
  orchestrator.stop();
  worker->send_signal(SIGTERM);
  ASSERT_TRUE(worker->wait_for_output("draining", 5s));
  // Three lease TTLs without contact: a running worker would be unhealthy by now, but a
  // liveness probe that restarted this one would lose the result it holds.
  std::this_thread::sleep_for(6s);
  auto [status, body] = http_get(health, "/health");
  EXPECT_EQ(status, 200) << body;
  EXPECT_EQ(json::parse(body).value("status", ""), "draining") << body;

  orchestrator.start();
  auto r = worker->wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(orchestrator.task(id)["state"], "succeeded") << orchestrator.task(id).dump(2);
  EXPECT_EQ(orchestrator.logs(id), "begun\nfinished\n");
}

TEST_F(DaemonTest, ARefusedRegistrationTokenExits2AtOnceWithoutShowingIt) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  auto worker =
      start_worker(orchestrator.url(), {"--token", "wrong-registration-token-xyz"}, {"A=b"});
  auto r = worker->wait(20s);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("refused the registration token"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("wrong-registration-token-xyz"), std::string::npos) << r.err;

  auto missing = testing::run_process(
      {TAMMA_WORKER_BINARY, "start", "--orchestrator", orchestrator.url()}, {"A=b"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("no registration token"), std::string::npos) << missing.err;
}

TEST_F(DaemonTest, AWorkerWhoseHostFailsTasksStandsDownSaysWhyAndRecovers) {
  auto flags = fast_orchestrator();
  flags.insert(flags.end(), {"--avoid-failed-host", "1s"});
  Orchestrator orchestrator(dir_.path(), flags);
  // The workspace root on a full filesystem: every task fails there, through no fault of its
  // own (a full disk on a real host, or /tmp filled by something else).
  testing::SmallTmpfs disk(dir_.path() / "small-disk", "64m");
  ASSERT_TRUE(disk.mounted()) << "mounting a tmpfs needs root: " << std::strerror(errno);
  disk.fill();
  const int health = free_port();
  auto worker =
      start_worker(orchestrator.url(), {"--health-listen", "127.0.0.1:" + std::to_string(health)},
                   {}, dir_.path() / "small-disk" / "ws");
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));

  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    json spec = {{"type", "command"},
                 {"steps", {{{"name", "write"}, {"run", "echo built > out.txt && cat out.txt"}}}}};
    ids.push_back(orchestrator.submit(spec, {"--max-retries", "0"}));
  }
  // Three host failures in a row: it stands down, and says why wherever anyone looks.
  const auto deadline = Clock::now() + 30s;
  std::pair<int, std::string> h;
  while (Clock::now() < deadline && (h = http_get(health, "/health")).first != 503) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(h.first, 503) << h.second;
  const json body = json::parse(h.second);
  EXPECT_EQ(body["status"], "unhealthy");
  EXPECT_NE(body["reason"].get<std::string>().find("failed because of this host"),
            std::string::npos)
      << h.second;
  EXPECT_NE(body["reason"].get<std::string>().find("free"), std::string::npos)
      << "names the resource: " << h.second;
  const auto unhealthy_deadline = Clock::now() + 10s;
  json view = orchestrator.worker_view(body["workerId"]);
  while (!view.contains("unhealthy") && Clock::now() < unhealthy_deadline) {
    std::this_thread::sleep_for(100ms);
    view = orchestrator.worker_view(body["workerId"]);
  }
  EXPECT_TRUE(view.contains("unhealthy")) << view.dump();
  // None of the tasks failed for good, although none may be retried (maxRetries 0).
  for (const auto& id : ids) {
    auto t = orchestrator.task(id);
    EXPECT_TRUE(t["state"] == "queued" || t["state"] == "retry_wait") << t.dump(2);
    if (t.contains("error")) {
      EXPECT_EQ(t["error"]["code"], "host_failure") << t.dump(2);
    }
  }

  // The disk has room again: the worker's next check passes, it takes the tasks, they pass.
  disk.empty();
  for (const auto& id : ids) {
    auto t = orchestrator.wait_task(id, in_state({"succeeded", "failed", "dead"}), 60s);
    EXPECT_EQ(t["state"], "succeeded") << t.dump(2);
    EXPECT_EQ(t["result"]["steps"][0]["stdout"], "built\n") << t.dump(2);
  }
  auto [after, after_body] = http_get(health, "/health");
  EXPECT_EQ(after, 200) << after_body;
  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
}

// The other side of the rule above: a task that fills the disk itself fails as itself. The
// daemon removes a succeeded task's workspace after the report (ADR 0035); a failed one's must
// be gone before the host is checked, or the task's own files pass for a full host and its
// failure becomes a retryable host_failure, run again on the next worker's disk.
TEST_F(DaemonTest, ATaskThatFillsTheDiskFailsAsItselfAndTheWorkerStaysHealthy) {
  Orchestrator orchestrator(dir_.path(), fast_orchestrator());
  testing::SmallTmpfs disk(dir_.path() / "small-disk", "64m");
  ASSERT_TRUE(disk.mounted()) << "mounting a tmpfs needs root: " << std::strerror(errno);
  const int health = free_port();
  auto worker =
      start_worker(orchestrator.url(), {"--health-listen", "127.0.0.1:" + std::to_string(health)},
                   {}, dir_.path() / "small-disk" / "ws");
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));

  // Many files (their removal takes a while), then every byte left: no disk limit is set.
  json spec = {{"type", "command"},
               {"steps",
                {{{"name", "fill"},
                  {"run",
                   "for i in $(seq 5000); do : > f$i; done; "
                   "dd if=/dev/zero of=big bs=1M 2>/dev/null; exit 1"}}}}};
  const std::string id = orchestrator.submit(spec, {"--max-retries", "0"});
  auto t = orchestrator.wait_task(id, in_state({"succeeded", "failed", "dead"}), 60s);
  EXPECT_EQ(t["state"], "failed") << t.dump(2);
  if (t.contains("error")) {
    EXPECT_NE(t["error"]["code"], "host_failure") << "its own full disk blamed on the host";
  }
  auto [code, body] = http_get(health, "/health");
  EXPECT_EQ(code, 200) << body;
  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() / "small-disk" / "ws"))
      << "workspace left behind";
}

}  // namespace
}  // namespace tamma
