// The HTTP edge as an attacker or a careless client meets it: documents nested to crash a
// recursive copy, duplicate members, numbers beyond a double, bodies at and over each limit by
// Content-Length and chunked, smuggling through two framings, bodies sent without a token, HEAD,
// and artifact names longer than a file name. Each test sends the bytes a real client would.

#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <filesystem>

#include "orchestrator_fixture.h"
#include "raw_http.h"

namespace tamma::orchestrator::testing {
namespace {

int port_of(const TestServer& server) {
  return std::stoi(server.url().substr(server.url().rfind(':') + 1));
}

std::string nested_arrays(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string nested_objects(int depth) {
  std::string out;
  for (int i = 0; i < depth; ++i) out += "{\"a\":";
  out += "1";
  out += std::string(depth, '}');
  return out;
}

std::string artifact_path(const Held& h, const std::string& name) {
  return "/api/v1/tasks/" + h.task_id + "/artifacts?name=" + name +
         "&attempt=" + std::to_string(h.attempt) + "&leaseId=" + h.lease_id;
}

std::string field_of(const HttpResult& r) {
  try {
    return r.json().at("error").value("field", "<no field>");
  } catch (const std::exception&) {
    return "<no error body: " + r.body + ">";
  }
}

// --- defect 1: deep documents ------------------------------------------------------------------

TEST(OrchestratorEdge, DeeplyNestedDocumentsAre400AndTheServerLives) {
  TestServer server;
  auto worker = server.register_worker();
  // No lease is needed to reach the parser: any worker token will do.
  for (const auto& deep : {nested_arrays(100000), nested_objects(100000)}) {
    std::string body =
        R"({"attempt":1,"leaseId":"x","result":{"status":"succeeded","deep":)" + deep + "}}";
    auto r = worker->http.request("POST", "/api/v1/tasks/tsk_00000000000000000000/complete", body,
                                  {"Content-Type: application/json"});
    EXPECT_EQ(r.status, 400) << r.body.substr(0, 300);
    EXPECT_EQ(error_code(r), "invalid_field");
    EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("nested deeper than"),
              std::string::npos);
    // The path names where the limit was crossed, under the member that holds it.
    EXPECT_EQ(field_of(r).rfind("$.result.deep", 0), 0u) << field_of(r);
  }
  // A spec submitted by the admin goes through the same parser.
  std::string spec = R"({"task":{"type":"command","steps":[{"name":"a","run":"true"}],"x":)" +
                     nested_arrays(100000) + "}}";
  auto submitted =
      server.admin()->request("POST", "/api/v1/tasks", spec, {"Content-Type: application/json"});
  EXPECT_EQ(submitted.status, 400);
  EXPECT_EQ(server.anonymous()->get("/health").status, 200);

  // Real documents nest far less than the limit and pass.
  Held h = take(server, *worker);
  json details = json::array();
  for (int i = 0; i < 100; ++i) details = json::array({details});
  auto ok = worker->task_post(h.task_id, "complete",
                              {{"attempt", h.attempt},
                               {"leaseId", h.lease_id},
                               {"result", {{"status", "succeeded"}, {"details", details}}}});
  EXPECT_EQ(ok.status, 200) << ok.body.substr(0, 300);
}

// --- defect 10 (part): duplicate members ---------------------------------------------------------

TEST(OrchestratorEdge, DuplicateMembersAre400NamingThePath) {
  TestServer server;
  auto worker = server.register_worker();
  Held h = take(server, *worker);
  std::string body = R"({"attempt":)" + std::to_string(h.attempt) + R"(,"leaseId":")" + h.lease_id +
                     R"(","result":{"status":"failed","status":"succeeded"}})";
  auto r = worker->http.request("POST", "/api/v1/tasks/" + h.task_id + "/complete", body,
                                {"Content-Type: application/json"});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(field_of(r), "$.result.status");
  // Nothing was recorded: the task still runs, and the honest answer is still taken.
  EXPECT_EQ(server.task(h.task_id)["state"], "running");
  EXPECT_EQ(worker->complete(h.task_id, h.attempt, h.lease_id, "failed").status, 200);
  EXPECT_EQ(server.task(h.task_id)["state"], "failed");
}

