// The SQLite store on its own: backoff arithmetic, expiry decided by one conditional UPDATE,
// release of an undelivered claim, durability across reopen, checkpoints on a thread of their
// own.

#include <sqlite3.h>

#include <chrono>
#include <thread>

#include "orchestrator/auth.h"
#include "orchestrator/store/sqlite_store.h"
#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

NewTask new_task(const std::string& id, int max_retries = 3) {
  NewTask t;
  t.id = id;
  t.type = "command";
  t.spec = task_spec();
  t.spec["id"] = id;
  t.max_retries = max_retries;
  t.request_hash = id;
  return t;
}

WorkerInfo worker_info(SqliteStore& store, const std::string& id, int slots = 4) {
  auto caps = wire::capabilities_from_json(capabilities({"command"}, json::object(), slots));
  store.register_worker(id, sha256_hex(id), caps);
  return *store.worker(id);
}

TEST(SqliteStore, RetryBackoffDoublesUpToTheCap) {
  tamma::testing::TempDir dir;
  SqliteStore store(dir.path() / "db.sqlite", SyncMode::kFull);
  auto w = worker_info(store, "w1");
  store.submit(new_task("t1", 5), nullptr, {}, {});
  RetryPolicy policy{std::chrono::milliseconds(1000), std::chrono::milliseconds(3000)};
  std::vector<std::int64_t> waits;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto c = store.claim(w, "lease" + std::to_string(attempt), std::chrono::seconds(30));
    ASSERT_TRUE(c.has_value());
    ASSERT_EQ(c->assignment.attempt, attempt);
    wire::FailRequest fail;
    fail.fence = {attempt, "lease" + std::to_string(attempt)};
    fail.error = {"boom", "failed", true};
    ASSERT_EQ(store.fail("t1", "w1", fail, policy).state, wire::TaskState::kRetryWait);
    waits.push_back(*store.task("t1")->retry_in_ms);
    // Skip the wait: the test is about the delay written, not about sleeping through it.
    SqliteDb raw(dir.path() / "db.sqlite");
    raw.exec("PRAGMA busy_timeout = 2000");
    raw.exec("UPDATE tasks SET available_at = 0 WHERE id = 't1'");
    ASSERT_EQ(store.promote_retries().size(), 1u);
  }
  // min(1000 * 2^n, 3000) for n = 0, 1, 2, give or take the milliseconds the test took.
  EXPECT_NEAR(waits[0], 1000, 50);
  EXPECT_NEAR(waits[1], 2000, 50);
  EXPECT_NEAR(waits[2], 3000, 50);
}

TEST(SqliteStore, ExpiryIsOneConditionalUpdateAndARenewalWinsTheRace) {
  tamma::testing::TempDir dir;
  SqliteStore store(dir.path() / "db.sqlite", SyncMode::kNormal);
  auto w = worker_info(store, "w1");
  store.submit(new_task("renewed"), nullptr, {}, {});
  store.submit(new_task("abandoned"), nullptr, {}, {});
  store.submit(new_task("cancelled"), nullptr, {}, {});
  auto renewed = store.claim(w, "l1", std::chrono::milliseconds(1));
  auto abandoned = store.claim(w, "l2", std::chrono::milliseconds(1));
  auto cancelled = store.claim(w, "l3", std::chrono::milliseconds(1));
  ASSERT_TRUE(renewed && abandoned && cancelled);
  store.cancel("cancelled");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // A heartbeat arriving after the deadline but before the reaper still renews: the reaper's
  // UPDATE re-checks the deadline itself instead of acting on an earlier read.
  wire::HeartbeatRequest hb;
  hb.leases.push_back({"renewed", 1, "l1"});
  auto out = store.heartbeat("w1", hb, std::chrono::seconds(30));
  ASSERT_TRUE(out.known);
  EXPECT_TRUE(out.response.lost_leases.empty());

  auto expired =
      store.expire_leases({std::chrono::milliseconds(1000), std::chrono::milliseconds(60000)});
  ASSERT_EQ(expired.size(), 2u);
  std::map<std::string, wire::TaskState> states;
  for (const auto& e : expired) states[e.task_id] = e.state;
  EXPECT_EQ(states["abandoned"], wire::TaskState::kRetryWait);
  EXPECT_EQ(states["cancelled"], wire::TaskState::kCancelled);
  EXPECT_EQ(store.task("renewed")->state, wire::TaskState::kRunning);
  EXPECT_TRUE(store.expire_leases({}).empty()) << "a second pass finds nothing";
  auto next = store.next_deadline_ms(std::chrono::milliseconds(10000));
  ASSERT_TRUE(next.has_value());
  EXPECT_LE(*next, 1000);
}

