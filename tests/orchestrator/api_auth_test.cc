// Authentication, authorization and request validation over real HTTP.

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

TEST(OrchestratorAuth, RegisterWithBadOrMissingTokenIs401) {
  TestServer server;
  HttpClient bad(server.url(), "not-the-registration-token");
  auto r = bad.post_json("/api/v1/workers/register", {{"capabilities", capabilities()}});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(error_code(r), "invalid_token");

  auto none =
      server.anonymous()->post_json("/api/v1/workers/register", {{"capabilities", capabilities()}});
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(error_code(none), "missing_token");

  // The admin token is not the registration token.
  HttpClient admin(server.url(), kAdminToken);
  EXPECT_EQ(admin.post_json("/api/v1/workers/register", {{"capabilities", capabilities()}}).status,
            401);
}

TEST(OrchestratorAuth, UnknownWorkerTokenIs401AndWorkerTokenIsNotAdmin) {
  TestServer server;
  auto worker = server.register_worker();
  HttpClient stranger(server.url(), std::string(64, 'a'));
  EXPECT_EQ(stranger.request("POST", "/api/v1/workers/" + worker->id + "/poll?waitMs=0").status,
            401);
  // A worker token cannot submit, list or cancel.
  EXPECT_EQ(worker->http.post_json("/api/v1/tasks", submit_body(task_spec())).status, 401);
  EXPECT_EQ(worker->http.get("/api/v1/tasks").status, 401);
  EXPECT_EQ(worker->http.get("/api/v1/workers").status, 401);
  EXPECT_EQ(worker->http.get("/metrics").status, 401);
}

TEST(OrchestratorAuth, WorkerTokenReachesOnlyItsOwnWorkerAndTasks) {
  TestServer server;
  auto a = server.register_worker();
  auto b = server.register_worker();
  std::string id = server.submit(submit_body(task_spec()));
  auto got = a->poll(1000);
  ASSERT_EQ(got.status, 200) << got.body;
  auto lease = got.json();

  // b polls or heartbeats as a: forbidden.
  EXPECT_EQ(b->http.request("POST", "/api/v1/workers/" + a->id + "/poll?waitMs=0").status, 403);
  EXPECT_EQ(
      b->http.post_json("/api/v1/workers/" + a->id + "/heartbeat", {{"leases", json::array()}})
          .status,
      403);
  EXPECT_EQ(b->http.request("DELETE", "/api/v1/workers/" + a->id).status, 403);
  // b uses a's lease, even with the right attempt and lease id: not its task.
  auto stolen = b->complete(id, lease["attempt"], lease["leaseId"]);
  EXPECT_EQ(stolen.status, 403) << stolen.body;
  EXPECT_EQ(error_code(stolen), "not_your_task");
  EXPECT_EQ(server.task(id)["state"], "running");
  // a itself succeeds.
  EXPECT_EQ(a->complete(id, lease["attempt"], lease["leaseId"]).status, 200);
}

// A worker's token, once looked up, is known to the I/O threads for a while (no trip to the
// core for each of its requests); an unregistration through this orchestrator still ends it
// at once, for the worker itself and for an admin-side unregistration alike.
TEST(OrchestratorAuth, AnUnregisteredWorkersTokenStopsWorkingAtOnce) {
  TestServer server;
  auto a = server.register_worker();
  auto b = server.register_worker();
  for (int i = 0; i < 3; ++i) {  // looked up, then known
    ASSERT_EQ(
        a->http.post_json("/api/v1/workers/" + a->id + "/heartbeat", {{"leases", json::array()}})
            .status,
        200);
    ASSERT_EQ(b->http.request("POST", "/api/v1/workers/" + b->id + "/poll?waitMs=0").status, 204);
  }
  ASSERT_EQ(a->http.request("DELETE", "/api/v1/workers/" + a->id).status, 204);
  EXPECT_EQ(
      a->http.post_json("/api/v1/workers/" + a->id + "/heartbeat", {{"leases", json::array()}})
          .status,
      401);
  EXPECT_EQ(a->http.request("POST", "/api/v1/workers/" + a->id + "/poll?waitMs=0").status, 401);

  HttpClient admin(server.url(), kAdminToken);
  ASSERT_EQ(admin.request("DELETE", "/api/v1/workers/" + b->id).status, 204);
  EXPECT_EQ(b->http.request("POST", "/api/v1/workers/" + b->id + "/poll?waitMs=0").status, 401);
}

