// Several orchestrators on one PostgreSQL database (issue 10): any replica answers any request,
// a task submitted on one reaches a poll parked on another, and only one, and a stale worker's
// write is refused whichever replica it reaches. Real servers over HTTP on loopback, each with
// its own connections, on a real PostgreSQL cluster.

#include <future>

#include "orchestrator/orchestrator_fixture.h"
#include "support/postgres_cluster.h"

namespace tamma::orchestrator::testing {
namespace {

using tamma::testing::shared_postgres_cluster;

class Replicas : public ::testing::Test {
 protected:
  void SetUp() override { database_ = shared_postgres_cluster().create_database("replicas"); }

  std::unique_ptr<TestServer> replica(std::function<void(ServerConfig&)> tweak = {}) {
    return std::make_unique<TestServer>([this, tweak](ServerConfig& c) {
      c.db_path.clear();
      c.postgres_conninfo = shared_postgres_cluster().conninfo(database_);
      c.data_dir = data_.path();  // shared, as it must be while artifacts are files
      if (tweak) tweak(c);
    });
  }

  std::string database_;
  tamma::testing::TempDir data_;
};

// Until `server` holds `n` parked polls.
bool wait_parked(TestServer& server, int n) { return wait_for_parked_polls(*server.admin(), n); }

TEST_F(Replicas, ATaskSubmittedOnOneReachesAPollParkedOnAnotherAndOnlyOne) {
  auto a = replica();
  auto b = replica();
  auto c = replica();
  // Registered through one replica, known to all: the token is checked against the database.
  auto on_b = b->register_worker();
  auto registered_on_a = a->register_worker();
  TestWorker on_c(c->url(), registered_on_a->id, registered_on_a->token);
  auto poll_b = std::async(std::launch::async, [&] { return on_b->poll(3000); });
  auto poll_c = std::async(std::launch::async, [&] { return on_c.poll(3000); });
  ASSERT_TRUE(wait_parked(*b, 1)) << "no poll parked on replica b";
  ASSERT_TRUE(wait_parked(*c, 1)) << "no poll parked on replica c";

  const std::string id = a->submit(submit_body(task_spec()));
  auto rb = poll_b.get();
  auto rc = poll_c.get();
  const int handed = (rb.status == 200 ? 1 : 0) + (rc.status == 200 ? 1 : 0);
  EXPECT_EQ(handed, 1) << "b: " << rb.status << " " << rb.body << "\nc: " << rc.status << " "
                       << rc.body;
  const auto& got = rb.status == 200 ? rb : rc;
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.json()["taskId"], id);
  EXPECT_EQ((rb.status == 200 ? rc : rb).status, 204) << "the other poll waits out its time";
  // Every replica sees the same task, running on the worker that got it.
  for (TestServer* s : {a.get(), b.get(), c.get()}) {
    auto t = s->task(id);
    EXPECT_EQ(t["state"], "running");
    EXPECT_EQ(t["workerId"], rb.status == 200 ? on_b->id : on_c.id);
  }
}

TEST_F(Replicas, AStaleWorkersWriteIsRefusedWhicheverReplicaItReaches) {
  auto fast = [](ServerConfig& c) {
    c.lease_ttl = 1s;
    c.heartbeat_interval = 300ms;
    c.retry_base = 10ms;
  };
  auto a = replica(fast);
  auto b = replica(fast);
  auto slow = a->register_worker();
  const std::string id = a->submit(submit_body(task_spec()));
  auto first = slow->poll(2000);
  ASSERT_EQ(first.status, 200) << first.body;
  const std::string old_lease = first.json()["leaseId"];
  // The slow worker stops renewing; either replica's reaper expires the lease.
  auto expired = b->wait_task(id, [](const json& t) { return t["state"] != "running"; });
  ASSERT_NE(expired["state"], "running") << expired.dump();

  auto fresh = b->register_worker();
  auto second = fresh->poll(5000);
  ASSERT_EQ(second.status, 200) << second.body;
  ASSERT_EQ(second.json()["attempt"], 2);
  const std::string new_lease = second.json()["leaseId"];

  TestWorker slow_on_b(b->url(), slow->id, slow->token);
  for (TestWorker* w : {slow.get(), &slow_on_b}) {
    auto r = w->complete(id, 1, old_lease);
    EXPECT_EQ(r.status, 409) << r.body;
    EXPECT_EQ(r.json()["error"]["code"], "lease_lost") << r.body;
  }
  // The fresh worker reports through the other replica than the one it polled.
  TestWorker fresh_on_a(a->url(), fresh->id, fresh->token);
  auto done = fresh_on_a.complete(id, 2, new_lease);
  EXPECT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(b->task(id)["state"], "succeeded");
  EXPECT_EQ(a->task(id)["attempt"], 2);
}

}  // namespace
}  // namespace tamma::orchestrator::testing
