#include "worker/workspace_reaper.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <string>
#include <vector>

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

std::vector<std::string> entries(const fs::path& root) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename());
  return names;
}

}  // namespace

TEST(WorkspaceReaper, HandedOverWorkspacesAreRemovedLockFilesIncluded) {
  tamma::testing::TempDir root;
  WorkspaceReaper reaper(2);
  for (int i = 0; i < 5; ++i) {
    reaper.add(written_workspace(root.path(), "task-" + std::to_string(i)));
  }
  reaper.wait_idle();
  EXPECT_TRUE(entries(root.path()).empty()) << ::testing::PrintToString(entries(root.path()));
}

// A daemon that stops destroys its reaper after its slots: whatever is still queued then is
// removed before the destructor returns, not abandoned.
TEST(WorkspaceReaper, DestroyingTheReaperRemovesWhatIsStillQueued) {
  tamma::testing::TempDir root;
  {
    WorkspaceReaper reaper(8);
    for (int i = 0; i < 8; ++i) {
      reaper.add(written_workspace(root.path(), "task-" + std::to_string(i)));
    }
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
    // Two at most exist: the one just handed over, and the one made for the next add (none
    // yet). Every earlier one was removed before add() took this one.
    std::size_t task_dirs = 0;
    for (const auto& name : entries(root.path())) task_dirs += name.front() != '.';
    EXPECT_LE(task_dirs, 1u) << "after add " << i;
  }
  reaper.wait_idle();
  EXPECT_TRUE(entries(root.path()).empty());
}

TEST(WorkspaceReaper, NothingHandedOverIsNothingToDo) {
  WorkspaceReaper reaper(1);
  reaper.add(nullptr);
  reaper.wait_idle();
}