// Found by the http_request fuzzer: a malformed Authorization header on a worker's route once
// threw on an I/O thread and ended the orchestrator. It is a 401, and the server goes on.
TEST(OrchestratorAuth, AMalformedAuthorizationHeaderOnAWorkersRouteIs401) {
  TestServer server;
  auto a = server.register_worker();
  for (const char* header : {"Authorization: Bearer[ x", "Authorization: Basic abc",
                             "Authorization: Bearer", "Authorization: bearer  "}) {
    HttpClient raw(server.url(), "");
    auto r = raw.request("POST", "/api/v1/workers/" + a->id + "/heartbeat",
                         R"({"leases":[],"draining":false})",
                         {"Content-Type: application/json", header});
    EXPECT_EQ(r.status, 401) << header << ": " << r.body;
  }
  EXPECT_EQ(
      a->http.post_json("/api/v1/workers/" + a->id + "/heartbeat", {{"leases", json::array()}})
          .status,
      200)
      << "the orchestrator still answers";
}

TEST(OrchestratorAuth, MalformedBodiesAre400NamingTheField) {
  TestServer server;
  HttpClient reg(server.url(), kRegistrationToken);
  auto not_json = reg.request("POST", "/api/v1/workers/register", "{not json",
                              {"Content-Type: application/json"});
  EXPECT_EQ(not_json.status, 400);
  EXPECT_EQ(not_json.json()["error"]["field"], "$");

  auto missing = reg.post_json("/api/v1/workers/register", {{"capabilities", {{"slots", 2}}}});
  EXPECT_EQ(missing.status, 400);
  EXPECT_EQ(missing.json()["error"]["field"], "$.capabilities.taskTypes");

  auto wrong_type = reg.post_json(
      "/api/v1/workers/register",
      {{"capabilities", {{"taskTypes", json::array({"command"})}, {"slots", "four"}}}});
  EXPECT_EQ(wrong_type.status, 400);
  EXPECT_EQ(wrong_type.json()["error"]["field"], "$.capabilities.slots");

  auto worker = server.register_worker();
  auto hb = worker->http.post_json("/api/v1/workers/" + worker->id + "/heartbeat",
                                   {{"leases", json::array({{{"taskId", "t"}, {"attempt", 1}}})}});
  EXPECT_EQ(hb.status, 400);
  EXPECT_EQ(hb.json()["error"]["field"], "$.leases[0].leaseId");

  // A task spec with several problems: every one is listed with its path.
  auto admin = server.admin();
  json bad_spec = {{"type", "command"},
                   {"steps", json::array({{{"name", "a"}, {"run", 3}}})},
                   {"timeout", "soon"}};
  auto spec = admin->post_json("/api/v1/tasks", {{"task", bad_spec}});
  ASSERT_EQ(spec.status, 400) << spec.body;
  auto problems = spec.json()["error"]["problems"];
  ASSERT_GE(problems.size(), 2u) << spec.body;
  std::string paths;
  for (const auto& p : problems) paths += p["path"].get<std::string>() + " ";
  EXPECT_NE(paths.find("$.task.steps[0].run"), std::string::npos) << paths;
  EXPECT_NE(paths.find("$.task.timeout"), std::string::npos) << paths;

  auto no_task = admin->post_json("/api/v1/tasks", {{"priority", 1}});
  EXPECT_EQ(no_task.status, 400);
  EXPECT_EQ(no_task.json()["error"]["field"], "$.task");
}

