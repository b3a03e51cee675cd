// The orchestrator process itself standing still (SIGSTOP: a debugger, a frozen VM, a host
// swapping): time it could not serve is not held against workers, and a poll whose client gave
// up meanwhile is never handed a task. The real binary, really stopped.

#include <future>

#include "orchestrator_fixture.h"
#include "running_orchestrator.h"

namespace tamma::orchestrator::testing {
namespace {

const std::vector<std::string> kTokens = {
    std::string("TAMMA_ADMIN_TOKEN=") + kAdminToken,
    std::string("TAMMA_REGISTRATION_TOKEN=") + kRegistrationToken};

std::unique_ptr<TestWorker> register_at(const std::string& url) {
  HttpClient http(url, kRegistrationToken);
  auto r = http.post_json("/api/v1/workers/register", {{"capabilities", capabilities()}});
  EXPECT_EQ(r.status, 201) << r.body;
  auto body = r.json();
  return std::make_unique<TestWorker>(url, body.at("workerId").get<std::string>(),
                                      body.at("token").get<std::string>());
}

TEST(OrchestratorStall, LeasesAreNotExpiredForTimeTheOrchestratorWasStopped) {
  tamma::testing::TempDir dir;
  RunningOrchestrator server(dir.path(), kTokens,
                             {"--lease-ttl", "2s", "--heartbeat-interval", "500ms"});
  ASSERT_TRUE(server.ready());
  auto worker = register_at(server.url());
  HttpClient admin(server.url(), kAdminToken);
  ASSERT_EQ(admin.post_json("/api/v1/tasks", submit_body(task_spec())).status, 201);
  auto polled = worker->poll(2000);
  ASSERT_EQ(polled.status, 200) << polled.body;
  const Held held{polled.json()["taskId"], polled.json()["attempt"], polled.json()["leaseId"]};
  ASSERT_EQ(worker
                ->task_post(held.task_id, "started",
                            {{"attempt", held.attempt}, {"leaseId", held.lease_id}})
                .status,
            200);

  // Stopped for 2.5 lease TTLs. The worker kept trying all along; its first heartbeat after
  // the stop must still find its lease, and its result must be taken.
  server.pause();
  std::this_thread::sleep_for(5s);
  server.resume();
  json lease = {{"taskId", held.task_id}, {"attempt", held.attempt}, {"leaseId", held.lease_id}};
  auto beat = worker->heartbeat(json::array({lease}));
  ASSERT_EQ(beat.status, 200) << beat.body;
  EXPECT_TRUE(beat.json()["lostLeases"].empty()) << beat.body;
  auto done = worker->complete(held.task_id, held.attempt, held.lease_id);
  EXPECT_EQ(done.status, 200) << done.body;
  auto view = admin.get("/api/v1/tasks/" + held.task_id).json();
  EXPECT_EQ(view["state"], "succeeded");
  EXPECT_EQ(view["attempt"], 1) << "no rerun caused by the orchestrator's own stall";
  EXPECT_NE(server.log().find("did not run for"), std::string::npos) << server.log();
}

TEST(OrchestratorStall, APollPastItsClientsDeadlineIsNeverHandedATask) {
  tamma::testing::TempDir dir;
  RunningOrchestrator server(dir.path(), kTokens, {"--ack-timeout", "1s"});
  ASSERT_TRUE(server.ready());
  auto waiting = register_at(server.url());
  // A poll that asked to wait 1 s is parked; then the process stops for 3 s, and a task is
  // submitted meanwhile (the submit sits in the socket until the process runs again).
  auto parked = std::async(std::launch::async, [&] { return waiting->poll(1000); });
  std::this_thread::sleep_for(300ms);
  server.pause();
  auto submitted = std::async(std::launch::async, [&] {
    HttpClient admin(server.url(), kAdminToken);
    return admin.post_json("/api/v1/tasks", submit_body(task_spec(), 0, /*max_retries=*/0));
  });
  std::this_thread::sleep_for(3s);
  server.resume();
  auto poll = parked.get();
  auto submit = submitted.get();
  ASSERT_EQ(submit.status, 201) << submit.body;
  // Its wait was over long ago: the task must not go to it (its client may have hung up).
  EXPECT_EQ(poll.status, 204) << poll.body;
  // The task is still there for the next poll, on its first attempt.
  auto next = waiting->poll(2000);
  ASSERT_EQ(next.status, 200) << next.body;
  EXPECT_EQ(next.json()["taskId"], submit.json()["id"]);
  EXPECT_EQ(next.json()["attempt"], 1);
}

TEST(OrchestratorStall, APollThatWaitedUnreadWhileStoppedIsNotHandedATaskIfItsClientLeft) {
  tamma::testing::TempDir dir;
  RunningOrchestrator server(dir.path(), kTokens, {"--ack-timeout", "30s"});
  ASSERT_TRUE(server.ready());
  auto worker = register_at(server.url());
  // The process stands still before the poll is even read: the poll waits in the socket, and
  // its client gives up after a second and hangs up.
  server.pause();
  auto gave_up = std::async(std::launch::async, [&] {
    try {
      return worker->http
          .request("POST", "/api/v1/workers/" + worker->id + "/poll?waitMs=1000", {}, {},
                   std::chrono::milliseconds(1000))
          .status;
    } catch (const std::exception&) {
      return 0L;  // timed out: the client hangs up
    }
  });
  auto submitted = std::async(std::launch::async, [&] {
    HttpClient admin(server.url(), kAdminToken);
    return admin.post_json("/api/v1/tasks", submit_body(task_spec(), 0, /*max_retries=*/0));
  });
  EXPECT_EQ(gave_up.get(), 0) << "the client timed out";
  std::this_thread::sleep_for(1s);
  server.resume();
  auto submit = submitted.get();
  ASSERT_EQ(submit.status, 201) << submit.body;
  // Read only now, from a client that left: it must not take the task, which would then wait
  // for the 30 s acknowledgement timeout. The next poll gets it at once, as attempt 1.
  auto next = worker->poll(2000);
  ASSERT_EQ(next.status, 200) << next.body;
  EXPECT_EQ(next.json()["taskId"], submit.json()["id"]);
  EXPECT_EQ(next.json()["attempt"], 1);
  EXPECT_EQ(server.log().find("never acknowledged"), std::string::npos) << server.log();
}

}  // namespace
}  // namespace tamma::orchestrator::testing
