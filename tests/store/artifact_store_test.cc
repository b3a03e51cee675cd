// Artifact bytes kept by the store (issue 10, docs/adr/0027): put_artifact() takes a staged
// upload in the fenced transaction, open_artifact() gives the bytes back, whole and checked.
// SQLite keeps files under its artifact directory; PostgreSQL keeps chunks in the database,
// read on a thread of their own. Both on real backends (a PostgreSQL cluster of this process).

#include <future>
#include <random>

#include <gtest/gtest.h>

#include "common/error.h"
#include "orchestrator/auth.h"
#include "orchestrator/store/postgres.h"
#include "orchestrator/store/postgres_store.h"
#include "orchestrator/store/sqlite_store.h"
#include "store/store_backends.h"
#include "support/test_support.h"

namespace tamma::orchestrator::testing {
namespace {

constexpr std::size_t kMiB = 1024 * 1024;

class ArtifactStore : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    backend_ = make_store_backend(GetParam());
    store().register_worker("w1", "hash-w1", store_capabilities());
    store().register_worker("w2", "hash-w2", store_capabilities());
  }
  Store& store() { return backend_->store(); }

  // A task submitted and claimed by `worker`: the fence its writes carry.
  wire::Fence running(const std::string& id, const std::string& worker = "w1") {
    store().submit(store_task(id), nullptr, "", std::chrono::minutes(1));
    auto w = store().worker(worker);
    auto claim = store().claim(*w, "lease-" + id, std::chrono::minutes(1));
    EXPECT_TRUE(claim.has_value());
    EXPECT_EQ(claim->assignment.task_id, id);
    return {claim->assignment.attempt, "lease-" + id};
  }

  // Stages `bytes` as the HTTP layer would, and hands them to the store.
  FenceOutcome put(const std::string& task_id, const wire::Fence& fence, const std::string& name,
                   const std::string& bytes, const std::string& worker = "w1") {
    const auto staged = staging_.path() / ("upload-" + std::to_string(++uploads_));
    write_file(staged, bytes);
    wire::ArtifactInfo info{name, fence.attempt, bytes.size(), sha256_hex(bytes)};
    return store().put_artifact(task_id, worker, fence, info, staged);
  }

  std::unique_ptr<StoreBackend> backend_;
  tamma::testing::TempDir staging_;
  int uploads_ = 0;
};

TEST_P(ArtifactStore, BytesPutAreReadBackWholeInPiecesNoLargerThanAChunk) {
  auto fence = running("t1");
  const std::string bytes = random_bytes(3 * kMiB + 12345, 1);
  auto outcome = put("t1", fence, "dist/app.tgz", bytes);
  ASSERT_EQ(outcome.status, FenceStatus::kOk);
  EXPECT_EQ(outcome.state, wire::TaskState::kRunning);

  auto opened = store().open_artifact("t1", fence.attempt, "dist/app.tgz");
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(opened->info.name, "dist/app.tgz");
  EXPECT_EQ(opened->info.attempt, fence.attempt);
  EXPECT_EQ(opened->info.size, bytes.size());
  EXPECT_EQ(opened->info.sha256, sha256_hex(bytes));
  std::size_t largest = 0;
  EXPECT_EQ(read_all(*opened, &largest), bytes);
  EXPECT_LE(largest, kMiB) << "a piece is at most one chunk: no artifact is whole in memory";
  if (GetParam() == "postgres") {
    EXPECT_GT(backend_->count("SELECT count(*) FROM artifact_chunks WHERE task_id = 't1'"), 3);
  }
  // Shown on the task as before.
  auto view = store().task("t1");
  ASSERT_EQ(view->artifacts.size(), 1u);
  EXPECT_EQ(view->artifacts[0].sha256, sha256_hex(bytes));
  EXPECT_FALSE(store().open_artifact("t1", fence.attempt, "other").has_value());
  EXPECT_FALSE(store().open_artifact("t1", fence.attempt + 1, "dist/app.tgz").has_value());
  EXPECT_FALSE(store().open_artifact("nope", 1, "dist/app.tgz").has_value());
}

