// A report that asks for the worker's next task (complete/fail with "next": true, ADR 0033):
// the task comes back in the report's answer, claimed in the same transaction, fenced like
// any assignment; never for a worker that may not take tasks, never when the report itself
// was refused.

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

json report(const json& assignment, const std::string& status = "succeeded", bool next = true) {
  return {{"attempt", assignment["attempt"]},
          {"leaseId", assignment["leaseId"]},
          {"result", {{"status", status}, {"taskId", assignment["taskId"]}}},
          {"next", next}};
}

TEST(OrchestratorNext, ACompletionBringsBackTheNextQueuedTaskUnderItsOwnLease) {
  TestServer server;
  auto worker = server.register_worker();
  const std::string first = server.submit(submit_body(task_spec("command", "echo first")));
  const std::string second = server.submit(submit_body(task_spec("command", "echo second")));
  auto polled = worker->poll(1000);
  ASSERT_EQ(polled.status, 200) << polled.body;
  const json a = polled.json();
  ASSERT_EQ(a["taskId"], first);

  auto done = worker->task_post(first, "complete", report(a));
  ASSERT_EQ(done.status, 200) << done.body;
  const json answer = done.json();
  EXPECT_EQ(answer["state"], "succeeded");
  ASSERT_TRUE(answer.contains("next")) << done.body;
  const json& b = answer["next"];
  EXPECT_EQ(b["taskId"], second);
  EXPECT_EQ(b["attempt"], 1);
  EXPECT_EQ(b["task"]["steps"][0]["run"], "echo second");
  EXPECT_NE(b["leaseId"], a["leaseId"]);
  EXPECT_EQ(b["leaseTtlMs"], 30000);

  // It is this worker's now, exactly as if a poll had handed it out.
  auto view = server.task(second);
  EXPECT_EQ(view["state"], "running");
  EXPECT_EQ(view["workerId"], worker->id);
  EXPECT_EQ(view["attempt"], 1);
  // The first one ended without "started": its start is the moment it was handed out.
  auto finished = server.task(first);
  EXPECT_EQ(finished["state"], "succeeded");
  EXPECT_TRUE(finished.contains("startedAt")) << finished.dump();

  // Nothing left: the next report brings nothing back, and the slot is free for a poll.
  auto last = worker->task_post(second, "complete", report(b));
  ASSERT_EQ(last.status, 200) << last.body;
  EXPECT_FALSE(last.json().contains("next")) << last.body;
  EXPECT_EQ(worker->poll(0).status, 204);
}

TEST(OrchestratorNext, AReportKeepsTheProgressAShortTaskNeverSent) {
  TestServer server;
  auto worker = server.register_worker();
  const std::string id = server.submit(submit_body(task_spec()));
  const std::string other = server.submit(submit_body(task_spec()));
  json a = worker->poll(1000).json();
  json body = report(a, "succeeded", false);
  body["progress"] = {{"percent", 100}, {"step", "check"}};
  ASSERT_EQ(worker->task_post(id, "complete", body).status, 200);
  auto view = server.task(id);
  EXPECT_EQ(view["progress"]["percent"], 100);
  EXPECT_EQ(view["progress"]["step"], "check");

  // Without one, the progress the worker did send stays.
  json b = worker->poll(1000).json();
  ASSERT_EQ(b["taskId"], other);
  ASSERT_EQ(worker
                ->task_post(other, "progress",
                            {{"attempt", b["attempt"]},
                             {"leaseId", b["leaseId"]},
                             {"percent", 50},
                             {"step", "half"}})
                .status,
            200);
  ASSERT_EQ(worker->task_post(other, "complete", report(b, "failed")).status, 200);
  EXPECT_EQ(server.task(other)["progress"]["step"], "half");
}

TEST(OrchestratorNext, AFailureBringsBackTheNextTaskToo) {
  TestServer server;
  auto worker = server.register_worker();
  const std::string first = server.submit(submit_body(task_spec(), 0, 0));
  const std::string second = server.submit(submit_body(task_spec()));
  const json a = worker->poll(1000).json();
  ASSERT_EQ(a["taskId"], first);
  auto failed = worker->task_post(first, "fail",
                                  {{"attempt", a["attempt"]},
                                   {"leaseId", a["leaseId"]},
                                   {"error", {{"code", "boom"}, {"message", "x"}}},
                                   {"next", true}});
  ASSERT_EQ(failed.status, 200) << failed.body;
  EXPECT_EQ(failed.json()["state"], "failed");
  ASSERT_TRUE(failed.json().contains("next")) << failed.body;
  EXPECT_EQ(failed.json()["next"]["taskId"], second);
}

TEST(OrchestratorNext, WithoutAskingNothingIsClaimed) {
  TestServer server;
  auto worker = server.register_worker();
  server.submit(submit_body(task_spec()));
  const std::string waiting = server.submit(submit_body(task_spec()));
  const json a = worker->poll(1000).json();
  auto done = worker->task_post(a["taskId"], "complete", report(a, "succeeded", false));
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_FALSE(done.json().contains("next"));
  EXPECT_EQ(server.task(waiting)["state"], "queued");
}

TEST(OrchestratorNext, ADrainingWorkerGetsNoNextTask) {
  TestServer server;
  auto worker = server.register_worker();
  server.submit(submit_body(task_spec()));
  const std::string waiting = server.submit(submit_body(task_spec()));
  const json a = worker->poll(1000).json();
  ASSERT_EQ(server.admin()->request("POST", "/api/v1/workers/" + worker->id + "/drain").status,
            202);
  auto done = worker->task_post(a["taskId"], "complete", report(a));
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_FALSE(done.json().contains("next")) << done.body;
  EXPECT_EQ(server.task(waiting)["state"], "queued");
}

TEST(OrchestratorNext, ARefusedReportClaimsNothing) {
  TestServer server;
  auto worker = server.register_worker();
  const std::string first = server.submit(submit_body(task_spec()));
  const std::string waiting = server.submit(submit_body(task_spec()));
  json a = worker->poll(1000).json();
  ASSERT_EQ(a["taskId"], first);
  json stale = a;
  stale["leaseId"] = "feedfacefeedfacefeedfacefeedface";
  auto refused = worker->task_post(first, "complete", report(stale));
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_EQ(server.task(waiting)["state"], "queued");
  EXPECT_EQ(server.task(first)["state"], "running");
}

TEST(OrchestratorNext, AnotherWorkersTaskTypeOrLabelsAreNotHandedOver) {
  TestServer server;
  auto worker = server.register_worker(capabilities(json::array({"command"}), {{"os", "linux"}}));
  server.submit(submit_body(task_spec()));
  const std::string other_type = server.submit(submit_body(task_spec("build")));
  const std::string other_label =
      server.submit(submit_body(task_spec(), 0, 3, {{"os", "windows"}}));
  const json a = worker->poll(1000).json();
  auto done = worker->task_post(a["taskId"], "complete", report(a));
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_FALSE(done.json().contains("next")) << done.body;
  EXPECT_EQ(server.task(other_type)["state"], "queued");
  EXPECT_EQ(server.task(other_label)["state"], "queued");
}

}  // namespace
}  // namespace tamma::orchestrator::testing