TEST(SqliteStore, ReleaseGivesAnUndeliveredClaimBackWithoutSpendingAnAttempt) {
  tamma::testing::TempDir dir;
  SqliteStore store(dir.path() / "db.sqlite", SyncMode::kNormal);
  auto w = worker_info(store, "w1");
  store.submit(new_task("t1"), nullptr, {}, {});
  auto first = store.claim(w, "lost-answer", std::chrono::seconds(30));
  ASSERT_TRUE(first);
  EXPECT_FALSE(store.release("t1", 1, "some-other-lease"));
  EXPECT_TRUE(store.release("t1", 1, "lost-answer"));
  EXPECT_EQ(store.task("t1")->state, wire::TaskState::kQueued);
  auto second = store.claim(w, "delivered", std::chrono::seconds(30));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->assignment.attempt, 1);
  // The released lease id stays fenced out.
  wire::StartedRequest started{{1, "lost-answer"}};
  EXPECT_EQ(store.started("t1", "w1", started.fence).status, FenceStatus::kLeaseLost);
  EXPECT_EQ(store.started("t1", "w1", {1, "delivered"}).status, FenceStatus::kOk);
}

TEST(SqliteStore, AnUnacknowledgedClaimComesBackUnderTheSameAttempt) {
  tamma::testing::TempDir dir;
  SqliteStore store(dir.path() / "db.sqlite", SyncMode::kNormal);
  auto w = worker_info(store, "w1");
  for (const char* id : {"silent", "started", "heartbeat", "logged"}) {
    store.submit(new_task(id), nullptr, {}, {});
  }
  ASSERT_EQ(store.claim(w, "l-silent", std::chrono::seconds(30))->assignment.task_id, "silent");
  ASSERT_TRUE(store.claim(w, "l-started", std::chrono::seconds(30)));
  ASSERT_TRUE(store.claim(w, "l-heartbeat", std::chrono::seconds(30)));
  ASSERT_TRUE(store.claim(w, "l-logged", std::chrono::seconds(30)));
  // Each way a worker shows it has the task acknowledges it.
  EXPECT_EQ(store.started("started", "w1", {1, "l-started"}).status, FenceStatus::kOk);
  wire::HeartbeatRequest hb;
  hb.leases.push_back({"heartbeat", 1, "l-heartbeat"});
  ASSERT_TRUE(store.heartbeat("w1", hb, std::chrono::seconds(30)).known);
  EXPECT_EQ(store.append_log("logged", "w1", {1, "l-logged"}, 0, "x", 1 << 20).fence.status,
            FenceStatus::kOk);

  EXPECT_TRUE(store.requeue_unacknowledged(std::chrono::seconds(10)).empty()) << "not yet due";
  auto next = store.next_deadline_ms(std::chrono::milliseconds(200));
  ASSERT_TRUE(next.has_value());
  EXPECT_LE(*next, 200) << "the reaper wakes for the acknowledgement deadline";
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  auto requeued = store.requeue_unacknowledged(std::chrono::milliseconds(10));
  ASSERT_EQ(requeued.size(), 1u);
  EXPECT_EQ(requeued[0].task_id, "silent");
  EXPECT_EQ(requeued[0].attempt, 1);
  EXPECT_EQ(requeued[0].state, wire::TaskState::kQueued);
  for (const char* id : {"started", "heartbeat", "logged"}) {
    EXPECT_EQ(store.task(id)->state, wire::TaskState::kRunning) << id;
  }
  // The attempt did not count, and the old lease id stays fenced out.
  auto again = store.claim(worker_info(store, "w2"), "l-again", std::chrono::seconds(30));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->assignment.task_id, "silent");
  EXPECT_EQ(again->assignment.attempt, 1);
  EXPECT_NE(store.started("silent", "w1", {1, "l-silent"}).status, FenceStatus::kOk);
  EXPECT_EQ(store.started("silent", "w2", {1, "l-again"}).status, FenceStatus::kOk);
}

