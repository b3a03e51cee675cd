// Artifacts with several orchestrators on one PostgreSQL database (issue 10, docs/adr/0027):
// the bytes live in the database, so an artifact uploaded through one replica downloads whole
// through another that shares no directory with it, and a stale worker's upload is refused
// whichever replica it reaches. Real servers over HTTP on loopback, each with its own private
// staging directory, on a real PostgreSQL cluster.

#include "orchestrator/auth.h"
#include "orchestrator/orchestrator_fixture.h"
#include "orchestrator/raw_http.h"
#include "store/store_backends.h"
#include "support/postgres_cluster.h"

namespace tamma::orchestrator::testing {
namespace {

using tamma::testing::shared_postgres_cluster;

class ReplicasArtifacts : public ::testing::Test {
 protected:
  void SetUp() override { database_ = shared_postgres_cluster().create_database("replart"); }

  // Each replica stages uploads in a data directory of its own, shared with no other.
  std::unique_ptr<TestServer> replica(std::function<void(ServerConfig&)> tweak = {}) {
    auto& dir = dirs_.emplace_back(std::make_unique<tamma::testing::TempDir>());
    return std::make_unique<TestServer>([this, tweak, data = dir->path()](ServerConfig& c) {
      c.db_path.clear();
      c.postgres_conninfo = shared_postgres_cluster().conninfo(database_);
      c.data_dir = data;
      if (tweak) tweak(c);
    });
  }

  std::int64_t chunks_of(const std::string& task_id) {
    auto rows = shared_postgres_cluster().execute(
        database_, "SELECT count(*) FROM artifact_chunks WHERE task_id = '" + task_id + "'");
    return std::stoll(rows.at(0).at(0).value_or("-1"));
  }

  std::string database_;
  std::vector<std::unique_ptr<tamma::testing::TempDir>> dirs_;
};

int port_of(const TestServer& server) {
  return std::stoi(server.url().substr(server.url().rfind(':') + 1));
}

std::string upload_path(const std::string& task_id, const std::string& name, int attempt,
                        const std::string& lease) {
  return "/api/v1/tasks/" + task_id + "/artifacts?name=" + name +
         "&attempt=" + std::to_string(attempt) + "&leaseId=" + lease;
}

HttpResult upload(TestWorker& worker, const std::string& task_id, const std::string& name,
                  int attempt, const std::string& lease, const std::string& bytes) {
  return worker.http.request("POST", upload_path(task_id, name, attempt, lease), bytes,
                             {"Content-Type: application/octet-stream"});
}

TEST_F(ReplicasArtifacts, AnArtifactUploadedThroughOneReplicaDownloadsWholeThroughAnother) {
  auto a = replica();
  auto b = replica();
  ASSERT_NE(a->config().data_dir, b->config().data_dir) << "the replicas share no directory";
  auto worker = a->register_worker();
  Held h = take(*a, *worker);
  ASSERT_FALSE(h.task_id.empty());
  const std::string bytes = random_bytes(5 * 1024 * 1024 + 321, 11);
  auto up = upload(*worker, h.task_id, "dist%2Fbig.bin", h.attempt, h.lease_id, bytes);
  ASSERT_EQ(up.status, 201) << up.body;
  EXPECT_EQ(up.json()["sha256"], sha256_hex(bytes));
  EXPECT_EQ(up.json()["size"], bytes.size());
  // Nothing of it stays in a directory: the staged upload is gone once stored.
  for (TestServer* s : {a.get(), b.get()}) {
    EXPECT_TRUE(std::filesystem::is_empty(s->config().data_dir / "uploads"));
    EXPECT_FALSE(std::filesystem::exists(s->config().data_dir / "artifacts"));
  }

  for (TestServer* s : {b.get(), a.get()}) {
    auto down = s->admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/dist%2Fbig.bin");
    ASSERT_EQ(down.status, 200) << down.body.substr(0, 300);
    EXPECT_EQ(down.header("x-checksum-sha256"), sha256_hex(bytes));
    EXPECT_EQ(down.body.size(), bytes.size());
    EXPECT_EQ(sha256_hex(down.body), sha256_hex(bytes));
    EXPECT_TRUE(down.body == bytes);
    EXPECT_EQ(down.header("content-type"), "application/octet-stream");
  }
  auto head =
      b->admin()->request("HEAD", "/api/v1/tasks/" + h.task_id + "/artifacts/dist%2Fbig.bin");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("content-length"), std::to_string(bytes.size()));
  auto missing = b->admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/nope.bin");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(error_code(missing), "artifact_not_found");

