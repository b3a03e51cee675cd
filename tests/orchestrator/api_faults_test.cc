// What the orchestrator guarantees when something breaks (docs/protocol.md, "Faults"): a
// result is not taken while its log is short, output a worker could not deliver is counted,
// a failure of a worker's host is retried elsewhere without using up the task's retries, and
// a worker standing down says so. Stalls of the process itself: stall_test.cc (real binary).

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

json complete_body(const Held& held, const json& extra = json::object()) {
  json body = {{"attempt", held.attempt},
               {"leaseId", held.lease_id},
               {"result", {{"status", "succeeded"}, {"taskId", held.task_id}}}};
  body.update(extra);
  return body;
}

json host_failure_body(const Held& held) {
  return {{"attempt", held.attempt},
          {"leaseId", held.lease_id},
          {"error",
           {{"code", "host_failure"},
            {"message", "this host cannot run tasks now: the workspace filesystem has 0 B free"},
            {"retryable", true}}}};
}

TEST(OrchestratorFaults, AResultWaitsUntilTheLogHoldsWhatTheWorkerSent) {
  TestServer server;
  auto worker = server.register_worker();
  const Held held = take(server, *worker);
  ASSERT_EQ(worker->append_raw(held.task_id, held.attempt, held.lease_id, 0, "hello ").status, 200);
  // The worker sent 12 bytes; 6 arrived (an append lost on the way): the result waits.
  auto early = worker->task_post(held.task_id, "complete", complete_body(held, {{"logBytes", 12}}));
  EXPECT_EQ(early.status, 409) << early.body;
  EXPECT_EQ(error_code(early), "log_incomplete");
  EXPECT_EQ(early.json()["error"]["length"], 6) << "where to send from";
  EXPECT_EQ(server.task(held.task_id)["state"], "running") << "the attempt is still open";
  // The rest arrives, then the same result is taken.
  ASSERT_EQ(worker->append_raw(held.task_id, held.attempt, held.lease_id, 6, "world\n").status,
            200);
  auto done = worker->task_post(held.task_id, "complete", complete_body(held, {{"logBytes", 12}}));
  EXPECT_EQ(done.status, 200) << done.body;
  auto view = server.task(held.task_id);
  EXPECT_EQ(view["state"], "succeeded");
  EXPECT_EQ(view["logLength"], 12);
  EXPECT_FALSE(view.contains("logMissingBytes")) << "nothing is missing";
}

TEST(OrchestratorFaults, OutputTheWorkerCouldNotDeliverIsCountedOnTheTask) {
  TestServer server;
  auto worker = server.register_worker();
  const Held held = take(server, *worker);
  ASSERT_EQ(worker->append_raw(held.task_id, held.attempt, held.lease_id, 0, "head\n").status, 200);
  auto r = worker->task_post(held.task_id, "complete",
                             complete_body(held, {{"logBytes", 5}, {"logMissingBytes", 4096}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(server.task(held.task_id)["logMissingBytes"], 4096)
      << "a cut log is never taken for the whole of it";
}

TEST(OrchestratorFaults, AHostFailureIsRetriedOnAnotherWorkerWithoutUsingARetry) {
  TestServer server([](ServerConfig& c) { c.retry_base = 10ms; });
  auto broken = server.register_worker();
  auto healthy = server.register_worker();
  // maxRetries 0: a failure of the task itself would end it; one of the host must not.
  const std::string id = server.submit(submit_body(task_spec(), 0, /*max_retries=*/0));
  auto first = broken->poll(2000);
  ASSERT_EQ(first.status, 200) << first.body;
  const Held held{id, first.json()["attempt"], first.json()["leaseId"]};
  auto failed = broken->task_post(id, "fail", host_failure_body(held));
  ASSERT_EQ(failed.status, 200) << failed.body;
  EXPECT_EQ(failed.json()["state"], "retry_wait");
  server.wait_task(id, [](const json& t) { return t["state"] == "queued"; });
  // The worker whose host failed it is passed over while another can take it.
  EXPECT_EQ(broken->poll(0).status, 204);
  auto second = healthy->poll(2000);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.json()["taskId"], id);
  EXPECT_EQ(second.json()["attempt"], 2);
  ASSERT_EQ(healthy->complete(id, 2, second.json()["leaseId"]).status, 200);
  EXPECT_EQ(server.task(id)["state"], "succeeded");
}

TEST(OrchestratorFaults, HostFailuresAreExcusedOnlyUpToACap) {
  TestServer server([](ServerConfig& c) { c.retry_base = 1ms; });
  // One worker only: after the avoidance window it would get the task again, so each round
  // uses a new worker, as a fleet of broken hosts would.
  const std::string id = server.submit(submit_body(task_spec(), 0, /*max_retries=*/0));
  std::string state;
  int rounds = 0;
  while (rounds < 10) {
    auto worker = server.register_worker();
    server.wait_task(id, [](const json& t) { return t["state"] == "queued"; });
    auto r = worker->poll(2000);
    ASSERT_EQ(r.status, 200) << r.body;
    ++rounds;
    const Held held{id, r.json()["attempt"], r.json()["leaseId"]};
    auto failed = worker->task_post(id, "fail", host_failure_body(held));
    ASSERT_EQ(failed.status, 200) << failed.body;
    state = failed.json()["state"];
    if (state == "dead") break;
  }
  // Five host failures are excused; the sixth counts, and maxRetries 0 leaves none.
  EXPECT_EQ(state, "dead");
  EXPECT_EQ(rounds, 6);
}

TEST(OrchestratorFaults, AWorkerStandingDownIsShownWithItsReason) {
  TestServer server;
  auto worker = server.register_worker();
  auto r = worker->http.post_json(
      "/api/v1/workers/" + worker->id + "/heartbeat",
      {{"leases", json::array()}, {"unhealthy", "3 tasks in a row failed because of this host"}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto workers = server.admin()->get("/api/v1/workers").json()["workers"];
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0]["unhealthy"], "3 tasks in a row failed because of this host");
  // Back to health: the next heartbeat without it clears it.
  ASSERT_EQ(worker->heartbeat(json::array()).status, 200);
  workers = server.admin()->get("/api/v1/workers").json()["workers"];
  EXPECT_FALSE(workers[0].contains("unhealthy")) << workers.dump();
  // A reason is bounded like every other field.
  auto huge =
      worker->http.post_json("/api/v1/workers/" + worker->id + "/heartbeat",
                             {{"leases", json::array()}, {"unhealthy", std::string(5000, 'x')}});
  EXPECT_EQ(huge.status, 400);
  EXPECT_NE(huge.body.find("unhealthy"), std::string::npos) << huge.body;
}

}  // namespace
}  // namespace tamma::orchestrator::testing