TEST(SqliteStore, MigratesAVersionOneDatabaseKeepingRunningLeasesAcknowledged) {
  tamma::testing::TempDir dir;
  const auto file = dir.path() / "db.sqlite";
  {
    // A version 1 database as the previous release left it, with a task running.
    SqliteDb db(file);
    db.exec(R"sql(
      CREATE TABLE tasks (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL, priority INTEGER NOT NULL,
        max_retries INTEGER NOT NULL, labels TEXT NOT NULL, idempotency_key TEXT UNIQUE,
        request_hash TEXT, attempt INTEGER NOT NULL DEFAULT 0, worker_id TEXT, lease_id TEXT,
        lease_expires_at INTEGER, available_at INTEGER NOT NULL, progress TEXT, result TEXT,
        error TEXT, log_length INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER);
      CREATE TABLE workers (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
        capabilities TEXT NOT NULL, draining INTEGER NOT NULL DEFAULT 0,
        drain_requested INTEGER NOT NULL DEFAULT 0, registered_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL, gone_at INTEGER);
      CREATE TABLE attempts (task_id TEXT NOT NULL, attempt INTEGER NOT NULL,
        worker_id TEXT NOT NULL, lease_id TEXT NOT NULL, claimed_at INTEGER NOT NULL,
        ended_at INTEGER, outcome TEXT, PRIMARY KEY (task_id, attempt)) WITHOUT ROWID;
      INSERT INTO attempts VALUES ('old', 1, 'w1', 'l1', 1, NULL, NULL);
      INSERT INTO tasks (id, type, spec, state, priority, max_retries, labels, attempt,
        worker_id, lease_id, lease_expires_at, available_at, created_at, updated_at)
        VALUES ('old', 'command', '{}', 'running', 0, 3, '{}', 1, 'w1', 'l1', 1, 1, 1, 1);
      PRAGMA user_version = 1;
    )sql");
  }
  SqliteStore store(file, SyncMode::kNormal);
  SqliteDb check(file);
  EXPECT_EQ(check.pragma("user_version"), "5");
  // Version 3: the running task has used none of its excused host failures.
  auto row = check.prepare("SELECT host_failures, log_missing_bytes FROM tasks WHERE id = 'old'");
  ASSERT_TRUE(row.step());
  EXPECT_EQ(row.int64(0), 0);
  EXPECT_EQ(row.int64(1), 0);
  EXPECT_TRUE(store.requeue_unacknowledged(std::chrono::milliseconds(0)).empty())
      << "a lease held before the upgrade is not taken for an unacknowledged one";
}

