// Leases and fencing: stale writers get 409, lost workers' tasks come back as a new attempt,
// retries run out into "dead", cancels end queued tasks at once and running ones via heartbeat.

#include <future>

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

struct Lease {
  std::string task_id;
  int attempt = 0;
  std::string lease_id;
};

Lease take(TestWorker& worker, int wait_ms = 2000) {
  auto r = worker.poll(wait_ms);
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return {};
  auto j = r.json();
  return {j["taskId"], j["attempt"], j["leaseId"]};
}

json lease_json(const Lease& l) {
  return {{"taskId", l.task_id}, {"attempt", l.attempt}, {"leaseId", l.lease_id}};
}

TEST(OrchestratorLease, FencedWritesWithWrongLeaseOrAttemptAre409) {
  TestServer server;
  auto worker = server.register_worker();
  std::string id = server.submit(submit_body(task_spec()));
  Lease l = take(*worker);
  json fence = {{"attempt", l.attempt}, {"leaseId", l.lease_id}};

  for (const char* what : {"started", "progress"}) {
    json wrong_lease = {{"attempt", l.attempt}, {"leaseId", "0123456789abcdef0123456789abcdef"}};
    auto r = worker->task_post(id, what, wrong_lease);
    EXPECT_EQ(r.status, 409) << what << " " << r.body;
    EXPECT_EQ(error_code(r), "lease_lost");
    EXPECT_EQ(r.json()["error"]["state"], "running");
    EXPECT_EQ(r.json()["error"]["attempt"], 1);
  }
  EXPECT_EQ(worker->complete(id, 2, l.lease_id).status, 403)
      << "attempt 2 never existed for this worker";
  EXPECT_EQ(worker->complete(id, l.attempt, "feedfacefeedfacefeedfacefeedface").status, 409);
  EXPECT_EQ(worker->append_raw(id, l.attempt, "bad", 0, "x").status, 409);

  auto started = worker->task_post(id, "started", fence);
  ASSERT_EQ(started.status, 200) << started.body;
  EXPECT_EQ(started.header("x-tamma-task-state"), "running");
  auto progress = worker->task_post(id, "progress",
                                    {{"attempt", l.attempt},
                                     {"leaseId", l.lease_id},
                                     {"percent", 40},
                                     {"step", "build"},
                                     {"message", "compiling"}});
  ASSERT_EQ(progress.status, 200) << progress.body;
  auto t = server.task(id);
  EXPECT_EQ(t["progress"]["percent"], 40);
  EXPECT_EQ(t["progress"]["step"], "build");
  EXPECT_TRUE(t.contains("startedAt"));

  ASSERT_EQ(worker->complete(id, l.attempt, l.lease_id).status, 200);
  EXPECT_EQ(server.task(id)["state"], "succeeded");
  // After the end nothing more is accepted, not even a repeat of the same completion.
  auto again = worker->complete(id, l.attempt, l.lease_id);
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(again.json()["error"]["state"], "succeeded");
  EXPECT_EQ(server.task(id)["result"]["status"], "succeeded");
}

