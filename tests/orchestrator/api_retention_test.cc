// Retention through the running orchestrator (--retain-finished, docs/adr/0027): the lease
// reaper prunes a task that ended longer ago than the retention, with its log and artifact,
// counts it on /metrics, and keeps the audit trail and every task still running.

#include "orchestrator/orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

TEST(OrchestratorRetention, TheReaperPrunesOldFinishedTasksAndCountsThem) {
  TestServer server([](ServerConfig& c) { c.retain_finished = 300ms; });
  auto worker = server.register_worker(capabilities(json::array({"command"}), json::object(), 2));
  Held done = take(server, *worker);
  ASSERT_FALSE(done.task_id.empty());
  Held running = take(server, *worker);
  ASSERT_FALSE(running.task_id.empty());
  ASSERT_EQ(worker->append_raw(done.task_id, done.attempt, done.lease_id, 0, "some output").status,
            200);
  auto up = worker->http.request("POST",
                                 "/api/v1/tasks/" + done.task_id + "/artifacts?name=out.txt" +
                                     "&attempt=" + std::to_string(done.attempt) +
                                     "&leaseId=" + done.lease_id,
                                 "artifact bytes", {"Content-Type: application/octet-stream"});
  ASSERT_EQ(up.status, 201) << up.body;
  ASSERT_EQ(worker->complete(done.task_id, done.attempt, done.lease_id).status, 200);

  auto admin = server.admin();
  auto deadline = std::chrono::steady_clock::now() + 20s;
  HttpResult view = admin->get("/api/v1/tasks/" + done.task_id);
  while (view.status == 200 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    view = admin->get("/api/v1/tasks/" + done.task_id);
  }
  EXPECT_EQ(view.status, 404) << "the finished task was never pruned";
  EXPECT_EQ(error_code(view), "task_not_found");
  EXPECT_EQ(admin->get("/api/v1/tasks/" + done.task_id + "/logs").status, 404);
  EXPECT_EQ(admin->get("/api/v1/tasks/" + done.task_id + "/artifacts/out.txt").status, 404);
  EXPECT_FALSE(std::filesystem::exists(server.config().data_dir / "artifacts" / done.task_id));
  EXPECT_NE(admin->get("/metrics").body.find("tamma_tasks_pruned_total 1\n"), std::string::npos);
  // What happened to it is still on record.
  auto audit = admin->get("/api/v1/audit?task=" + done.task_id);
  ASSERT_EQ(audit.status, 200) << audit.body;
  EXPECT_FALSE(audit.json()["records"].empty()) << audit.body;
  // The running task is untouched, and its worker's writes still land.
  EXPECT_EQ(server.task(running.task_id)["state"], "running");
  EXPECT_EQ(worker->complete(running.task_id, running.attempt, running.lease_id).status, 200);
}

}  // namespace
}  // namespace tamma::orchestrator::testing