  // The worker ends the task through the other replica; the artifact stays downloadable.
  TestWorker on_b(b->url(), worker->id, worker->token);
  ASSERT_EQ(on_b.complete(h.task_id, h.attempt, h.lease_id).status, 200);
  auto after = b->admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/dist%2Fbig.bin");
  EXPECT_EQ(after.status, 200);
  EXPECT_TRUE(after.body == bytes);
}

TEST_F(ReplicasArtifacts, OtherRequestsAreAnsweredWhileAClientIsMidwayThroughADownload) {
  auto a = replica();
  auto worker = a->register_worker();
  Held h = take(*a, *worker);
  const std::string bytes = random_bytes(24 * 1024 * 1024, 12);
  ASSERT_EQ(upload(*worker, h.task_id, "big.bin", h.attempt, h.lease_id, bytes).status, 201);

  RawConnection slow(port_of(*a));
  ASSERT_TRUE(slow.send("GET /api/v1/tasks/" + h.task_id +
                        "/artifacts/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                        kAdminToken + "\r\n\r\n"));
  // The head and the first bytes, then this client stops reading: the rest waits in the
  // server's hands (at most a chunk or two of it) while everything else goes on.
  auto start = slow.read_until(
      [](const std::string& got) {
        auto end = got.find("\r\n\r\n");
        return end != std::string::npos && got.size() > end + 4 + 1024;
      },
      30s);
  ASSERT_EQ(status_of(start), 200) << start.substr(0, 300);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(a->admin()->get("/api/v1/tasks/" + h.task_id).status, 200);
    EXPECT_EQ(worker
                  ->heartbeat(json::array(
                      {{{"taskId", h.task_id}, {"attempt", h.attempt}, {"leaseId", h.lease_id}}}))
                  .status,
              200);
  }
  auto whole = slow.read_answer(false, 60s);
  ASSERT_EQ(status_of(whole), 200);
  EXPECT_EQ(sha256_hex(body_of(whole)), sha256_hex(bytes));
}

TEST_F(ReplicasArtifacts, AStaleUploadIsRefusedThroughEitherReplicaAndStoresNothing) {
  auto fast = [](ServerConfig& c) {
    c.lease_ttl = 1s;
    c.heartbeat_interval = 300ms;
    c.retry_base = 10ms;
  };
  auto a = replica(fast);
  auto b = replica(fast);
  auto slow = a->register_worker();
  Held first = take(*a, *slow);
  ASSERT_FALSE(first.task_id.empty());
  // The slow worker stops renewing; either replica's reaper expires the lease.
  auto expired = b->wait_task(first.task_id, [](const json& t) { return t["state"] != "running"; });
  ASSERT_NE(expired["state"], "running") << expired.dump();
  auto fresh = b->register_worker();
  auto second = fresh->poll(5000);
  ASSERT_EQ(second.status, 200) << second.body;
  ASSERT_EQ(second.json()["attempt"], 2);

  const std::string bytes = random_bytes(1024 * 1024 + 5, 13);
  TestWorker slow_on_b(b->url(), slow->id, slow->token);
  for (TestWorker* w : {slow.get(), &slow_on_b}) {
    auto r = upload(*w, first.task_id, "out.bin", first.attempt, first.lease_id, bytes);
    EXPECT_EQ(r.status, 409) << r.body;
    EXPECT_EQ(error_code(r), "lease_lost");
  }
  EXPECT_EQ(chunks_of(first.task_id), 0) << "a refused upload leaves no chunk";
  EXPECT_TRUE(a->task(first.task_id)["artifacts"].empty());
  for (TestServer* s : {a.get(), b.get()}) {
    EXPECT_TRUE(std::filesystem::is_empty(s->config().data_dir / "uploads"));
  }
  // The running attempt's upload, through the replica it did not poll, is stored.
  TestWorker fresh_on_a(a->url(), fresh->id, fresh->token);
  auto ok = upload(fresh_on_a, first.task_id, "out.bin", 2, second.json()["leaseId"], bytes);
  EXPECT_EQ(ok.status, 201) << ok.body;
  EXPECT_GT(chunks_of(first.task_id), 0);
  auto down = b->admin()->get("/api/v1/tasks/" + first.task_id + "/artifacts/out.bin");
  EXPECT_EQ(down.status, 200);
  EXPECT_TRUE(down.body == bytes);
}

TEST_F(ReplicasArtifacts, WithoutADataDirectoryUploadsAreStagedInAPrivateOneRemovedAtTheEnd) {
  tamma::testing::TempDir tmp;
  const char* old_tmpdir = std::getenv("TMPDIR");
  const std::string saved = old_tmpdir != nullptr ? old_tmpdir : "";
  ::setenv("TMPDIR", tmp.path().c_str(), 1);
  auto made = [&] {
    std::vector<std::filesystem::path> found;
    for (const auto& e : std::filesystem::directory_iterator(tmp.path())) {
      if (e.path().filename().string().rfind("tamma-orchestrator-", 0) == 0) {
        found.push_back(e.path());
      }
    }
    return found;
  };
  {
    auto a = replica([](ServerConfig& c) { c.data_dir.clear(); });
    if (old_tmpdir != nullptr) {
      ::setenv("TMPDIR", saved.c_str(), 1);
    } else {
      ::unsetenv("TMPDIR");
    }
    ASSERT_EQ(made().size(), 1u);
    EXPECT_TRUE(std::filesystem::exists(made()[0] / "uploads"));
    auto worker = a->register_worker();
    Held h = take(*a, *worker);
    const std::string bytes = random_bytes(700 * 1024, 14);
    auto up = upload(*worker, h.task_id, "a.bin", h.attempt, h.lease_id, bytes);
    EXPECT_EQ(up.status, 201) << up.body;
    EXPECT_TRUE(std::filesystem::is_empty(made()[0] / "uploads"));
    auto down = a->admin()->get("/api/v1/tasks/" + h.task_id + "/artifacts/a.bin");
    EXPECT_TRUE(down.body == bytes);
  }
  EXPECT_TRUE(made().empty()) << "the private staging directory goes with the server";
}

}  // namespace
}  // namespace tamma::orchestrator::testing
