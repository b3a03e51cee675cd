// The tamma-orchestrator binary as users run it: serve (tokens printed once, SIGTERM), and the
// admin commands against it.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <regex>

#include "orchestrator_fixture.h"
#include "running_orchestrator.h"

namespace tamma::orchestrator::testing {
namespace {

using tamma::testing::ChildProcess;
using tamma::testing::run_process;
using tamma::testing::TempDir;

TEST(OrchestratorBinary, GeneratesTokensOncePersistsThemAndStopsCleanlyOnSigterm) {
  TempDir dir;
  std::vector<std::string> no_tokens = {
      "TAMMA_ADMIN_TOKEN=", "TAMMA_REGISTRATION_TOKEN=", "TAMMA_ADMIN_TOKEN_FILE=",
      "TAMMA_REGISTRATION_TOKEN_FILE="};
  std::string admin;
  {
    RunningOrchestrator first(dir.path(), no_tokens);
    ASSERT_TRUE(first.ready());
    auto r = first.stop();
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m, std::regex("TAMMA_ADMIN_TOKEN=([0-9a-f]{64})\n")))
        << r.out;
    admin = m[1];
    EXPECT_TRUE(std::regex_search(r.out, std::regex("TAMMA_REGISTRATION_TOKEN=[0-9a-f]{64}\n")));
    EXPECT_EQ(r.err.find(admin), std::string::npos) << "tokens are never logged";
  }
  RunningOrchestrator second(dir.path(), no_tokens);
  ASSERT_TRUE(second.ready());
  HttpClient http(second.url(), admin);
  EXPECT_EQ(http.get("/api/v1/tasks").status, 200) << "the printed token still works";

  auto tasks_before = http.get("/api/v1/workers").json();
  EXPECT_TRUE(tasks_before["workers"].empty());
  auto r = second.stop();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("TAMMA_ADMIN_TOKEN="), std::string::npos) << "printed at first start only";
}

TEST(OrchestratorBinary, SigtermAnswersParkedPollsWith204) {
  TempDir dir;
  RunningOrchestrator server(dir.path(),
                             {std::string("TAMMA_ADMIN_TOKEN=") + kAdminToken,
                              std::string("TAMMA_REGISTRATION_TOKEN=") + kRegistrationToken});
  ASSERT_TRUE(server.ready());
  HttpClient reg(server.url(), kRegistrationToken);
  auto body = reg.post_json("/api/v1/workers/register", {{"capabilities", capabilities()}}).json();
  TestWorker worker(server.url(), body["workerId"], body["token"]);
  auto parked = std::async(std::launch::async, [&] { return worker.poll(20000); });
  // SIGTERM once the poll is parked (a fixed wait was a guess on a loaded machine).
  HttpClient admin(server.url(), kAdminToken);
  wait_for_parked_polls(admin, 1);
  auto start = std::chrono::steady_clock::now();
  auto r = server.stop();
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(parked.get().status, 204);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(r.err.find(worker.token), std::string::npos) << "tokens are never logged";
  EXPECT_NE(r.err.find(worker.id), std::string::npos) << "the worker id is, instead";
}

// --threads 0 (ADR 0039): no I/O threads, the core does the HTTP too, and the server still
// hands a parked poll its task, answers on kept connections and stops cleanly.
TEST(OrchestratorBinary, WithoutIoThreadsTheCoreThreadServesEverything) {
  const std::vector<std::string> tokens = {
      std::string("TAMMA_ADMIN_TOKEN=") + kAdminToken,
      std::string("TAMMA_REGISTRATION_TOKEN=") + kRegistrationToken};
  const auto threads_of = [](int pid) {
    int n = 0;
    for ([[maybe_unused]] const auto& t :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
      ++n;
    }
    return n;
  };
  TempDir usual_dir;
  RunningOrchestrator usual(usual_dir.path(), tokens, {"--threads", "2"});
  ASSERT_TRUE(usual.ready());
  const int usual_threads = threads_of(usual.pid());
  EXPECT_EQ(usual.stop().exit_code, 0);

  TempDir dir;
  RunningOrchestrator server(dir.path(), tokens, {"--threads", "0"});
  ASSERT_TRUE(server.ready());
  EXPECT_EQ(threads_of(server.pid()), usual_threads - 2) << "the two I/O threads are not made";
  HttpClient reg(server.url(), kRegistrationToken);
  auto body = reg.post_json("/api/v1/workers/register", {{"capabilities", capabilities()}}).json();
  TestWorker worker(server.url(), body["workerId"], body["token"]);
  auto parked = std::async(std::launch::async, [&] { return worker.poll(20000); });
  HttpClient admin(server.url(), kAdminToken);
  wait_for_parked_polls(admin, 1);
  auto submitted = admin.post_json("/api/v1/tasks", submit_body(task_spec()));
  ASSERT_EQ(submitted.status, 201) << submitted.body;
  auto assignment = parked.get();
  ASSERT_EQ(assignment.status, 200) << assignment.body;
  const auto a = assignment.json();
  EXPECT_EQ(a["taskId"], submitted.json()["id"]);
  EXPECT_EQ(worker.complete(a["taskId"], a["attempt"], a["leaseId"]).status, 200);
  EXPECT_EQ(admin.get("/health").status, 200);

  // Parked again, then SIGTERM: answered 204, and the process exits 0.
  auto again = std::async(std::launch::async, [&] { return worker.poll(20000); });
  wait_for_parked_polls(admin, 1);
  auto r = server.stop();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(again.get().status, 204);
}

