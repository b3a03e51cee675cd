// Retention in both stores (issue 10, docs/adr/0027): prune_finished() removes tasks that ended
// longer ago than the retention with everything hanging off them, keeps every task that is
// running, waiting or recent, keeps the audit trail, and is harmless run twice or by two stores
// at once. "Long ago" is made by moving a task's end back ten days in the database itself
// (the same SQL for both): no test waits for time to pass.

#include <thread>

#include <gtest/gtest.h>

#include "orchestrator/auth.h"
#include "store/store_backends.h"

namespace tamma::orchestrator::testing {
namespace {

constexpr auto kRetention = std::chrono::milliseconds(std::chrono::hours(24));

// "t<i>", appended: `task_id(i)` trips GCC 12's -Wrestrict at -O3.
std::string task_id(int i) {
  std::string id = "t";
  id += std::to_string(i);
  return id;
}
constexpr std::int64_t kTenDaysMs = 10LL * 24 * 3600 * 1000;

class RetentionStore : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    backend_ = make_store_backend(GetParam());
    store().register_worker("w1", "hash-w1", store_capabilities());
  }
  Store& store() { return backend_->store(); }

  wire::Fence claimed(const std::string& id, std::optional<std::string> key = std::nullopt) {
    store().submit(store_task(id, std::move(key)), nullptr, "", std::chrono::minutes(1));
    auto claim = store().claim(*store().worker("w1"), "lease-" + id, std::chrono::minutes(1));
    EXPECT_TRUE(claim.has_value());
    EXPECT_EQ(claim->assignment.task_id, id);
    return {claim->assignment.attempt, "lease-" + id};
  }

  // A task that ran with a log and an artifact and ended as `status` says.
  void finished(const std::string& id, const std::string& status = "succeeded",
                std::optional<std::string> key = std::nullopt) {
    auto fence = claimed(id, std::move(key));
    ASSERT_EQ(store().append_log(id, "w1", fence, 0, "output of " + id, 1 << 20).kind,
              LogAppendOutcome::Kind::kAppended);
    const std::string bytes = random_bytes(600 * 1024, 7);
    const auto staged = staging_.path() / ("upload-" + id);
    write_file(staged, bytes);
    ASSERT_EQ(store()
                  .put_artifact(id, "w1", fence,
                                {"out.bin", fence.attempt, bytes.size(), sha256_hex(bytes)}, staged)
                  .status,
              FenceStatus::kOk);
    if (status == "failed") {
      wire::FailRequest failure;
      failure.fence = fence;
      failure.error = {"boom", "it broke", false};
      ASSERT_EQ(store().fail(id, "w1", failure, RetryPolicy{}).state, wire::TaskState::kFailed);
    } else {
      wire::CompleteRequest done;
      done.fence = fence;
      done.result = {{"status", status}};
      ASSERT_EQ(store().complete(id, "w1", done).status, FenceStatus::kOk);
    }
  }

  // Moves the task's end ten days back, as if it had ended then.
  void age(const std::string& id) {
    backend_->exec("UPDATE tasks SET finished_at = finished_at - " + std::to_string(kTenDaysMs) +
                   " WHERE id = '" + id + "'");
  }

  std::int64_t rows_about(const std::string& id) {
    std::int64_t n = 0;
    for (const char* table : {"attempts", "log_chunks", "artifacts"}) {
      n += backend_->count(std::string("SELECT count(*) FROM ") + table + " WHERE task_id = '" +
                           id + "'");
    }
    return n + backend_->stored_units(id);
  }

  std::unique_ptr<StoreBackend> backend_;
  tamma::testing::TempDir staging_;
};

TEST_P(RetentionStore, OldFinishedTasksGoWithEverythingOfTheirsAndNothingElseDoes) {
  finished("old-ok", "succeeded", "key-old");
  finished("old-failed", "failed");
  finished("old-cancelled", "cancelled");
  store().submit(store_task("old-dropped"), nullptr, "", std::chrono::minutes(1));
  ASSERT_EQ(store().cancel("old-dropped")->state, wire::TaskState::kCancelled);
  finished("recent");
  claimed("running");
  store().submit(store_task("queued"), nullptr, "", std::chrono::minutes(1));
  for (const char* id : {"old-ok", "old-failed", "old-cancelled", "old-dropped"}) age(id);
  // Tasks that have not ended are kept however old they are.
  backend_->exec("UPDATE tasks SET created_at = created_at - " + std::to_string(kTenDaysMs) +
                 ", updated_at = updated_at - " + std::to_string(kTenDaysMs) +
                 " WHERE id IN ('running', 'queued')");
  ASSERT_GT(rows_about("old-ok"), 0);
  AuditQuery about_old;
  about_old.task_id = "old-ok";
  const auto audit_before = store().audit(about_old);
  ASSERT_FALSE(audit_before.empty());

  auto pruned = store().prune_finished(kRetention, 100, 10);
  EXPECT_EQ(pruned.tasks, 4);
  EXPECT_FALSE(pruned.more);
  for (const char* id : {"old-ok", "old-failed", "old-cancelled", "old-dropped"}) {
    EXPECT_FALSE(store().task(id).has_value()) << id;
    EXPECT_FALSE(store().read_log(id, std::nullopt, 0, 100).has_value()) << id;
    EXPECT_FALSE(store().open_artifact(id, 1, "out.bin").has_value()) << id;
    EXPECT_EQ(rows_about(id), 0) << id << ": attempts, logs, artifacts or their bytes are left";
  }
  for (const char* id : {"recent", "running", "queued"}) {
    EXPECT_TRUE(store().task(id).has_value()) << id;
  }
  EXPECT_EQ(read_all(*store().open_artifact("recent", 1, "out.bin")).size(), 600u * 1024);
  EXPECT_EQ(store().read_log("recent", std::nullopt, 0, 100)->data, "output of recent");
  // The idempotency key went with its task: it names a new one now.
  auto again = store().submit(store_task("new", "key-old"), nullptr, "", std::chrono::minutes(1));
  EXPECT_TRUE(again.created);
  EXPECT_EQ(again.task.id, "new");
  // The audit trail is append-only and outlives what it tells of.
  EXPECT_EQ(store().audit(about_old).size(), audit_before.size());
  // The running task still takes its worker's writes.
  EXPECT_EQ(store().progress("running", "w1", {{1, "lease-running"}, 50.0, {}, {}}).status,
            FenceStatus::kOk);
}

