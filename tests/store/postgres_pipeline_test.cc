// PgConnection::pipeline, on which claims stand: several statements in one round trip are one
// transaction (all or nothing), each statement sees what the ones before it did and what a
// lock it waited for let through, and a connection lost under it is a retryable storage fault
// after which the next call connects again.

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "common/error.h"
#include "orchestrator/store/postgres.h"
#include "support/postgres_cluster.h"

namespace tamma::orchestrator {
namespace {

using namespace std::chrono_literals;

class PgPipeline : public ::testing::Test {
 protected:
  PgPipeline()
      : name_(tamma::testing::shared_postgres_cluster().create_database("pipeline")),
        conninfo_(tamma::testing::shared_postgres_cluster().conninfo(name_)) {
    cluster().execute(name_,
                      "CREATE TABLE t (k text PRIMARY KEY, v integer NOT NULL CHECK (v >= 0))");
  }
  static tamma::testing::PostgresCluster& cluster() {
    return tamma::testing::shared_postgres_cluster();
  }
  std::string value(const std::string& key) {
    auto rows = cluster().execute(name_, "SELECT v::text FROM t WHERE k = '" + key + "'");
    return rows.empty() ? "(none)" : rows[0][0].value_or("NULL");
  }

  std::string name_;
  std::string conninfo_;
};

const std::string kInsert = "INSERT INTO t (k, v) VALUES ($1, $2::integer)";
const std::string kSum = "SELECT sum(v)::bigint FROM t";
const std::string kSet = "UPDATE t SET v = $2::integer WHERE k = $1";
const std::string kLock = "SELECT v FROM t WHERE k = $1 FOR UPDATE";

TEST_F(PgPipeline, StatementsRunInOrderAndCommitTogether) {
  PgConnection db(conninfo_);
  auto results = db.pipeline({{kInsert, {"a", 1}}, {kInsert, {"b", 2}}, {kSum, {}}});
  ASSERT_EQ(results.size(), 3U);
  EXPECT_EQ(results[0].affected(), 1);
  EXPECT_EQ(results[2].int64(0, 0), 3) << "a later statement sees what the earlier ones did";
  EXPECT_EQ(value("a"), "1");
  EXPECT_EQ(value("b"), "2");
}

TEST_F(PgPipeline, AFailedStatementRollsBackTheOnesBeforeItAndSkipsTheRest) {
  PgConnection db(conninfo_);
  db.pipeline({{kInsert, {"a", 1}}});
  try {
    db.pipeline({{kSet, {"a", 5}}, {kInsert, {"b", -1}}, {kInsert, {"c", 3}}});
    FAIL() << "a CHECK violation must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "database_error") << e.what();
    EXPECT_NE(std::string(e.what()).find("23514"), std::string::npos) << e.what();
  }
  EXPECT_EQ(value("a"), "1") << "the UPDATE before the failure was rolled back";
  EXPECT_EQ(value("c"), "(none)") << "the statement after the failure never ran";
  // The connection is clean afterwards: no aborted transaction left open.
  auto again = db.pipeline({{kSet, {"a", 7}}});
  EXPECT_EQ(again[0].affected(), 1);
  EXPECT_EQ(value("a"), "7");
}

TEST_F(PgPipeline, AStatementAfterALockSeesWhatTheLockWaitedFor) {
  PgConnection setup(conninfo_);
  setup.pipeline({{kInsert, {"a", 1}}});
  // Another session holds the row and changes it; the pipeline's lock waits for its commit,
  // and the statement after the lock (a snapshot of its own) reads the new value.
  PgConnection other(conninfo_);
  PgTransaction tx(other);
  other.exec(kLock, {"a"});
  other.exec(kSet, {"a", 10});
  auto waiting = std::async(std::launch::async, [&] {
    PgConnection db(conninfo_);
    return db.pipeline({{kLock, {"a"}}, {kSum, {}}})[1].int64(0, 0);
  });
  EXPECT_EQ(waiting.wait_for(300ms), std::future_status::timeout) << "the lock must wait";
  tx.commit();
  EXPECT_EQ(waiting.get(), 10);
}

TEST_F(PgPipeline, ALostConnectionIsARetryableStorageFaultAndTheNextCallConnectsAgain) {
  PgConnection db(conninfo_);
  db.pipeline({{kInsert, {"a", 1}}});
  // The server ends this session under it, as a failover or an administrator would.
  cluster().execute(name_,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()");
  try {
    db.pipeline({{kSet, {"a", 2}}, {kSum, {}}});
    FAIL() << "a pipeline on a terminated session must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "storage_unavailable") << e.what();
    EXPECT_TRUE(e.retryable());
  }
  EXPECT_EQ(value("a"), "1");
  auto results = db.pipeline({{kSet, {"a", 2}}, {kSum, {}}});
  EXPECT_EQ(results[1].int64(0, 0), 2) << "connected again on the next call";
}

}  // namespace
}  // namespace tamma::orchestrator