TEST(SqliteStore, SubmitHandsTheTaskToAParkedWorkerInTheSameTransaction) {
  tamma::testing::TempDir dir;
  SqliteStore store(dir.path() / "db.sqlite", SyncMode::kFull);
  auto w = worker_info(store, "w1", 1);
  auto out = store.submit(new_task("t1"), &w, "lease-1", std::chrono::seconds(30));
  ASSERT_TRUE(out.created);
  ASSERT_TRUE(out.claim.has_value());
  EXPECT_EQ(out.claim->assignment.task_id, "t1");
  EXPECT_EQ(out.claim->assignment.attempt, 1);
  EXPECT_EQ(store.task("t1")->state, wire::TaskState::kRunning);
  // Its one slot is taken: the next submit stays queued.
  w = *store.worker("w1");
  auto second = store.submit(new_task("t2"), &w, "lease-2", std::chrono::seconds(30));
  EXPECT_TRUE(second.created);
  EXPECT_FALSE(second.claim.has_value());
  EXPECT_EQ(store.task("t2")->state, wire::TaskState::kQueued);
  // A replayed idempotent submit claims nothing.
  NewTask keyed = new_task("t3");
  keyed.idempotency_key = "k";
  store.submit(keyed, nullptr, {}, {});
  auto replay = store.submit(keyed, &w, "lease-3", std::chrono::seconds(30));
  EXPECT_FALSE(replay.created);
  EXPECT_FALSE(replay.claim.has_value());
}

TEST(SqliteStore, UsesWalAndTheChosenSynchronousModeAndSurvivesReopen) {
  tamma::testing::TempDir dir;
  auto file = dir.path() / "db.sqlite";
  {
    SqliteStore store(file, SyncMode::kFull);
    store.submit(new_task("t1"), nullptr, {}, {});
    store.put_setting("k", "v");
  }
  SqliteDb raw(file);
  EXPECT_EQ(raw.pragma("journal_mode"), "wal");
  EXPECT_EQ(raw.pragma("user_version"), "5");
  SqliteStore again(file, SyncMode::kNormal);
  EXPECT_EQ(again.setting("k"), "v");
  ASSERT_TRUE(again.task("t1").has_value());
  EXPECT_EQ(again.task("t1")->state, wire::TaskState::kQueued);
}

TEST(SqliteStore, RefusesADatabaseFromANewerVersion) {
  tamma::testing::TempDir dir;
  auto file = dir.path() / "db.sqlite";
  {
    SqliteDb raw(file);
    raw.exec("PRAGMA user_version = 99");
  }
  try {
    SqliteStore store(file, SyncMode::kFull);
    FAIL() << "opened a database it does not understand";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "database_too_new");
  }
}

// Waits for `done`, asking every 10 ms, for up to 60 s (a cue, not a timing: the thread that
// checkpoints has its own pace).
template <typename F>
bool eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::uintmax_t wal_bytes(const std::filesystem::path& file) {
  std::error_code ec;
  auto size = std::filesystem::file_size(file.string() + "-wal", ec);
  return ec ? 0 : size;
}

std::int64_t again_count(SqliteStore& store) { return store.count_tasks().by_state["queued"]; }

// A WAL frame: a 24-byte header and one page (4096 bytes, SQLite's default).
constexpr std::uintmax_t kFrameBytes = 24 + 4096;

TEST(SqliteStore, CheckpointsOnTheirOwnThreadKeepTheWalSmallAndLoseNothing) {
  tamma::testing::TempDir dir;
  auto file = dir.path() / "db.sqlite";
  constexpr int kThreshold = 40;
  constexpr int kTasks = 1500;  // some 8 pages each: 300 thresholds' worth
  {
    // FULL, as a server runs: each commit waits for its fsync, as a server's would.
    SqliteStore store(file, SyncMode::kFull, {}, kThreshold);
    ASSERT_TRUE(store.checkpoint_stats().has_value());
    for (int i = 0; i < kTasks; ++i)
      store.submit(new_task("t" + std::to_string(i)), nullptr, {}, {});
    // The thread made passes, and the WAL started over rather than holding every commit:
    // within a few more commits it is below the size at which commits catch up (a thread
    // starved of CPU by the other tests may make a while of it, hence more commits).
    int more = 0;
    EXPECT_TRUE(eventually([&] {
      store.submit(new_task("more" + std::to_string(more++)), nullptr, {}, {});
      const auto stats = *store.checkpoint_stats();
      return stats.checkpoints > 0 &&
             stats.wal_pages <
                 static_cast<std::uint64_t>(SqliteCheckpointer::kCatchUpFactor * kThreshold);
    })) << store.checkpoint_stats()->wal_pages
        << " pages in the WAL";
    const auto stats = *store.checkpoint_stats();
    EXPECT_EQ(stats.failures, 0u);
    // The file keeps its largest size: far below every commit's 12,000 pages even when a pass
    // was slow (the first grows the database file) while commits came in.
    EXPECT_LE(wal_bytes(file), 2000 * kFrameBytes + 32);
    // /metrics shows them.
    std::map<std::string, double> metrics;
    for (const auto& m : store.metrics()) metrics[m.name] = m.value;
    EXPECT_GE(metrics["sqlite_checkpoints_total"], 1);
    EXPECT_EQ(metrics.count("sqlite_checkpoint_catch_ups_total"), 1u);
    EXPECT_EQ(metrics["sqlite_checkpoint_failures_total"], 0);
    EXPECT_EQ(metrics.count("sqlite_wal_pages"), 1u);
    EXPECT_EQ(again_count(store), kTasks + more);
  }
  // A clean close copies the rest and removes the WAL: the file alone holds everything.
  EXPECT_FALSE(std::filesystem::exists(file.string() + "-wal"));
  SqliteStore again(file, SyncMode::kNormal);
  EXPECT_GE(again_count(again), kTasks);
  EXPECT_TRUE(again.task("t" + std::to_string(kTasks - 1)).has_value());
}

