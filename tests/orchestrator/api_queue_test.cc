// Submitting and handing out tasks: leases, idempotency, long-poll wake-ups, matching, priority.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

TEST(OrchestratorQueue, SubmitThenPollGivesAttemptOneWithALease) {
  TestServer server;
  auto worker = server.register_worker();
  json spec = task_spec("command", "echo hi");
  spec["env"] = {{"A", "1"}};
  spec["secrets"] = {{"TOKEN", "s3cret-value-123"}};
  auto submitted = server.admin()->post_json("/api/v1/tasks", submit_body(spec));
  ASSERT_EQ(submitted.status, 201) << submitted.body;
  auto view = submitted.json();
  std::string id = view["id"];
  EXPECT_EQ(view["state"], "queued");
  EXPECT_EQ(view["attempt"], 0);
  EXPECT_EQ(submitted.header("location"), "/api/v1/tasks/" + id);
  // Admin views mask secrets.
  EXPECT_EQ(view["task"]["secrets"]["TOKEN"], "[MASKED]");

  auto r = worker->poll(1000);
  ASSERT_EQ(r.status, 200) << r.body;
  auto a = r.json();
  EXPECT_EQ(a["taskId"], id);
  EXPECT_EQ(a["attempt"], 1);
  EXPECT_EQ(a["leaseId"].get<std::string>().size(), 32u);
  EXPECT_EQ(a["leaseTtlMs"], 30000);
  // The spec as submitted, with the id set; the worker gets the real secret.
  EXPECT_EQ(a["task"]["id"], id);
  EXPECT_EQ(a["task"]["steps"][0]["run"], "echo hi");
  EXPECT_EQ(a["task"]["secrets"]["TOKEN"], "s3cret-value-123");

  auto t = server.task(id);
  EXPECT_EQ(t["state"], "running");
  EXPECT_EQ(t["attempt"], 1);
  EXPECT_EQ(t["workerId"], worker->id);
  // Nothing left: an immediate poll says 204.
  auto again = worker->http.request("POST", "/api/v1/workers/" + worker->id + "/poll?waitMs=0");
  EXPECT_EQ(again.status, 409) << "one slot, one lease held";
}

TEST(OrchestratorQueue, IdempotencyKeyReturnsTheSameTask) {
  TestServer server;
  auto admin = server.admin();
  auto first =
      admin->post_json("/api/v1/tasks", submit_body(task_spec()), {"Idempotency-Key: build-42"});
  ASSERT_EQ(first.status, 201) << first.body;
  auto second =
      admin->post_json("/api/v1/tasks", submit_body(task_spec()), {"Idempotency-Key: build-42"});
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(first.json()["id"], second.json()["id"]);

  // The body field works as the header does.
  json body = submit_body(task_spec());
  body["idempotencyKey"] = "build-42";
  auto third = admin->post_json("/api/v1/tasks", body);
  EXPECT_EQ(third.status, 200);
  EXPECT_EQ(third.json()["id"], first.json()["id"]);

  // The same key with a different request is refused, not silently merged.
  auto other = admin->post_json("/api/v1/tasks", submit_body(task_spec("command", "false")),
                                {"Idempotency-Key: build-42"});
  EXPECT_EQ(other.status, 422);
  EXPECT_EQ(error_code(other), "idempotency_key_reused");

  auto list = admin->get("/api/v1/tasks").json();
  EXPECT_EQ(list["tasks"].size(), 1u);
}

// The submit itself answers a parked poll; how fast is pipeline_bench's to say (issue 13: no
// timed assertions), so the bound here only tells the submit's answer from the poll's own
// timeout (30 s).
TEST(OrchestratorQueue, AParkedLongPollIsAnsweredByTheSubmitNotByItsTimeout) {
  TestServer server;
  auto worker = server.register_worker();
  auto waiting = std::async(std::launch::async, [&] {
    auto r = worker->poll(30000);
    return std::make_pair(r, std::chrono::steady_clock::now());
  });
  // Let the poll park first.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = server.admin()->get("/metrics").body;
    if (m.find("tamma_waiting_polls 1") != std::string::npos) break;
    std::this_thread::sleep_for(5ms);
  }
  auto submitted_at = std::chrono::steady_clock::now();
  std::string id = server.submit(submit_body(task_spec()));
  auto [r, answered_at] = waiting.get();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["taskId"], id);
  auto latency = std::chrono::duration_cast<std::chrono::milliseconds>(answered_at - submitted_at);
  EXPECT_LT(latency.count(), 15000) << "the poll was answered by its timeout, not the submit";
}

TEST(OrchestratorQueue, OneTaskWakesOnlyOneOfTwoWaiters) {
  TestServer server([](ServerConfig& c) { c.poll_timeout = 1500ms; });
  auto a = server.register_worker();
  auto b = server.register_worker();
  auto launched = std::chrono::steady_clock::now();
  auto timed_poll = [](TestWorker& w) {
    auto r = w.poll(1500);
    return std::make_pair(r, std::chrono::steady_clock::now());
  };
  auto pa = std::async(std::launch::async, [&] { return timed_poll(*a); });
  auto pb = std::async(std::launch::async, [&] { return timed_poll(*b); });
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline &&
         server.admin()->get("/metrics").body.find("tamma_waiting_polls 2") == std::string::npos) {
    std::this_thread::sleep_for(5ms);
  }
  server.submit(submit_body(task_spec()));
  auto [ra, at_a] = pa.get();
  auto [rb, at_b] = pb.get();
  ASSERT_EQ((ra.status == 200) + (rb.status == 200), 1) << ra.status << " " << rb.status;
  ASSERT_EQ((ra.status == 204) + (rb.status == 204), 1);
  // The other one stayed parked until its own timeout: it was not woken for nothing.
  auto empty_at = ra.status == 204 ? at_a : at_b;
  EXPECT_GE(empty_at - launched, 1400ms);
}