// --- defect 7: numbers beyond a double
// ------------------------------------------------------------

TEST(OrchestratorEdge, NumbersOutOfRangeAre400NotInternalErrors) {
  TestServer server;
  auto worker = server.register_worker();
  auto poll = worker->http.request("POST", "/api/v1/workers/" + worker->id + "/poll",
                                   R"({"waitMs":1e400})", {"Content-Type: application/json"});
  EXPECT_EQ(poll.status, 400) << poll.body;
  EXPECT_EQ(error_code(poll), "invalid_field");
  EXPECT_EQ(field_of(poll), "$.waitMs");

  auto submit = server.admin()->request(
      "POST", "/api/v1/tasks",
      R"({"task":{"type":"command","steps":[{"name":"a","run":"true"}]},"priority":1e400})",
      {"Content-Type: application/json"});
  EXPECT_EQ(submit.status, 400) << submit.body;
  EXPECT_EQ(field_of(submit), "$.priority");

  Held h = take(server, *worker);
  auto progress =
      worker->http.request("POST", "/api/v1/tasks/" + h.task_id + "/progress",
                           R"({"attempt":)" + std::to_string(h.attempt) + R"(,"leaseId":")" +
                               h.lease_id + R"(","percent":-1e999})",
                           {"Content-Type: application/json"});
  EXPECT_EQ(progress.status, 400) << progress.body;
  EXPECT_EQ(field_of(progress), "$.percent");
}

// --- defect 2: bodies up to each endpoint's limit
// -------------------------------------------------

TEST(OrchestratorEdge, ArtifactsUpToTheLimitAreTakenByContentLengthAndChunked) {
  TestServer server;  // the documented defaults: 1 MiB JSON, 64 MiB artifacts
  auto worker = server.register_worker();
  Held h = take(server, *worker);
  std::string two_mib(2 << 20, 'b');
  auto by_length = worker->http.request("POST", artifact_path(h, "dist/big.bin"), two_mib,
                                        {"Content-Type: application/octet-stream"});
  ASSERT_EQ(by_length.status, 201) << by_length.body;
  EXPECT_EQ(by_length.json()["size"], two_mib.size());
  auto chunked = worker->http.request(
      "POST", artifact_path(h, "dist/big2.bin"), two_mib,
      {"Content-Type: application/octet-stream", "Transfer-Encoding: chunked"});
  ASSERT_EQ(chunked.status, 201) << chunked.body;
  auto down = server.admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/dist%2Fbig.bin");
  ASSERT_EQ(down.status, 200);
  EXPECT_EQ(down.body.size(), two_mib.size());

  // Over the limit: 413 from the head alone, before a byte of the body is sent.
  RawConnection raw(port_of(server));
  raw.send("POST " + artifact_path(h, "huge.bin") +
           " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + worker->token +
           "\r\nContent-Length: " + std::to_string((64ULL << 20) + 1) + "\r\n\r\n");
  auto answer = raw.read_answer();
  EXPECT_EQ(status_of(answer), 413) << answer;
  EXPECT_NE(answer.find("body_too_large"), std::string::npos);

  // A JSON endpoint takes up to 1 MiB; one byte more is 413, decided from Content-Length.
  RawConnection json_raw(port_of(server));
  json_raw.send("POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                std::string(kAdminToken) + "\r\nContent-Type: application/json\r\n" +
                "Content-Length: " + std::to_string((1 << 20) + 1) + "\r\n\r\n");
  EXPECT_EQ(status_of(json_raw.read_answer()), 413);
  json big_spec = task_spec("command", std::string((1 << 20) - 200, 'x'));
  auto fits = server.admin()->post_json("/api/v1/tasks", submit_body(big_spec));
  EXPECT_LE(submit_body(big_spec).dump().size(), std::size_t{1} << 20);
  EXPECT_EQ(fits.status, 201) << fits.body.substr(0, 200);
}

// --- defect 3: request smuggling
// ------------------------------------------------------------------

