// Log streaming by byte offset (idempotent resends, gap and mismatch answers with the length to
// rewind to), following a log with a held read, and artifacts.

#include <future>

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

TEST(OrchestratorLogs, AppendByOffsetIsIdempotentAndGapsAskForARewind) {
  TestServer server;
  auto worker = server.register_worker();
  Held h = take(server, *worker);

  auto r1 = worker->append_raw(h.task_id, h.attempt, h.lease_id, 0, "hello ");
  ASSERT_EQ(r1.status, 200) << r1.body;
  EXPECT_EQ(r1.json()["length"], 6);
  // The same bytes again (the answer was lost): accepted, nothing duplicated.
  auto resend = worker->append_raw(h.task_id, h.attempt, h.lease_id, 0, "hello ");
  EXPECT_EQ(resend.status, 200);
  EXPECT_EQ(resend.json()["length"], 6);
  // Overlapping resend that continues: only the new part is added.
  auto overlap = worker->append_raw(h.task_id, h.attempt, h.lease_id, 3, "lo world");
  EXPECT_EQ(overlap.status, 200) << overlap.body;
  EXPECT_EQ(overlap.json()["length"], 11);

  // A gap: 416 with the length to resume from.
  auto gap = worker->append_raw(h.task_id, h.attempt, h.lease_id, 20, "lost");
  EXPECT_EQ(gap.status, 416) << gap.body;
  EXPECT_EQ(error_code(gap), "log_offset_gap");
  EXPECT_EQ(gap.json()["error"]["length"], 11);
  EXPECT_EQ(gap.header("x-tamma-log-length"), "11");
  // Different bytes over what is stored: 409 with the length.
  auto mismatch = worker->append_raw(h.task_id, h.attempt, h.lease_id, 0, "HELLO");
  EXPECT_EQ(mismatch.status, 409);
  EXPECT_EQ(error_code(mismatch), "log_mismatch");
  EXPECT_EQ(mismatch.json()["error"]["length"], 11);

  // The JSON form and the Content-Range form append the same way.
  auto json_form = worker->task_post(
      h.task_id, "logs",
      {{"attempt", h.attempt}, {"leaseId", h.lease_id}, {"offset", 11}, {"data", "\n"}});
  EXPECT_EQ(json_form.status, 200) << json_form.body;
  auto ranged = worker->http.request(
      "POST",
      "/api/v1/tasks/" + h.task_id + "/logs?attempt=" + std::to_string(h.attempt) +
          "&leaseId=" + h.lease_id,
      "bye\n", {"Content-Type: text/plain", "Content-Range: bytes 12-15/*"});
  EXPECT_EQ(ranged.status, 200) << ranged.body;

  auto read = server.admin()->get("/api/v1/tasks/" + h.task_id + "/logs");
  ASSERT_EQ(read.status, 200);
  EXPECT_EQ(read.body, "hello world\nbye\n");
  EXPECT_EQ(read.header("x-tamma-log-length"), "16");
  EXPECT_EQ(read.header("x-tamma-log-open"), "true");
  auto tail = server.admin()->get("/api/v1/tasks/" + h.task_id + "/logs?offset=6");
  EXPECT_EQ(tail.body, "world\nbye\n");
  EXPECT_EQ(server.task(h.task_id)["logLength"], 16);
}