TEST(OrchestratorBinary, AThreadCountOutOfRangeIsRefusedByName) {
  TempDir dir;
  for (const char* threads : {"-1", "65"}) {
    auto r = run_process({kBinary, "serve", "--listen", "127.0.0.1:0", "--db",
                          "sqlite:" + (dir.path() / "db.sqlite").string(), "--threads", threads},
                         {}, std::chrono::seconds(20));
    EXPECT_NE(r.exit_code, 0) << threads;
    EXPECT_NE(r.err.find("--threads must be between 0 and 64"), std::string::npos) << r.err;
  }
}

TEST(OrchestratorBinary, ACheckpointThresholdOutOfRangeIsRefusedByName) {
  TempDir dir;
  for (const char* pages : {"-1", "1000001"}) {
    auto r = run_process(
        {kBinary, "serve", "--listen", "127.0.0.1:0", "--db",
         "sqlite:" + (dir.path() / "db.sqlite").string(), "--sqlite-checkpoint-pages", pages},
        {}, std::chrono::seconds(20));
    EXPECT_NE(r.exit_code, 0) << pages;
    EXPECT_NE(r.err.find("--sqlite-checkpoint-pages must be between 0 and 1000000"),
              std::string::npos)
        << r.err;
  }
}

TEST(OrchestratorBinary, AdminCommandsDriveATaskFromSubmitToLogs) {
  TempDir dir;
  std::vector<std::string> env = {std::string("TAMMA_ADMIN_TOKEN=") + kAdminToken,
                                  std::string("TAMMA_REGISTRATION_TOKEN=") + kRegistrationToken};
  RunningOrchestrator server(dir.path(), env);
  ASSERT_TRUE(server.ready());
  auto task_file = dir.path() / "task.json";
  tamma::testing::write_file(task_file, task_spec("command", "echo hi").dump());
  std::vector<std::string> cli_env = {"TAMMA_ORCHESTRATOR_URL=" + server.url(),
                                      std::string("TAMMA_TOKEN=") + kAdminToken};
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), kBinary);
    return run_process(args, cli_env, std::chrono::seconds(60));
  };

  auto submitted = cli({"submit", task_file.string(), "--priority", "3", "--label", "os=linux"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  ASSERT_TRUE(std::regex_match(submitted.out, std::regex("tsk_[0-9a-f]{20}\n"))) << submitted.out;
  std::string id = submitted.out.substr(0, submitted.out.size() - 1);

  auto shown = cli({"task", id});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("state:     queued"), std::string::npos) << shown.out;
  auto as_json = cli({"task", id, "--json"});
  EXPECT_EQ(nlohmann::json::parse(as_json.out)["priority"], 3);
  auto listed = cli({"tasks", "--state", "queued"});
  EXPECT_NE(listed.out.find(id), std::string::npos) << listed.out;
  EXPECT_EQ(cli({"tasks", "--state", "running"}).out.find(id), std::string::npos);

  HttpClient reg(server.url(), kRegistrationToken);
  auto body = reg.post_json("/api/v1/workers/register",
                            {{"capabilities", capabilities({"command"}, {{"os", "linux"}})}})
                  .json();
  TestWorker worker(server.url(), body["workerId"], body["token"]);
  auto workers = cli({"workers"});
  EXPECT_NE(workers.out.find(worker.id), std::string::npos) << workers.out;
  EXPECT_NE(workers.out.find("online"), std::string::npos) << workers.out;

  auto lease = worker.poll(2000).json();
  ASSERT_EQ(lease["taskId"], id);
  ASSERT_EQ(worker.append_raw(id, 1, lease["leaseId"], 0, "first line\n").status, 200);
  auto logs = cli({"logs", id});
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_EQ(logs.out, "first line\n");

  auto follow = std::async(std::launch::async, [&] { return cli({"logs", id, "--follow"}); });
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(worker.append_raw(id, 1, lease["leaseId"], 11, "second line\n").status, 200);
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(worker.complete(id, 1, lease["leaseId"]).status, 200);
  auto followed = follow.get();
  EXPECT_EQ(followed.exit_code, 0) << followed.err;
  EXPECT_EQ(followed.out, "first line\nsecond line\n");

  // submit --wait: exit status follows the task's final state.
  for (const auto& [status, code] :
       std::vector<std::pair<std::string, int>>{{"succeeded", 0}, {"failed", 1}}) {
    auto waiting = std::async(std::launch::async, [&] {
      return cli({"submit", task_file.string(), "--wait"});
    });
    auto a = worker.poll(5000).json();
    ASSERT_EQ(worker.complete(a["taskId"], a["attempt"], a["leaseId"], status).status, 200);
    auto r = waiting.get();
    EXPECT_EQ(r.exit_code, code) << status << ": " << r.err;
    EXPECT_EQ(r.out, a["taskId"].get<std::string>() + "\n");
  }

  auto queued = cli({"submit", task_file.string()});
  std::string queued_id = queued.out.substr(0, queued.out.size() - 1);
  auto cancelled = cli({"cancel", queued_id});
  EXPECT_EQ(cancelled.exit_code, 0) << cancelled.err;
  EXPECT_EQ(cancelled.out, queued_id + " cancelled\n");

  auto refused = run_process({kBinary, "tasks", "--url", server.url(), "--token", "wrong-token"},
                             {"TAMMA_TOKEN="});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("401"), std::string::npos) << refused.err;
  auto unreachable =
      run_process({kBinary, "tasks", "--url", "http://127.0.0.1:1", "--token", "t"}, {});
  EXPECT_EQ(unreachable.exit_code, 6) << unreachable.err;
  auto missing = cli({"task", "tsk_nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("task_not_found"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace tamma::orchestrator::testing