TEST(OrchestratorLease, ExpiredLeaseRequeuesAsAttemptTwoAndFencesOutTheStaleWorker) {
  TestServer server([](ServerConfig& c) {
    c.lease_ttl = 300ms;
    c.heartbeat_interval = 100ms;
  });
  auto stale = server.register_worker();
  auto fresh = server.register_worker();
  std::string id = server.submit(submit_body(task_spec()));
  Lease first = take(*stale);
  EXPECT_EQ(first.attempt, 1);

  // The stale worker goes silent; its lease runs out and the task comes back after backoff.
  auto t = server.wait_task(
      id, [](const json& t) { return t["state"] != "running"; }, 3s);
  EXPECT_TRUE(t["state"] == "retry_wait" || t["state"] == "queued") << t.dump();
  EXPECT_EQ(t["error"]["code"], "lease_expired");
  Lease second = take(*fresh, 3000);
  EXPECT_EQ(second.task_id, id);
  EXPECT_EQ(second.attempt, 2);
  EXPECT_NE(second.lease_id, first.lease_id);

  // The stale worker wakes up and reports: refused, the task stays with the new attempt.
  auto late = stale->complete(id, first.attempt, first.lease_id);
  EXPECT_EQ(late.status, 409) << late.body;
  EXPECT_EQ(error_code(late), "lease_lost");
  EXPECT_EQ(late.json()["error"]["attempt"], 2);
  auto hb = stale->heartbeat(json::array({lease_json(first)}));
  ASSERT_EQ(hb.status, 200);
  ASSERT_EQ(hb.json()["lostLeases"].size(), 1u);
  EXPECT_EQ(hb.json()["lostLeases"][0]["taskId"], id);

  // Heartbeats keep the new lease alive well past its TTL.
  for (int i = 0; i < 8; ++i) {
    auto renew = fresh->heartbeat(json::array({lease_json(second)}));
    ASSERT_EQ(renew.status, 200);
    EXPECT_TRUE(renew.json()["lostLeases"].empty()) << renew.body;
    EXPECT_EQ(renew.json()["leaseTtlMs"], 300);
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(fresh->complete(id, second.attempt, second.lease_id).status, 200);
  EXPECT_EQ(server.task(id)["state"], "succeeded");
  auto metrics = server.admin()->get("/metrics").body;
  EXPECT_NE(metrics.find("tamma_lease_expiries_total 1"), std::string::npos) << metrics;
}

TEST(OrchestratorLease, ExhaustedRetriesEndDead) {
  TestServer server([](ServerConfig& c) {
    c.lease_ttl = 200ms;
    c.heartbeat_interval = 50ms;
  });
  auto worker = server.register_worker();
  std::string id = server.submit(submit_body(task_spec(), 0, /*max_retries=*/1));
  Lease a1 = take(*worker);
  // A retryable failure uses the one retry.
  auto failed = worker->fail(id, a1.attempt, a1.lease_id, /*retryable=*/true);
  ASSERT_EQ(failed.status, 200) << failed.body;
  EXPECT_EQ(failed.json()["state"], "retry_wait");
  Lease a2 = take(*worker, 3000);
  EXPECT_EQ(a2.attempt, 2);
  // Then the worker vanishes: no retry left.
  auto t = server.wait_task(
      id, [](const json& t) { return t["state"] == "dead"; }, 3s);
  EXPECT_EQ(t["state"], "dead") << t.dump();
  EXPECT_EQ(t["attempt"], 2);
  EXPECT_TRUE(t.contains("finishedAt"));

  // A non-retryable failure is final at once.
  std::string other = server.submit(submit_body(task_spec()));
  Lease b = take(*worker);
  ASSERT_EQ(b.task_id, other);
  EXPECT_EQ(worker->fail(other, b.attempt, b.lease_id, false).json()["state"], "failed");
  EXPECT_EQ(server.task(other)["error"]["code"], "boom");
}

TEST(OrchestratorLease, CancelQueuedEndsAtOnceRunningGoesThroughHeartbeat) {
  TestServer server;
  auto admin = server.admin();
  std::string queued = server.submit(submit_body(task_spec()));
  auto c1 = admin->request("POST", "/api/v1/tasks/" + queued + "/cancel");
  ASSERT_EQ(c1.status, 200) << c1.body;
  EXPECT_EQ(c1.json()["state"], "cancelled");
  auto worker = server.register_worker();
  EXPECT_EQ(worker->poll(0).status, 204) << "a cancelled task is never handed out";

  std::string running = server.submit(submit_body(task_spec()));
  Lease l = take(*worker);
  ASSERT_EQ(l.task_id, running);
  auto c2 = admin->request("POST", "/api/v1/tasks/" + running + "/cancel");
  ASSERT_EQ(c2.status, 202) << c2.body;
  EXPECT_EQ(c2.json()["state"], "cancel_requested");

  // A log append already tells the worker, through the state header.
  auto log = worker->append_raw(running, l.attempt, l.lease_id, 0, "working\n");
  EXPECT_EQ(log.header("x-tamma-task-state"), "cancel_requested");
  auto hb = worker->heartbeat(json::array({lease_json(l)}));
  ASSERT_EQ(hb.status, 200);
  auto cancel = hb.json()["cancel"];
  ASSERT_EQ(cancel.size(), 1u) << hb.body;
  EXPECT_EQ(cancel[0]["taskId"], running);
  EXPECT_EQ(cancel[0]["attempt"], l.attempt);
  EXPECT_TRUE(hb.json()["lostLeases"].empty());

  auto done = worker->complete(running, l.attempt, l.lease_id, "cancelled");
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(server.task(running)["state"], "cancelled");
  // Cancelling a finished task says so.
  auto c3 = admin->request("POST", "/api/v1/tasks/" + running + "/cancel");
  EXPECT_EQ(c3.status, 200) << "cancelling a cancelled task is idempotent";
  std::string other = server.submit(submit_body(task_spec()));
  Lease o = take(*worker);
  ASSERT_EQ(worker->complete(other, o.attempt, o.lease_id).status, 200);
  auto c4 = admin->request("POST", "/api/v1/tasks/" + other + "/cancel");
  EXPECT_EQ(c4.status, 409);
  EXPECT_EQ(error_code(c4), "task_final");
}

TEST(OrchestratorLease, FailWhileCancelRequestedEndsCancelled) {
  TestServer server;
  auto worker = server.register_worker();
  std::string id = server.submit(submit_body(task_spec()));
  Lease l = take(*worker);
  ASSERT_EQ(server.admin()->request("POST", "/api/v1/tasks/" + id + "/cancel").status, 202);
  auto r = worker->fail(id, l.attempt, l.lease_id, true);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["state"], "cancelled");
}

TEST(OrchestratorLease, UnregisterRequeuesRunningTasksAtOnce) {
  TestServer server;
  auto leaving = server.register_worker();
  auto staying = server.register_worker();
  std::string id = server.submit(submit_body(task_spec()));
  Lease l = take(*leaving);
  auto parked = std::async(std::launch::async, [&] { return staying->poll(3000); });
  std::this_thread::sleep_for(100ms);
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(leaving->http.request("DELETE", "/api/v1/workers/" + leaving->id).status, 204);
  auto r = parked.get();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["taskId"], id);
  EXPECT_EQ(r.json()["attempt"], 2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s) << "not after a lease TTL";
  // The gone worker's token no longer works.
  EXPECT_EQ(leaving->heartbeat(json::array({lease_json(l)})).status, 401);
  auto all = server.admin()->get("/api/v1/workers?all=1").json()["workers"];
  ASSERT_EQ(all.size(), 2u);
}

}  // namespace
}  // namespace tamma::orchestrator::testing