TEST(OrchestratorLogs, LargeLogsSpanChunksAndReadBackExactly) {
  TestServer server;
  auto worker = server.register_worker();
  Held h = take(server, *worker);
  std::string expected;
  for (int i = 0; i < 5; ++i) {
    std::string piece(150'000, static_cast<char>('a' + i));
    piece[0] = '\n';
    auto r = worker->append_raw(h.task_id, h.attempt, h.lease_id, expected.size(), piece);
    ASSERT_EQ(r.status, 200) << r.body;
    expected += piece;
  }
  auto read = server.admin()->get("/api/v1/tasks/" + h.task_id + "/logs?offset=100000");
  ASSERT_EQ(read.status, 200);
  EXPECT_EQ(read.body, expected.substr(100000));
  // Re-sending a span that straddles stored pieces is still recognised as the same bytes.
  auto resend =
      worker->append_raw(h.task_id, h.attempt, h.lease_id, 60000, expected.substr(60000, 200000));
  EXPECT_EQ(resend.status, 200) << resend.body;
}

TEST(OrchestratorLogs, LogLimitIs413) {
  TestServer server([](ServerConfig& c) { c.max_log_bytes = 10; });
  auto worker = server.register_worker();
  Held h = take(server, *worker);
  EXPECT_EQ(worker->append_raw(h.task_id, h.attempt, h.lease_id, 0, "0123456789").status, 200);
  auto over = worker->append_raw(h.task_id, h.attempt, h.lease_id, 10, "x");
  EXPECT_EQ(over.status, 413);
  EXPECT_EQ(error_code(over), "log_too_large");
}

TEST(OrchestratorLogs, FollowHoldsTheReadUntilOutputArrivesAndEndsWithTheTask) {
  TestServer server;
  auto worker = server.register_worker();
  Held h = take(server, *worker);
  auto admin = server.admin();
  auto follower = std::async(std::launch::async, [&] {
    HttpClient http(server.url(), kAdminToken);
    return http.get("/api/v1/tasks/" + h.task_id + "/logs?offset=0&wait=1");
  });
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(follower.wait_for(0ms), std::future_status::timeout) << "nothing to read yet";
  ASSERT_EQ(worker->append_raw(h.task_id, h.attempt, h.lease_id, 0, "line 1\n").status, 200);
  auto r = follower.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "line 1\n");

  auto end_follow = std::async(std::launch::async, [&] {
    HttpClient http(server.url(), kAdminToken);
    return http.get("/api/v1/tasks/" + h.task_id + "/logs?offset=7&wait=1");
  });
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(worker->complete(h.task_id, h.attempt, h.lease_id).status, 200);
  auto last = end_follow.get();
  EXPECT_EQ(last.body, "");
  EXPECT_EQ(last.header("x-tamma-log-open"), "false");
}

TEST(OrchestratorLogs, ArtifactsAreStoredUnderTheDataDirAndDownloadable) {
  TestServer server;
  auto worker = server.register_worker();
  Held h = take(server, *worker);
  std::string content = "binary\0content" + std::string(100000, 'z');
  auto path = "/api/v1/tasks/" + h.task_id +
              "/artifacts?name=report.tar.gz&attempt=" + std::to_string(h.attempt) +
              "&leaseId=" + h.lease_id;
  auto up = worker->http.request("POST", path, content, {"Content-Type: application/octet-stream"});
  ASSERT_EQ(up.status, 201) << up.body;
  EXPECT_EQ(up.json()["size"], content.size());
  EXPECT_EQ(up.json()["sha256"].get<std::string>().size(), 64u);
  // One file under the data dir holds the bytes (its name is a hash of the artifact's name).
  auto attempt_dir = server.config().data_dir / "artifacts" / h.task_id / "1";
  std::vector<std::filesystem::path> stored;
  for (const auto& entry : std::filesystem::directory_iterator(attempt_dir)) {
    stored.push_back(entry.path());
  }
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(tamma::testing::read_file(stored[0]), content);

  // Names that could leave the directory are refused; so is a stale fence.
  auto evil = worker->http.request(
      "POST",
      "/api/v1/tasks/" + h.task_id + "/artifacts?name=..%2Fx&attempt=1&leaseId=" + h.lease_id, "x");
  EXPECT_EQ(evil.status, 400);
  EXPECT_EQ(evil.json()["error"]["field"], "name");
  auto stale = worker->http.request(
      "POST", "/api/v1/tasks/" + h.task_id + "/artifacts?name=a&attempt=1&leaseId=nope", "x");
  EXPECT_EQ(stale.status, 409);
  // Nothing is left behind in the staging directory.
  EXPECT_TRUE(std::filesystem::is_empty(server.config().data_dir / "uploads"));

  auto view = server.task(h.task_id);
  ASSERT_EQ(view["artifacts"].size(), 1u);
  EXPECT_EQ(view["artifacts"][0]["name"], "report.tar.gz");
  auto down = server.admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/report.tar.gz");
  ASSERT_EQ(down.status, 200);
  EXPECT_EQ(down.body, content);
  // The recorded digest travels with the bytes, so a client can check them.
  EXPECT_EQ(down.header("x-checksum-sha256"), up.json()["sha256"].get<std::string>());

  // Bytes the disk lost after their row was written are never served as the artifact.
  std::filesystem::resize_file(stored[0], 1000);
  auto damaged = server.admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/report.tar.gz");
  EXPECT_EQ(damaged.status, 500);
  EXPECT_EQ(damaged.json()["error"]["code"], "artifact_damaged") << damaged.body;
  EXPECT_EQ(damaged.body.find(server.config().data_dir.string()), std::string::npos)
      << "the answer names a server path: " << damaged.body;
  std::filesystem::remove(stored[0]);
  auto gone = server.admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/report.tar.gz");
  EXPECT_EQ(gone.status, 500);
  EXPECT_EQ(gone.json()["error"]["code"], "artifact_damaged") << gone.body;
}

}  // namespace
}  // namespace tamma::orchestrator::testing