TEST(OrchestratorAuth, MalformedFencedWritesAre400NamingTheFieldAndChangeNothing) {
  TestServer server;
  auto worker = server.register_worker();
  std::string id = server.submit(submit_body(task_spec()));
  auto lease = worker->poll(1000).json();
  ASSERT_EQ(lease["taskId"], id);
  const int attempt = lease["attempt"];
  const std::string lease_id = lease["leaseId"];
  const std::string base = "/api/v1/tasks/" + id;

  auto no_lease = worker->http.post_json(
      base + "/complete", {{"attempt", attempt}, {"result", {{"status", "succeeded"}}}});
  EXPECT_EQ(no_lease.status, 400) << no_lease.body;
  EXPECT_EQ(no_lease.json()["error"]["field"], "$.leaseId") << no_lease.body;

  auto bad_percent = worker->http.post_json(
      base + "/progress", {{"attempt", attempt}, {"leaseId", lease_id}, {"percent", "half"}});
  EXPECT_EQ(bad_percent.status, 400) << bad_percent.body;
  EXPECT_EQ(bad_percent.json()["error"]["field"], "$.percent") << bad_percent.body;

  auto bad_offset = worker->http.request(
      "POST",
      base + "/logs?attempt=" + std::to_string(attempt) + "&leaseId=" + lease_id + "&offset=x",
      "bytes");
  EXPECT_EQ(bad_offset.status, 400) << bad_offset.body;
  EXPECT_FALSE(bad_offset.json()["error"]["message"].get<std::string>().empty());

  auto not_json = worker->http.request("POST", base + "/fail",
                                       "{\"attempt\":", {"Content-Type: application/json"});
  EXPECT_EQ(not_json.status, 400) << not_json.body;

  // None of them touched the task: it still runs this attempt, and the real completion counts.
  auto t = server.admin()->get(base).json();
  EXPECT_EQ(t["state"], "running");
  EXPECT_EQ(t["logLength"], 0);
  EXPECT_EQ(worker->complete(id, attempt, lease_id).status, 200);
}

TEST(OrchestratorAuth, OversizedBodiesAre413) {
  TestServer server([](ServerConfig& c) {
    c.max_json_body = 4096;
    c.max_artifact_body = 8192;
  });
  auto admin = server.admin();
  json spec = task_spec("command", std::string(5000, 'x'));
  auto big = admin->post_json("/api/v1/tasks", submit_body(spec));
  EXPECT_EQ(big.status, 413) << big.body;
  EXPECT_EQ(error_code(big), "body_too_large");

  // A chunked body has no Content-Length: the limit applies while reading.
  auto chunked = admin->request("POST", "/api/v1/tasks", submit_body(spec).dump(),
                                {"Content-Type: application/json", "Transfer-Encoding: chunked"});
  EXPECT_EQ(chunked.status, 413) << chunked.body;

  auto worker = server.register_worker();
  server.submit(submit_body(task_spec()));
  auto lease = worker->poll(1000).json();
  std::string task_id = lease["taskId"];
  auto path = "/api/v1/tasks/" + task_id +
              "/artifacts?name=out.bin&attempt=" + std::to_string(lease["attempt"].get<int>()) +
              "&leaseId=" + lease["leaseId"].get<std::string>();
  EXPECT_EQ(worker->http.request("POST", path, std::string(9000, 'a')).status, 413);
  auto fits = worker->http.request("POST", path, std::string(8000, 'a'));
  EXPECT_EQ(fits.status, 201) << fits.body;
  EXPECT_EQ(fits.json()["size"], 8000);
}

TEST(OrchestratorAuth, UnknownRouteIs404AndWrongMethodIs405) {
  TestServer server;
  auto admin = server.admin();
  auto missing = admin->get("/api/v1/nothing-here");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(error_code(missing), "not_found");
  auto wrong = admin->request("PUT", "/api/v1/tasks");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_NE(wrong.header("allow").find("POST"), std::string::npos);
  EXPECT_NE(wrong.header("allow").find("GET"), std::string::npos);
  EXPECT_EQ(admin->get("/api/v1/tasks/tsk_nope").status, 404);
}

TEST(OrchestratorAuth, HealthNeedsNoTokenReadyAndMetricsDo) {
  TestServer server;
  auto anon = server.anonymous();
  EXPECT_EQ(anon->get("/health").status, 200);
  EXPECT_EQ(anon->get("/ready").status, 401);
  EXPECT_EQ(anon->get("/metrics").status, 401);
  auto ready = server.admin()->get("/ready");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.json()["status"], "ready");
}

}  // namespace
}  // namespace tamma::orchestrator::testing