TEST(OrchestratorEdge, TwoFramingsAre400AndNothingIsSmuggled) {
  TestServer server;
  const std::string smuggled = "GET /api/v1/tasks/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const std::string encoding : {"chunked, identity", "xchunked", "chunked", "identity"}) {
    RawConnection raw(port_of(server));
    std::string chunk = "0\r\n\r\n" + smuggled;
    raw.send("POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
             std::string(kAdminToken) + "\r\nContent-Type: application/json\r\n" +
             "Transfer-Encoding: " + encoding + "\r\nContent-Length: 4\r\n\r\n" + "78\r\n" + chunk);
    auto all = raw.read_to_close();
    EXPECT_EQ(status_of(all), 400) << encoding << ": " << all;
    EXPECT_EQ(answers_in(all), 1) << encoding << ": the smuggled request was answered: " << all;
    EXPECT_EQ(all.find("SMUGGLED"), std::string::npos);
    EXPECT_TRUE(raw.closed()) << encoding;
  }
  // Transfer-Encoding alone must end with chunked; other codings are not implemented.
  RawConnection gzip(port_of(server));
  gzip.send("POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
            std::string(kAdminToken) + "\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(status_of(gzip.read_answer()), 501);
  RawConnection last(port_of(server));
  last.send("POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
            std::string(kAdminToken) + "\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(status_of(last.read_answer()), 400);
}

// --- defect 4: nothing is read or staged before the token is checked ---------------------------

TEST(OrchestratorEdge, TokensAreCheckedFromTheHeadersBeforeAnyBodyIsRead) {
  TestServer server;
  auto worker = server.register_worker();
  Held h = take(server, *worker);
  const auto uploads = server.config().data_dir / "uploads";

  struct Case {
    std::string what;
    std::string head;
  };
  const std::string big = "\r\nContent-Length: 1048576\r\n";
  std::vector<Case> cases = {
      {"register without a token", "POST /api/v1/workers/register HTTP/1.1\r\nHost: x" + big},
      {"register with a wrong token",
       "POST /api/v1/workers/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope" + big},
      {"submit with a worker token",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + worker->token + big},
      {"upload without a token",
       "POST " + artifact_path(h, "a.bin") + " HTTP/1.1\r\nHost: x\r\nExpect: 100-continue" + big},
      {"upload with a revoked-looking token",
       "POST " + artifact_path(h, "a.bin") +
           " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer 0000000000000000\r\nExpect: "
           "100-continue" +
           big},
      {"chunked upload without a token", "POST " + artifact_path(h, "a.bin") +
                                             " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                             "\r\n"},
  };
  for (const auto& c : cases) {
    RawConnection raw(port_of(server));
    // Only the head goes out: the answer must come without the body.
    ASSERT_TRUE(raw.send(c.head + "\r\n")) << c.what;
    auto answer = raw.read_answer();
    EXPECT_EQ(status_of(answer), 401) << c.what << ": " << answer;
    EXPECT_EQ(answer.find("100 Continue"), std::string::npos) << c.what;
    EXPECT_TRUE(std::filesystem::is_empty(uploads)) << c.what;
  }
  // The worker itself still uploads, with 100-continue granted after its token was checked.
  auto ok =
      worker->http.request("POST", artifact_path(h, "a.bin"), std::string(100000, 'a'),
                           {"Content-Type: application/octet-stream", "Expect: 100-continue"});
  EXPECT_EQ(ok.status, 201) << ok.body;
}

// --- defect 5: idle connections cannot lock workers out ------------------------------------------

TEST(OrchestratorEdge, IdleUnauthenticatedConnectionsMakeRoomForWorkers) {
  TestServer server([](ServerConfig& c) {
    c.max_connections = 64;
    c.header_timeout = 60s;  // so that only the cap closes them here
  });
  auto worker = server.register_worker();
  // The worker's own connection is proven by its first request.
  ASSERT_EQ(worker->heartbeat(json::array()).status, 200);
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 300; ++i) idle.push_back(std::make_unique<RawConnection>(port_of(server)));
  // A new connection (the admin's) and the worker's kept-alive one both get answers.
  auto hb = worker->http.post_json("/api/v1/workers/" + worker->id + "/heartbeat",
                                   {{"leases", json::array()}, {"draining", false}}, {}, 1s);
  EXPECT_EQ(hb.status, 200);
  std::string id = server.submit(submit_body(task_spec()));
  auto poll =
      worker->http.request("POST", "/api/v1/workers/" + worker->id + "/poll?waitMs=0", {}, {}, 1s);
  EXPECT_EQ(poll.status, 200) << poll.body;
  // The oldest idle connections were closed to make room, the newest are still open.
  auto count_closed = [&] {
    int closed = 0;
    for (auto& c : idle) {
      c->read_until([](const std::string&) { return false; }, 0ms);
      if (c->closed()) ++closed;
    }
    return closed;
  };
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (count_closed() < 300 - 64 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GE(count_closed(), 300 - 64);
  EXPECT_TRUE(idle.front()->closed());
  EXPECT_FALSE(idle.back()->closed());
  EXPECT_EQ(server.task(id)["state"], "running");
}

TEST(OrchestratorEdge, AConnectionThatNeverFinishesItsHeadIsClosed) {
  TestServer server([](ServerConfig& c) { c.header_timeout = 300ms; });
  RawConnection slow(port_of(server));
  slow.send("POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n");  // never finished
  slow.read_to_close(10s);
  EXPECT_TRUE(slow.closed());
  // A connection that showed a valid token keeps the long idle timeout between requests.
  auto admin = server.admin();
  EXPECT_EQ(admin->get("/api/v1/tasks").status, 200);
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(admin->get("/api/v1/tasks").status, 200);
}

// --- defect 6: artifact names longer than a file name -------------------------------------------

TEST(OrchestratorEdge, ArtifactNamesLongerThanAFileNameAreStoredAndErrorsHideServerPaths) {
  TestServer server;
  auto worker = server.register_worker(capabilities(json::array({"command"}), json::object(), 2));
  Held h = take(server, *worker);
  std::string name;
  while (name.size() < 400) name += "segment-" + std::to_string(name.size()) + "/";
  name += "file.bin";
  ASSERT_GT(name.size(), 255u);
  std::string encoded;
  for (char c : name) encoded += c == '/' ? std::string("%2F") : std::string(1, c);
  auto up = worker->http.request("POST", artifact_path(h, encoded), "bytes of a long name");
  ASSERT_EQ(up.status, 201) << up.body;
  auto down = server.admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/" + encoded);
  ASSERT_EQ(down.status, 200) << down.body;
  EXPECT_EQ(down.body, "bytes of a long name");

  // Storage that fails: 503 naming the artifact, never the server's directories, and no row.
  Held other = take(server, *worker);
  std::filesystem::create_directories(server.config().data_dir / "artifacts");
  tamma::testing::write_file(server.config().data_dir / "artifacts" / other.task_id, "in the way");
  auto refused = worker->http.request("POST", artifact_path(other, "x.bin"), "abc");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(error_code(refused), "storage_unavailable");
  EXPECT_EQ(refused.body.find(server.dir().string()), std::string::npos) << refused.body;
  EXPECT_EQ(refused.body.find("/tmp"), std::string::npos) << refused.body;
  EXPECT_TRUE(server.task(other.task_id)["artifacts"].empty());
  EXPECT_TRUE(std::filesystem::is_empty(server.config().data_dir / "uploads"));
}

// --- defect 8: HEAD
// -------------------------------------------------------------------------------

TEST(OrchestratorEdge, HeadAnswersHaveNoBodyAndKeepTheConnectionInStep) {
  TestServer server;
  RawConnection raw(port_of(server));
  raw.send("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
  auto head = raw.read_answer(true);
  EXPECT_EQ(status_of(head), 200) << head;
  EXPECT_EQ(body_of(head), "");
  raw.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  auto get = raw.read_answer();
  EXPECT_EQ(status_of(get), 200) << get;
  EXPECT_EQ(json::parse(body_of(get))["status"], "ok");
  // The HEAD answer announced the GET body's length.
  EXPECT_NE(head.find("Content-Length: " + std::to_string(body_of(get).size())), std::string::npos)
      << head;

  // Refusals of HEAD carry no body either.
  raw.send("HEAD /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
  auto missing = raw.read_answer(true);
  EXPECT_EQ(status_of(missing), 404);
  raw.send("HEAD /ready HTTP/1.1\r\nHost: x\r\n\r\n");
  auto unauthorized = raw.read_answer(true);
  EXPECT_EQ(status_of(unauthorized), 401) << unauthorized;
  raw.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(status_of(raw.read_answer()), 200);
  EXPECT_EQ(raw.pending(), "");
}

// --- defect 10 (part): every fenced answer says the task's state -------------------------------

TEST(OrchestratorEdge, LeaseLostAnswersCarryTheTaskState) {
  TestServer server;
  auto worker = server.register_worker();
  Held h = take(server, *worker);
  ASSERT_EQ(server.admin()->request("POST", "/api/v1/tasks/" + h.task_id + "/cancel").status, 202);
  ASSERT_EQ(worker->complete(h.task_id, h.attempt, h.lease_id, "cancelled").status, 200);
  auto late = worker->complete(h.task_id, h.attempt, h.lease_id);
  EXPECT_EQ(late.status, 409);
  EXPECT_EQ(error_code(late), "lease_lost");
  EXPECT_EQ(late.header("x-tamma-task-state"), "cancelled");
}

}  // namespace
}  // namespace tamma::orchestrator::testing

namespace tamma::orchestrator::testing {
namespace {

// --- defect 9: an assignment whose poller hung up as it was sent --------------------------------

TEST(OrchestratorEdge, AnAssignmentNeverAcknowledgedComesBackWithoutSpendingAnAttempt) {
  TestServer server([](ServerConfig& c) {
    c.ack_timeout = 300ms;
    c.lease_ttl = 30s;  // far away: only the missing acknowledgement can bring it back
  });
  auto gone = server.register_worker();
  auto other = server.register_worker();
  // No retries at all: before, a lost answer cost the only attempt and the task went dead.
  std::string id = server.submit(submit_body(task_spec(), 0, 0));
  RawConnection raw(port_of(server));
  raw.send("POST /api/v1/workers/" + gone->id +
           "/poll?waitMs=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + gone->token +
           "\r\nContent-Length: 0\r\n\r\n");
  // The answer reaches the socket, and the client goes away without a word: the write
  // succeeded, so only the missing acknowledgement can tell.
  auto answer = raw.read_answer();
  ASSERT_EQ(status_of(answer), 200) << answer;
  auto assignment = json::parse(body_of(answer));
  EXPECT_EQ(assignment["attempt"], 1);
  ::shutdown(raw.fd(), SHUT_RDWR);

  auto back = server.wait_task(
      id, [](const json& t) { return t["state"] == "queued"; }, 10s);
  ASSERT_EQ(back["state"], "queued") << back.dump();
  auto lease = other->poll(2000);
  ASSERT_EQ(lease.status, 200) << lease.body;
  EXPECT_EQ(lease.json()["taskId"], id);
  EXPECT_EQ(lease.json()["attempt"], 1) << "the attempt nobody saw does not count";
  // The first worker's copy, if it ever arrives, is fenced out.
  auto late = gone->task_post(id, "started", {{"attempt", 1}, {"leaseId", assignment["leaseId"]}});
  EXPECT_TRUE(late.status == 409 || late.status == 403) << late.body;
  auto l = lease.json();
  EXPECT_EQ(other->task_post(id, "started", {{"attempt", 1}, {"leaseId", l["leaseId"]}}).status,
            200);
  std::this_thread::sleep_for(600ms);  // two acknowledgement timeouts: a started task stays
  EXPECT_EQ(server.task(id)["state"], "running");
  EXPECT_EQ(other->complete(id, 1, l["leaseId"]).status, 200);
  EXPECT_EQ(server.task(id)["state"], "succeeded");
  auto metrics = server.admin()->get("/metrics").body;
  EXPECT_NE(metrics.find("tamma_assignments_unacknowledged_total 1"), std::string::npos);
}

}  // namespace
}  // namespace tamma::orchestrator::testing

namespace tamma::orchestrator::testing {
namespace {

// --- defect 5 as users meet it: the real binary under a 1024 descriptor limit -------------------

std::uint64_t rss_kib(int pid) {
  std::string status = tamma::testing::read_file("/proc/" + std::to_string(pid) + "/status");
  auto at = status.find("VmRSS:");
  return at == std::string::npos ? 0 : std::stoull(status.substr(at + 6));
}

TEST(OrchestratorEdge, TwoThousandIdleOrSlowConnectionsDoNotLockOutAWorker) {
  // The test holds 2,000 connections itself.
  rlimit own{};
  ::getrlimit(RLIMIT_NOFILE, &own);
  if (own.rlim_cur < 4096 && own.rlim_max >= 4096) {
    own.rlim_cur = std::min<rlim_t>(own.rlim_max, 8192);
    ::setrlimit(RLIMIT_NOFILE, &own);
  }
  ASSERT_GE(own.rlim_cur, 2100u) << "this test needs 2,100 descriptors for its own clients";

  tamma::testing::TempDir dir;
  int port = tamma::testing::free_port();
  tamma::testing::ChildProcess orchestrator(
      {"/usr/bin/prlimit", "--nofile=1024:1024", "--", TAMMA_ORCHESTRATOR_BINARY, "serve",
       "--listen", "127.0.0.1:" + std::to_string(port), "--db",
       "sqlite:" + (dir.path() / "db").string()},
      {std::string("TAMMA_ADMIN_TOKEN=") + kAdminToken,
       std::string("TAMMA_REGISTRATION_TOKEN=") + kRegistrationToken});
  ASSERT_TRUE(orchestrator.wait_for_output("listening on", 20s)) << orchestrator.err_so_far();
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  HttpClient registration(url, kRegistrationToken);
  auto reg = registration.post_json("/api/v1/workers/register", {{"capabilities", capabilities()}});
  ASSERT_EQ(reg.status, 201) << reg.body;
  const std::string worker_id = reg.json()["workerId"];
  const std::string token = reg.json()["token"];
  HttpClient kept(url, token);  // a worker connection open before the flood
  const std::string heartbeat_path = "/api/v1/workers/" + worker_id + "/heartbeat";
  const json heartbeat = {{"leases", json::array()}, {"draining", false}};
  ASSERT_EQ(kept.post_json(heartbeat_path, heartbeat).status, 200);
  const auto rss_before = rss_kib(orchestrator.pid());

  std::vector<std::unique_ptr<RawConnection>> flood;
  for (int i = 0; i < 2000; ++i) {
    try {
      flood.push_back(std::make_unique<RawConnection>(port));
    } catch (const std::exception& e) {
      FAIL() << "connection " << i << ": " << e.what();
    }
    // Half idle, half slow: a request head that never ends.
    if (i % 2 == 1) flood.back()->send("POST /api/v1/workers/register HTTP/1.1\r\nHost: x\r\n");
  }
  orchestrator.drain_output();

  // The worker gets answers within a second, on its kept connection and on a new one (as
  // after a reconnect), and so does a liveness probe.
  EXPECT_EQ(kept.post_json(heartbeat_path, heartbeat, {}, 1s).status, 200);
  HttpClient fresh(url, token);
  EXPECT_EQ(fresh.post_json(heartbeat_path, heartbeat, {}, 1s).status, 200);
  HttpClient admin(url, kAdminToken);
  auto submitted = admin.post_json("/api/v1/tasks", submit_body(task_spec()), {}, 1s);
  EXPECT_EQ(submitted.status, 201) << submitted.body;
  auto poll = fresh.request("POST", "/api/v1/workers/" + worker_id + "/poll?waitMs=0", {}, {}, 1s);
  EXPECT_EQ(poll.status, 200) << poll.body;
  HttpClient probe(url, "");
  EXPECT_EQ(probe.get("/health", 1s).status, 200);

  const auto rss_after = rss_kib(orchestrator.pid());
  std::printf(
      "[ figures  ] orchestrator RSS %llu KiB before, %llu KiB with 2000 idle or slow "
      "connections open\n",
      static_cast<unsigned long long>(rss_before), static_cast<unsigned long long>(rss_after));
  EXPECT_LT(rss_after, rss_before + 64 * 1024) << "memory grows with connections nobody proved";
  flood.clear();
  orchestrator.send_signal(SIGTERM);
  EXPECT_EQ(orchestrator.wait(20s).exit_code, 0);
}

}  // namespace
}  // namespace tamma::orchestrator::testing