TEST(SqliteStore, AReaderThatPinsTheWalDelaysCheckpointsButNoCommit) {
  tamma::testing::TempDir dir;
  auto file = dir.path() / "db.sqlite";
  constexpr int kThreshold = 40;
  SqliteStore store(file, SyncMode::kNormal, {}, kThreshold);
  store.submit(new_task("first"), nullptr, {}, {});
  // An admin's shell in the middle of a read: no checkpoint may copy past its snapshot.
  sqlite3* reader = nullptr;
  ASSERT_EQ(::sqlite3_open_v2(file.c_str(), &reader, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  ASSERT_EQ(::sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM tasks;", nullptr, nullptr, nullptr),
            SQLITE_OK);
  for (int i = 0; i < 600; ++i) store.submit(new_task("t" + std::to_string(i)), nullptr, {}, {});
  EXPECT_GT(store.checkpoint_stats()->wal_pages,
            static_cast<std::uint64_t>(SqliteCheckpointer::kHardCapFactor) * kThreshold)
      << "the reader's snapshot keeps every frame after it";
  ASSERT_EQ(::sqlite3_exec(reader, "COMMIT;", nullptr, nullptr, nullptr), SQLITE_OK);
  ::sqlite3_close_v2(reader);
  // Once it is gone, the commits that follow get the WAL copied and started over.
  int more = 0;
  EXPECT_TRUE(eventually([&] {
    store.submit(new_task("after" + std::to_string(more++)), nullptr, {}, {});
    return store.checkpoint_stats()->wal_pages < static_cast<std::uint64_t>(kThreshold);
  })) << store.checkpoint_stats()->wal_pages
      << " pages still in the WAL";
  EXPECT_EQ(store.count_tasks().by_state["queued"], 601 + more);
}

TEST(SqliteStore, WithoutItsOwnThreadCheckpointsAreSqlitesAsBefore) {
  tamma::testing::TempDir dir;
  auto file = dir.path() / "db.sqlite";
  SqliteStore store(file, SyncMode::kNormal, {}, /*checkpoint_pages=*/0);
  EXPECT_FALSE(store.checkpoint_stats().has_value());
  EXPECT_TRUE(store.metrics().empty());
  for (int i = 0; i < 1500; ++i) store.submit(new_task("t" + std::to_string(i)), nullptr, {}, {});
  // SQLite's automatic checkpoint at 1000 pages kept it from holding every commit.
  EXPECT_LE(wal_bytes(file), 1100 * kFrameBytes + 32);
  EXPECT_EQ(store.count_tasks().by_state["queued"], 1500);
}

}  // namespace
}  // namespace tamma::orchestrator::testing