TEST_P(RetentionStore, ARecentlyFinishedTaskStaysUntilItIsOlderThanTheRetention) {
  finished("t1");
  EXPECT_EQ(store().prune_finished(kRetention, 100, 10).tasks, 0);
  EXPECT_TRUE(store().task("t1").has_value());
  age("t1");
  EXPECT_EQ(store().prune_finished(std::chrono::hours(24 * 20), 100, 10).tasks, 0)
      << "ten days old is within a retention of twenty";
  EXPECT_EQ(store().prune_finished(kRetention, 100, 10).tasks, 1);
  EXPECT_FALSE(store().task("t1").has_value());
}

TEST_P(RetentionStore, ABacklogGoesInBoundedBatchesAndSaysWhenMoreIsLeft) {
  for (int i = 0; i < 5; ++i) {
    const std::string id = task_id(i);
    finished(id);
    age(id);
  }
  auto first = store().prune_finished(kRetention, 2, 1);
  EXPECT_EQ(first.tasks, 2);
  EXPECT_TRUE(first.more);
  auto rest = store().prune_finished(kRetention, 2, 10);
  EXPECT_EQ(rest.tasks, 3);
  EXPECT_FALSE(rest.more);
  EXPECT_TRUE(store().list_tasks(std::nullopt, 100).empty());
}

TEST_P(RetentionStore, PruningTwiceOrFromTwoStoresAtOnceRemovesEachTaskOnce) {
  constexpr int kTasks = 24;
  for (int i = 0; i < kTasks; ++i) {
    const std::string id = task_id(i);
    finished(id);
    age(id);
  }
  finished("recent");
  auto other = backend_->another_store();
  PruneOutcome mine;
  PruneOutcome theirs;
  std::thread racer([&] { theirs = other->prune_finished(kRetention, 3, 100); });
  mine = store().prune_finished(kRetention, 3, 100);
  racer.join();
  EXPECT_EQ(mine.tasks + theirs.tasks, kTasks);
  EXPECT_FALSE(mine.more);
  EXPECT_FALSE(theirs.more);
  auto left = store().list_tasks(std::nullopt, 100);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].id, "recent");
  for (int i = 0; i < kTasks; ++i) EXPECT_EQ(rows_about(task_id(i)), 0);
  // Again: nothing left to do, nothing else touched.
  auto twice = store().prune_finished(kRetention, 3, 100);
  EXPECT_EQ(twice.tasks, 0);
  EXPECT_EQ(twice.workers, 0);
  EXPECT_TRUE(store().task("recent").has_value());
}

TEST_P(RetentionStore, LongGoneWorkersGoOnceNoTaskNamesThem) {
  // w1 ran "recent"; w-old ran only "old"; w-idle never ran anything; w-new is simply new.
  finished("recent");
  store().register_worker("w-old", "hash-w-old", store_capabilities());
  store().submit(store_task("old"), nullptr, "", std::chrono::minutes(1));
  auto claim = store().claim(*store().worker("w-old"), "lease-old", std::chrono::minutes(1));
  ASSERT_TRUE(claim.has_value());
  wire::CompleteRequest done;
  done.fence = {claim->assignment.attempt, "lease-old"};
  done.result = {{"status", "succeeded"}};
  ASSERT_EQ(store().complete("old", "w-old", done).status, FenceStatus::kOk);
  store().unregister_worker("w-old");
  store().register_worker("w-idle", "hash-w-idle", store_capabilities());
  store().register_worker("w-new", "hash-w-new", store_capabilities());
  age("old");
  const std::string ten_days = std::to_string(kTenDaysMs);
  backend_->exec("UPDATE workers SET last_seen_at = last_seen_at - " + ten_days +
                 ", gone_at = gone_at - " + ten_days + " WHERE id IN ('w-old', 'w-idle', 'w1')");

  auto pruned = store().prune_finished(kRetention, 100, 10);
  EXPECT_EQ(pruned.tasks, 1);
  EXPECT_EQ(pruned.workers, 2) << "w-old (its task went first) and w-idle";
  EXPECT_FALSE(store().worker("w-old").has_value());
  EXPECT_FALSE(store().worker("w-idle").has_value());
  EXPECT_TRUE(store().worker("w1").has_value()) << "silent, but a kept task names it";
  EXPECT_TRUE(store().worker("w-new").has_value());
  EXPECT_FALSE(store().worker_by_token_hash("hash-w-idle").has_value());
}

INSTANTIATE_TEST_SUITE_P(Backends, RetentionStore, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace tamma::orchestrator::testing