TEST(OrchestratorQueue, TypesAndLabelsDecideWhichWorkerGetsATask) {
  TestServer server;
  auto builder =
      server.register_worker(capabilities({"build"}, {{"arch", "arm64"}, {"gpu", "no"}}));
  auto tester = server.register_worker(capabilities({"test", "command"}, {{"arch", "x86_64"}}));
  std::string needs_arm = server.submit(submit_body(task_spec("build"), 0, 3, {{"arch", "arm64"}}));
  std::string needs_x86 =
      server.submit(submit_body(task_spec("build"), 0, 3, {{"arch", "x86_64"}}));
  std::string test_task = server.submit(submit_body(task_spec("test")));

  auto b = builder->poll(500);
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(b.json()["taskId"], needs_arm);
  auto t = tester->poll(500);
  ASSERT_EQ(t.status, 200) << t.body;
  // The x86 build task needs a builder; the tester does not run builds.
  EXPECT_EQ(t.json()["taskId"], test_task);
  EXPECT_EQ(server.task(needs_x86)["state"], "queued");

  // A task requiring a label no worker offers waits; a parked matching worker is woken for it.
  auto x86_builder = server.register_worker(capabilities({"build"}, {{"arch", "x86_64"}}));
  auto r = x86_builder->poll(500);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["taskId"], needs_x86);
}

TEST(OrchestratorQueue, HigherPriorityFirstThenFifo) {
  TestServer server;
  std::string low1 = server.submit(submit_body(task_spec(), 0));
  std::string high1 = server.submit(submit_body(task_spec(), 10));
  std::string low2 = server.submit(submit_body(task_spec(), 0));
  std::string high2 = server.submit(submit_body(task_spec(), 10));
  std::string neg = server.submit(submit_body(task_spec(), -5));
  auto worker = server.register_worker(capabilities({"command"}, json::object(), 8));
  std::vector<std::string> order;
  for (int i = 0; i < 5; ++i) {
    auto r = worker->poll(0);
    ASSERT_EQ(r.status, 200) << r.body;
    order.push_back(r.json()["taskId"]);
  }
  EXPECT_EQ(order, (std::vector<std::string>{high1, high2, low1, low2, neg}));
  EXPECT_EQ(worker->poll(0).status, 204);
}

TEST(OrchestratorQueue, SlotsBoundConcurrentLeases) {
  TestServer server;
  auto worker = server.register_worker(capabilities({"command"}, json::object(), 2));
  for (int i = 0; i < 3; ++i) server.submit(submit_body(task_spec()));
  EXPECT_EQ(worker->poll(0).status, 200);
  auto second = worker->poll(0);
  EXPECT_EQ(second.status, 200);
  auto third = worker->poll(0);
  EXPECT_EQ(third.status, 409);
  EXPECT_EQ(error_code(third), "no_free_slot");
  auto a = second.json();
  ASSERT_EQ(worker->complete(a["taskId"], a["attempt"], a["leaseId"]).status, 200);
  EXPECT_EQ(worker->poll(0).status, 200);
}

TEST(OrchestratorQueue, DrainingWorkerGetsNothingAndIsToldSo) {
  TestServer server;
  auto worker = server.register_worker();
  server.submit(submit_body(task_spec()));
  auto admin = server.admin();
  ASSERT_EQ(admin->request("POST", "/api/v1/workers/" + worker->id + "/drain").status, 202);
  EXPECT_EQ(worker->poll(1000).status, 204);
  auto hb = worker->heartbeat(json::array());
  ASSERT_EQ(hb.status, 200);
  EXPECT_EQ(hb.json()["drain"], true);
  auto workers = admin->get("/api/v1/workers").json();
  ASSERT_EQ(workers["workers"].size(), 1u);
  EXPECT_EQ(workers["workers"][0]["state"], "draining");
}

}  // namespace
}  // namespace tamma::orchestrator::testing

namespace tamma::orchestrator::testing {
namespace {

double waiting_polls(TestServer& server) {
  auto body = server.admin()->get("/metrics").body;
  auto at = body.find("\ntamma_waiting_polls ");
  return std::stod(body.substr(at + 21));
}

TEST(OrchestratorQueue, APollWhoseClientHungUpIsDroppedAndNeverGetsATask) {
  TestServer server;
  auto gone = server.register_worker();
  // A raw socket, so the test controls exactly when the client goes away.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(
      static_cast<std::uint16_t>(std::stoi(server.url().substr(server.url().rfind(':') + 1))));
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string request = "POST /api/v1/workers/" + gone->id +
                        "/poll?waitMs=5000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                        gone->token + "\r\nContent-Length: 0\r\n\r\n";
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (waiting_polls(server) < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(waiting_polls(server), 1);
  ::close(fd);
  while (waiting_polls(server) > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(waiting_polls(server), 0) << "the hang-up was not noticed";

  std::string id = server.submit(submit_body(task_spec()));
  EXPECT_EQ(server.task(id)["state"], "queued") << "handed to a connection that is gone";
  auto live = server.register_worker();
  auto r = live->poll(1000);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["attempt"], 1);
}

}  // namespace
}  // namespace tamma::orchestrator::testing