TEST_P(ArtifactStore, AnEmptyArtifactIsStoredAndReadAsEmpty) {
  auto fence = running("t1");
  ASSERT_EQ(put("t1", fence, "empty.txt", "").status, FenceStatus::kOk);
  auto opened = store().open_artifact("t1", fence.attempt, "empty.txt");
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(opened->info.size, 0u);
  EXPECT_EQ(read_all(*opened), "");
}

TEST_P(ArtifactStore, AReuploadOfTheSameNameAndAttemptReplacesTheBytes) {
  auto fence = running("t1");
  const std::string first = random_bytes(2 * kMiB, 2);
  const std::string second = random_bytes(kMiB / 4 + 7, 3);
  ASSERT_EQ(put("t1", fence, "out.bin", first).status, FenceStatus::kOk);
  ASSERT_EQ(put("t1", fence, "keep.bin", "kept").status, FenceStatus::kOk);
  ASSERT_EQ(put("t1", fence, "out.bin", second).status, FenceStatus::kOk);

  auto opened = store().open_artifact("t1", fence.attempt, "out.bin");
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(opened->info.size, second.size());
  EXPECT_EQ(read_all(*opened), second);
  EXPECT_EQ(read_all(*store().open_artifact("t1", fence.attempt, "keep.bin")), "kept");
  EXPECT_EQ(store().task("t1")->artifacts.size(), 2u);
  // The first upload's bytes (four chunks, or a file) are gone, not left beside the new ones.
  EXPECT_EQ(backend_->stored_units("t1"), 2)
      << "only the bytes of the two recorded artifacts (a chunk or a file each) are stored";
}

TEST_P(ArtifactStore, AStaleOrForeignUploadIsRefusedAndLeavesNothing) {
  auto fence = running("t1");
  const std::string bytes = random_bytes(kMiB + 1, 4);
  auto stale = put("t1", {fence.attempt, "not-the-lease"}, "out.bin", bytes);
  EXPECT_EQ(stale.status, FenceStatus::kLeaseLost);
  auto foreign = put("t1", fence, "out.bin", bytes, "w2");
  EXPECT_EQ(foreign.status, FenceStatus::kForbidden);
  auto missing = put("nope", fence, "out.bin", bytes);
  EXPECT_EQ(missing.status, FenceStatus::kNotFound);
  EXPECT_FALSE(store().open_artifact("t1", fence.attempt, "out.bin").has_value());
  EXPECT_TRUE(store().task("t1")->artifacts.empty());
  EXPECT_EQ(backend_->stored_units("t1"), 0);
  EXPECT_EQ(backend_->stored_units("nope"), 0);

  // Once the task ended, the worker that ran it cannot add to it either.
  wire::CompleteRequest done;
  done.fence = fence;
  done.result = {{"status", "succeeded"}};
  ASSERT_EQ(store().complete("t1", "w1", done).status, FenceStatus::kOk);
  EXPECT_EQ(put("t1", fence, "late.bin", bytes).status, FenceStatus::kLeaseLost);
  EXPECT_EQ(backend_->stored_units("t1"), 0);
}

TEST_P(ArtifactStore, BytesThatNoLongerMatchTheRecordAreDamagedNotServed) {
  auto fence = running("t1");
  const std::string bytes = random_bytes(kMiB + 99, 5);
  ASSERT_EQ(put("t1", fence, "out.bin", bytes).status, FenceStatus::kOk);
  backend_->damage("t1");
  try {
    auto opened = store().open_artifact("t1", fence.attempt, "out.bin");
    ASSERT_TRUE(opened.has_value());
    std::string got = read_all(*opened);
    ADD_FAILURE() << "damaged bytes were served: " << got.size() << " bytes";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "artifact_damaged") << e.what();
    EXPECT_FALSE(e.retryable());
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ArtifactStore, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace tamma::orchestrator::testing
