#include "worker/workspace_reaper.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using tamma::sandbox::Workspace;
using tamma::worker::WorkspaceReaper;

namespace {

// A real workspace with files the "task" wrote in each of its directories.
std::unique_ptr<Workspace> written_workspace(const fs::path& root, const std::string& id) {
  auto workspace = Workspace::create(root, id, std::nullopt);
  for (const char* dir : {"work/a/b", "home/.cache", "tmp/x"}) {
    fs::create_directories(workspace->task_dir() / dir);
    std::FILE* f = std::fopen((workspace->task_dir() / dir / "f").c_str(), "w");
    std::fputs("data", f);
    std::fclose(f);
  }
  return workspace;
}

// Hands `count` written workspaces, task-0 to task-<count - 1>, to the reaper.
void hand_over(WorkspaceReaper& reaper, const fs::path& root, int count) {
  for (int i = 0; i < count; ++i) {
    reaper.add(written_workspace(root, "task-" + std::to_string(i)));
  }
}

std::vector<std::string> entries(const fs::path& root) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename());
  return names;
}

}  // namespace

TEST(WorkspaceReaper, HandedOverWorkspacesAreRemovedLockFilesIncluded) {
  tamma::testing::TempDir root;
  WorkspaceReaper reaper(2);
  hand_over(reaper, root.path(), 5);
  reaper.wait_idle();
  EXPECT_TRUE(entries(root.path()).empty()) << ::testing::PrintToString(entries(root.path()));
}

// A daemon that stops destroys its reaper after its slots: whatever is still queued then is
// removed before the destructor returns, not abandoned.
TEST(WorkspaceReaper, DestroyingTheReaperRemovesWhatIsStillQueued) {
  tamma::testing::TempDir root;
  {
    WorkspaceReaper reaper(8);
    hand_over(reaper, root.path(), 8);
  }
  EXPECT_TRUE(entries(root.path()).empty()) << ::testing::PrintToString(entries(root.path()));
}

// At most max_pending wait: one more is taken only once one of them is gone, so a slow disk
// holds the slots back instead of filling up with finished workspaces.
TEST(WorkspaceReaper, NoMoreThanMaxPendingWaitForRemoval) {
  tamma::testing::TempDir root;
  WorkspaceReaper reaper(1);
  for (int i = 0; i < 20; ++i) {
    reaper.add(written_workspace(root.path(), "task-" + std::to_string(i)));
    // At most the one just handed over is left: every earlier one was removed before add()
    // took this one.
    std::size_t task_dirs = 0;
    for (const auto& name : entries(root.path())) task_dirs += name.front() != '.';
    EXPECT_LE(task_dirs, 1u) << "after add " << i;
  }
  reaper.wait_idle();
  EXPECT_TRUE(entries(root.path()).empty());
}

namespace {

// Holds the reaper's thread in its destructor until released: what a workspace of a million
// files does for seconds, made deterministic.
class SlowToRemove final : public Workspace {
 public:
  SlowToRemove(fs::path dir, std::shared_future<void> released)
      : dir_(std::move(dir)), work_(dir_ / "work"), released_(std::move(released)) {}
  ~SlowToRemove() override { released_.wait(); }
  [[nodiscard]] const fs::path& path() const override { return work_; }
  [[nodiscard]] const fs::path& task_dir() const override { return dir_; }
  [[nodiscard]] tamma::sandbox::DiskUsage usage() const override { return {}; }
  [[nodiscard]] bool full() const override { return false; }
  [[nodiscard]] std::optional<std::uint64_t> limit() const override { return std::nullopt; }
  fs::path keep(const fs::path& dest) override { return dest; }

 private:
  fs::path dir_, work_;
  std::shared_future<void> released_;
};

}  // namespace

// A task that failed and is assigned to the same worker again (its next attempt) makes its
// workspace under the same name: the daemon waits until the old one is gone, whose lock
// would refuse the new one as a task already running.
TEST(WorkspaceReaper, ATaskCanMakeItsWorkspaceAgainOnceTheOldOneIsGone) {
  tamma::testing::TempDir root;
  std::promise<void> release;
  WorkspaceReaper reaper(4);
  reaper.add(std::make_unique<SlowToRemove>(root.path() / "other", release.get_future().share()));
  reaper.add(written_workspace(root.path(), "t1"));

  // Still queued behind the slow one: its lock is held.
  try {
    Workspace::create(root.path(), "t1", std::nullopt);
    ADD_FAILURE() << "made while the old workspace still held its lock";
  } catch (const tamma::Error& e) {
    EXPECT_EQ(e.code(), "task_already_running");
  }
  auto gone = std::async(std::launch::async, [&] { reaper.wait_until_gone("t1"); });
  reaper.wait_until_gone("t2");  // nothing of t2 is queued: returns at once
  release.set_value();
  gone.get();
  EXPECT_FALSE(fs::exists(root.path() / "t1"));
  EXPECT_FALSE(fs::exists(root.path() / ".t1.lock"));
  auto again = Workspace::create(root.path(), "t1", std::nullopt);
  EXPECT_TRUE(fs::is_directory(again->path()));
}

TEST(WorkspaceReaper, NothingHandedOverIsNothingToDo) {
  WorkspaceReaper reaper(1);
  reaper.add(nullptr);
  reaper.wait_idle();
}

// With room for spares (a daemon whose tasks may use one), a finished workspace is emptied
// into a spare instead of removed, up to that many; the rest are removed as before. A spare
// taken is empty; one nobody takes goes with the reaper, lock and all.
TEST(WorkspaceReaper, FinishedWorkspacesBecomeSparesUpToTheirRoom) {
  tamma::testing::TempDir root;
  {
    WorkspaceReaper reaper(2, 1);
    hand_over(reaper, root.path(), 3);
    reaper.wait_idle();
    std::vector<std::string> names = entries(root.path());
    std::sort(names.begin(), names.end());
    ASSERT_EQ(names.size(), 2u) << ::testing::PrintToString(names);
    EXPECT_EQ(names[0].rfind(".spare-", 0), 0u) << "its lock: " << names[0];
    EXPECT_EQ(names[1].rfind("spare-", 0), 0u) << names[1];

    auto spare = reaper.take_spare();
    ASSERT_NE(spare, nullptr);
    EXPECT_EQ(spare->dir(), root.path() / names[1]);
    for (const char* dir : {"work", "home", "tmp", "var-tmp"}) {
      EXPECT_TRUE(fs::is_empty(spare->dir() / dir)) << dir;
    }
    EXPECT_EQ(reaper.take_spare(), nullptr) << "room for one only";
    spare.reset();
    EXPECT_TRUE(entries(root.path()).empty());

    hand_over(reaper, root.path(), 1);
    reaper.wait_idle();
    EXPECT_EQ(entries(root.path()).size(), 2u) << "the shelf has room again";
  }
  EXPECT_TRUE(entries(root.path()).empty()) << ::testing::PrintToString(entries(root.path()));
}
