// Real directories, real ext4 images on real loop devices; every test checks that nothing is
// left mounted, attached or on disk.

#include "sandbox/workspace.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/unique_fd.h"
#include "sandbox/cgroup_internal.h"
#include "support/test_support.h"

namespace tamma::sandbox {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::uint64_t kMiB = 1ull << 20;

std::optional<cgroup_internal::MountInfo> mount_at(const fs::path& point) {
  for (const auto& mount :
       cgroup_internal::parse_mountinfo(cgroup_internal::read_file("/proc/self/mountinfo"))) {
    if (fs::path(mount.mount_point) == point) return mount;
  }
  return std::nullopt;
}

bool mounted_under(const fs::path& dir) {
  for (const auto& mount :
       cgroup_internal::parse_mountinfo(cgroup_internal::read_file("/proc/self/mountinfo"))) {
    if (mount.mount_point.starts_with(dir.string())) return true;
  }
  return false;
}

// A loop device is attached while its sysfs directory has a backing file.
bool loop_attached(const std::string& device) {
  const std::string name = fs::path(device).filename().string();
  return fs::exists("/sys/block/" + name + "/loop/backing_file");
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Writes until the kernel refuses; returns the errno of the refusal (0 if none).
int fill_file(const fs::path& file, std::uint64_t bytes, std::uint64_t* written) {
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return errno;
  const std::string chunk(1 << 16, 'x');
  *written = 0;
  while (*written < bytes) {
    const ssize_t n = ::write(fd.get(), chunk.data(), chunk.size());
    if (n < 0) return errno;
    *written += static_cast<std::uint64_t>(n);
  }
  // Delayed allocation may only find out at writeback.
  if (::fsync(fd.get()) != 0) return errno;
  return 0;
}

bool mkfs_available() {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    if (::access((std::string(dir) + "/mkfs.ext4").c_str(), X_OK) == 0) return true;
  }
  return false;
}

// Why this host cannot make disk-limited workspaces, or empty if it can. A test skips with it
// in its own body: GTEST_SKIP in a helper would return from the helper only, and the test
// would go on and fail.
std::string images_unavailable() {
  if (!mkfs_available()) return "no mkfs.ext4 (e2fsprogs): disk limits not exercised";
  if (!fs::exists("/dev/loop-control")) return "no /dev/loop-control: disk limits not exercised";
  return {};
}

#define SKIP_WITHOUT_IMAGES()                                       \
  if (const std::string why = images_unavailable(); !why.empty()) { \
    GTEST_SKIP() << why;                                            \
  }

class WorkspaceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    EXPECT_FALSE(mounted_under(root_.path())) << "something is still mounted";
    std::error_code ec;
    std::vector<std::string> left;
    for (const auto& entry : fs::directory_iterator(root_.path(), ec)) {
      left.push_back(entry.path().string());  // workspaces, images and lock files alike
    }
    EXPECT_TRUE(left.empty()) << "left on disk: " << (left.empty() ? "" : left.front());
  }

  testing::TempDir root_;
};

// The task's filesystem holds the workspace, HOME and the two temporary directories, with
// the modes the task relies on, and nothing else.
void expect_task_layout(const Workspace& workspace, const fs::path& task_dir) {
  EXPECT_EQ(workspace.task_dir(), task_dir);
  EXPECT_EQ(workspace.path(), task_dir / "work");
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(task_dir)) {
    // A disk-limited image holds the ballast that takes the room beyond the limit at its root,
    // which the sandbox never shows to the task.
    if (workspace.limit() && entry.path().filename() == ".tamma-ballast") continue;
    names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"home", "tmp", "var-tmp", "work"}));
  for (const auto& [name, mode] : {std::pair{"", 0755u},
                                   {"work", 0755u},
                                   {"home", 0755u},
                                   {"tmp", 01777u},
                                   {"var-tmp", 01777u}}) {
    struct stat st {};
    ASSERT_EQ(::lstat((task_dir / name).c_str(), &st), 0) << name;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << name;
    EXPECT_EQ(st.st_mode & 07777, mode) << name;
    EXPECT_EQ(st.st_uid, 0u) << name;
    if (*name != '\0') {
      EXPECT_TRUE(fs::is_empty(task_dir / name)) << name;
    }
  }
}

TEST_F(WorkspaceTest, PlainDirectoryIsCreatedEmptyAndRemoved) {
  fs::path path;
  {
    auto workspace = Workspace::create(root_.path(), "task-1", std::nullopt);
    path = workspace->path();
    expect_task_layout(*workspace, root_.path() / "task-1");
    EXPECT_FALSE(workspace->limit());
    const DiskUsage empty = workspace->usage();
    EXPECT_EQ(empty.bytes, 0u);
    EXPECT_EQ(empty.inodes, 0u);
    EXPECT_FALSE(empty.full);

    fs::create_directory(path / "sub");
    testing::write_file(path / "sub" / "a", std::string(100'000, 'a'));
    testing::write_file(path / "b", std::string(10'000, 'b'));
    fs::create_hard_link(path / "b", path / "b-again");  // one inode, counted once
    fs::create_symlink("/usr", path / "usr");            // not followed
    // A sparse file counts what it occupies, not its apparent size.
    UniqueFd sparse(::open((path / "sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_EQ(::ftruncate(sparse.get(), 1 << 30), 0);
    sparse.reset();

    std::uint64_t expected_bytes = 0;
    for (const char* name : {"sub", "sub/a", "b", "usr", "sparse"}) {
      struct stat entry {};
      ASSERT_EQ(::lstat((path / name).c_str(), &entry), 0) << name;
      expected_bytes += static_cast<std::uint64_t>(entry.st_blocks) * 512;
    }
    const DiskUsage usage = workspace->usage();
    EXPECT_EQ(usage.bytes, expected_bytes);
    EXPECT_GE(usage.bytes, 110'000u);
    EXPECT_LT(usage.bytes, 1'000'000u);
    EXPECT_EQ(usage.inodes, 5u);
    EXPECT_FALSE(usage.full);
    EXPECT_FALSE(workspace->full());  // no limit, nothing to reach

    // What tools leave in HOME and the temporary directories is the task's too; a hard link
    // between them still counts once.
    const fs::path task_dir = workspace->task_dir();
    fs::create_directory(task_dir / "home" / ".cache");
    testing::write_file(task_dir / "home" / ".cache" / "c", std::string(50'000, 'c'));
    testing::write_file(task_dir / "tmp" / "t", std::string(20'000, 't'));
    fs::create_hard_link(task_dir / "tmp" / "t", task_dir / "var-tmp" / "t-again");
    std::uint64_t more_bytes = 0;
    for (const char* name : {"home/.cache", "home/.cache/c", "tmp/t"}) {
      struct stat entry {};
      ASSERT_EQ(::lstat((task_dir / name).c_str(), &entry), 0) << name;
      more_bytes += static_cast<std::uint64_t>(entry.st_blocks) * 512;
    }
    const DiskUsage all = workspace->usage();
    EXPECT_EQ(all.bytes, expected_bytes + more_bytes);
    EXPECT_EQ(all.inodes, 8u);
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(root_.path() / "task-1"));
  EXPECT_TRUE(fs::exists("/usr/bin")) << "removal followed the symlink";
}

TEST_F(WorkspaceTest, RemovalNeitherFollowsSymlinksNorCrossesMounts) {
  testing::TempDir outside;
  testing::write_file(outside.path() / "precious", "keep me");
  fs::path path;
  {
    auto workspace = Workspace::create(root_.path(), "task-2", std::nullopt);
    path = workspace->path();
    fs::create_directory_symlink(outside.path(), path / "link");
    fs::create_directory(path / "bound");
    // A bind mount left inside (as a sandbox whose namespace was not private might leave):
    // destruction unmounts it, and must not delete through it either way.
    ASSERT_EQ(::mount(outside.path().c_str(), (path / "bound").c_str(), nullptr, MS_BIND, nullptr),
              0)
        << std::strerror(errno);
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(testing::read_file(outside.path() / "precious"), "keep me");
}

TEST_F(WorkspaceTest, DeepTreeIsRemovedWithBoundedDescriptors) {
  fs::path path;
  {
    auto workspace = Workspace::create(root_.path(), "deep", std::nullopt);
    path = workspace->path();
    UniqueFd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    for (int depth = 0; depth < 300; ++depth) {
      ASSERT_EQ(::mkdirat(dir.get(), "d", 0755), 0);
      UniqueFd next(::openat(dir.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      ASSERT_TRUE(next);
      if (depth % 50 == 0) {
        UniqueFd file(::openat(next.get(), "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
        ASSERT_TRUE(file);
      }
      dir = std::move(next);
    }
    // The walk stops at its depth bound rather than holding 300 descriptors.
    EXPECT_GE(workspace->usage().inodes, 64u);
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(WorkspaceTest, LeftoverOfTheSameTaskIsReplaced) {
  fs::create_directories(root_.path() / "again" / "old");
  testing::write_file(root_.path() / "again" / "old" / "file", "stale");
  auto workspace = Workspace::create(root_.path(), "again", std::nullopt);
  expect_task_layout(*workspace, root_.path() / "again");
}

TEST_F(WorkspaceTest, LeftoversOfADeadWorkerAreSweptButLiveWorkspacesKept) {
  // A crashed worker's workspace: a directory whose lock nobody holds, and one with no lock.
  fs::create_directories(root_.path() / "crashed" / "deep");
  testing::write_file(root_.path() / "crashed" / "deep" / "f", "x");
  testing::write_file(root_.path() / ".crashed.lock", "");
  testing::write_file(root_.path() / ".crashed.img", "image");
  fs::create_directories(root_.path() / "unlocked");
  testing::write_file(root_.path() / ".orphan.img", "image of a removed workspace");
  auto live = Workspace::create(root_.path(), "live", std::nullopt);
  testing::write_file(live->path() / "work", "in progress");

  EXPECT_EQ(Workspace::remove_stale(root_.path()), 2u);
  EXPECT_FALSE(fs::exists(root_.path() / "crashed"));
  EXPECT_FALSE(fs::exists(root_.path() / ".crashed.lock"));
  EXPECT_FALSE(fs::exists(root_.path() / ".crashed.img"));
  EXPECT_FALSE(fs::exists(root_.path() / "unlocked"));
  EXPECT_FALSE(fs::exists(root_.path() / ".orphan.img"));
  EXPECT_TRUE(fs::exists(live->path() / "work")) << "a live workspace was swept";
  EXPECT_TRUE(fs::exists(root_.path() / ".live.lock"));
}

// The names in `root`, sorted.
std::vector<std::string> names_in(const fs::path& root) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

ino_t inode_of(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

// A spare made while a slot is idle is the next task's filesystem: the same directories,
// renamed into place (not made again), with the layout and modes of a fresh one, and nothing
// of the spare left beside it.
TEST_F(WorkspaceTest, ASpareBecomesTheWorkspaceOfTheNextTask) {
  auto spare = SpareWorkspace::make(root_.path());
  const fs::path spare_dir = spare->dir();
  EXPECT_EQ(spare_dir.parent_path(), root_.path());
  const std::string name = spare_dir.filename();
  EXPECT_EQ(names_in(root_.path()), (std::vector<std::string>{"." + name + ".lock", name}));
  const ino_t work = inode_of(spare_dir / "work");

  auto workspace = Workspace::create(root_.path(), "task-next", std::nullopt, std::move(spare));
  expect_task_layout(*workspace, root_.path() / "task-next");
  EXPECT_EQ(inode_of(workspace->path()), work) << "made again rather than taken";
  EXPECT_EQ(names_in(root_.path()), (std::vector<std::string>{".task-next.lock", "task-next"}));
  // Removed as any workspace, and its lock with it (the fixture checks the root is empty).
}

// A spare that cannot be the workspace (another root, or a disk limit) is removed, lock and
// all, and the task gets a fresh workspace; one nobody takes is removed with its owner.
TEST_F(WorkspaceTest, ASpareThatCannotBeUsedIsRemovedAndTheTaskGetsAFreshWorkspace) {
  const fs::path other = root_.path() / "other-root";
  auto spare = SpareWorkspace::make(other);
  const fs::path spare_dir = spare->dir();
  auto workspace = Workspace::create(root_.path(), "task-fresh", std::nullopt, std::move(spare));
  expect_task_layout(*workspace, root_.path() / "task-fresh");
  EXPECT_TRUE(fs::is_empty(other)) << "the unused spare was left: " << spare_dir;

  { auto unused = SpareWorkspace::make(other); }
  EXPECT_TRUE(fs::is_empty(other));
  fs::remove(other);
}

// Spares are held like workspaces: a live worker's survives the sweep of another worker, a
// dead one's is swept.
TEST_F(WorkspaceTest, ASpareOfADeadWorkerIsSweptAndALiveOneKept) {
  auto live = SpareWorkspace::make(root_.path());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Dies holding it, as a killed worker would: no destructor runs.
    auto dying = SpareWorkspace::make(root_.path());
    (void)dying.release();
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(names_in(root_.path()).size(), 4u) << "two spares, each with its lock";

  EXPECT_EQ(Workspace::remove_stale(root_.path()), 1u);
  const std::string name = live->dir().filename();
  EXPECT_EQ(names_in(root_.path()), (std::vector<std::string>{"." + name + ".lock", name}));
}

// What a task can leave on its directories besides files, set the way a task would.
void set_acl(const fs::path& dir) {
  // A POSIX ACL as the kernel stores it: version 2, then (tag, perm, id) entries; user 4242 r.
  struct Entry {
    std::uint16_t tag, perm;
    std::uint32_t id;
  };
  const std::uint32_t version = 2;
  const Entry entries[] = {
      {0x01, 7, ~0u}, {0x02, 4, 4242}, {0x04, 5, ~0u}, {0x10, 5, ~0u}, {0x20, 5, ~0u}};
  std::string blob(reinterpret_cast<const char*>(&version), sizeof version);
  blob.append(reinterpret_cast<const char*>(entries), sizeof entries);
  ASSERT_EQ(::setxattr(dir.c_str(), "system.posix_acl_access", blob.data(), blob.size(), 0), 0)
      << dir << ": " << std::strerror(errno);
}

std::vector<std::string> xattrs_of(const fs::path& path) {
  char buffer[4096];
  const ssize_t n = ::llistxattr(path.c_str(), buffer, sizeof buffer);
  std::vector<std::string> names;
  for (ssize_t at = 0; n > 0 && at < n; at += static_cast<ssize_t>(names.back().size()) + 1) {
    names.emplace_back(buffer + at);
  }
  return names;
}

int inode_flags(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  int flags = 0;
  EXPECT_EQ(::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags), 0) << dir << ": " << std::strerror(errno);
  return flags;
}

void write_file(const fs::path& file, const std::string& text) {
  std::FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr) << file;
  std::fputs(text.c_str(), f);
  std::fclose(f);
}

// A finished task's filesystem becomes the next spare (ADR 0038): everything the task wrote
// is gone, links followed nowhere, and each directory is again what a fresh one is (owner,
// mode, no ACL or other extended attribute, new times), though it is the same inode. The
// spare is held like one made fresh, and the next task gets it.
TEST_F(WorkspaceTest, AFinishedWorkspaceIsEmptiedIntoASpareAsFreshAsANewOne) {
  testing::TempDir outside;
  write_file(outside.path() / "secret", "keep me");
  const auto started = std::chrono::system_clock::now();
  auto workspace = Workspace::create(root_.path(), "task-done", std::nullopt);
  const fs::path task_dir = workspace->task_dir();
  const ino_t work_inode = inode_of(task_dir / "work");
  for (const char* dir : {"work/src/deep/er", "home/.cache/x", "tmp/t", "var-tmp/v"}) {
    fs::create_directories(task_dir / dir);
    write_file(task_dir / dir / "f", "the task's");
  }
  fs::create_symlink(outside.path(), task_dir / "work" / "link-out");
  fs::create_symlink(outside.path() / "secret", task_dir / "home" / "secret-link");
  fs::create_hard_link(outside.path() / "secret", task_dir / "tmp" / "hard");
  ::mkfifo((task_dir / "var-tmp" / "fifo").c_str(), 0600);
  set_acl(task_dir / "home");
  const bool user_xattrs =
      ::setxattr((task_dir / "work").c_str(), "user.tamma.test", "v", 1, 0) == 0;
  if (!user_xattrs) std::fprintf(stderr, "NOTE: user.* xattrs unsupported here, not exercised\n");
  fs::permissions(task_dir / "work", fs::perms::owner_all);  // 0700
  fs::permissions(task_dir / "tmp", fs::perms::owner_all | fs::perms::sticky_bit);
  const struct timespec old_times[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (task_dir / "var-tmp").c_str(), old_times, 0), 0);

  auto spare = SpareWorkspace::recycle(std::move(workspace));
  ASSERT_NE(spare, nullptr) << "not reused (the debug log says why)";
  const fs::path dir = spare->dir();
  const std::string name = dir.filename();
  EXPECT_EQ(name.rfind("spare-", 0), 0u) << name;
  EXPECT_EQ(names_in(root_.path()), (std::vector<std::string>{"." + name + ".lock", name}))
      << "the task's directory and lock are gone, the spare's lock is there";
  EXPECT_EQ(std::string(testing::read_file(outside.path() / "secret")), "keep me");
  for (const auto& [sub, mode] : {std::pair{"work", 0755u}, std::pair{"home", 0755u},
                                  std::pair{"tmp", 01777u}, std::pair{"var-tmp", 01777u}}) {
    SCOPED_TRACE(sub);
    struct stat st {};
    ASSERT_EQ(::lstat((dir / sub).c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, mode);
    EXPECT_EQ(st.st_uid, ::geteuid());
    EXPECT_EQ(st.st_gid, ::getegid());
    EXPECT_TRUE(fs::is_empty(dir / sub));
    EXPECT_EQ(xattrs_of(dir / sub), std::vector<std::string>{}) << "an ACL or xattr survived";
    EXPECT_GE(std::chrono::system_clock::from_time_t(st.st_mtim.tv_sec),
              std::chrono::time_point_cast<std::chrono::seconds>(started));
  }
  // A live worker's spare survives another worker's sweep.
  EXPECT_EQ(Workspace::remove_stale(root_.path()), 0u);

  auto next = Workspace::create(root_.path(), "task-next", std::nullopt, std::move(spare));
  expect_task_layout(*next, root_.path() / "task-next");
  EXPECT_EQ(inode_of(next->path()), work_inode) << "made again rather than reused";
  EXPECT_EQ(next->usage().inodes, 0u) << "the next task starts with nothing";
}

// What emptying does not undo makes the workspace go as any other (removed, lock and all) and
// no spare come of it: an inode flag the task set (chattr), an entry beside the four
// directories, a directory grown large (ext4 never shrinks one), a workspace kept for a look.
TEST_F(WorkspaceTest, AWorkspaceChangedBeyondItsFilesIsRemovedNotReused) {
  {
    auto workspace = Workspace::create(root_.path(), "task-chattr", std::nullopt);
    const fs::path work = workspace->path();
    UniqueFd fd(::open(work.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    int flags = inode_flags(work) | FS_NODUMP_FL;
    ASSERT_EQ(::ioctl(fd.get(), FS_IOC_SETFLAGS, &flags), 0) << std::strerror(errno);
    fd.reset();
    EXPECT_EQ(SpareWorkspace::recycle(std::move(workspace)), nullptr) << "chattr +d survived";
    EXPECT_EQ(names_in(root_.path()), std::vector<std::string>{});
  }
  {
    auto workspace = Workspace::create(root_.path(), "task-extra", std::nullopt);
    write_file(workspace->task_dir() / "extra", "beside the four");
    EXPECT_EQ(SpareWorkspace::recycle(std::move(workspace)), nullptr);
    EXPECT_EQ(names_in(root_.path()), std::vector<std::string>{});
  }
  {
    testing::TempDir keep_in;
    auto workspace = Workspace::create(root_.path(), "task-kept", std::nullopt);
    write_file(workspace->path() / "evidence", "for a look");
    workspace->keep(keep_in.path() / "kept");
    EXPECT_EQ(SpareWorkspace::recycle(std::move(workspace)), nullptr);
    EXPECT_EQ(names_in(root_.path()), std::vector<std::string>{});
    EXPECT_TRUE(fs::exists(keep_in.path() / "kept" / "work" / "evidence")) << "kept is kept";
    fs::remove_all(keep_in.path() / "kept");
  }
  struct statfs sfs {};
  ASSERT_EQ(::statfs(root_.path().c_str(), &sfs), 0);
  constexpr long kExt4Magic = 0xEF53;
  if (sfs.f_type != kExt4Magic) {
    GTEST_SKIP() << "the workspace root is not ext4 (f_type " << std::hex << sfs.f_type
                 << "): a directory that grew large is not exercised";
  }
  auto workspace = Workspace::create(root_.path(), "task-grown", std::nullopt);
  for (int i = 0; i < 400; ++i) {
    write_file(workspace->task_dir() / "tmp" / ("a-rather-long-file-name-" + std::to_string(i)),
               "");
  }
  EXPECT_EQ(SpareWorkspace::recycle(std::move(workspace)), nullptr) << "a grown tmp/ survived";
  EXPECT_EQ(names_in(root_.path()), std::vector<std::string>{});
}

// A disk-limited workspace is an image of its task's size: never a spare, removed as ever.
TEST_F(WorkspaceTest, ADiskLimitedWorkspaceIsNeverASpare) {
  SKIP_WITHOUT_IMAGES();
  auto workspace = Workspace::create(root_.path(), "task-image", 8 * kMiB);
  EXPECT_EQ(SpareWorkspace::recycle(std::move(workspace)), nullptr);
  EXPECT_EQ(names_in(root_.path()), std::vector<std::string>{});
}

TEST_F(WorkspaceTest, ASecondWorkspaceForARunningTaskIsRefused) {
  auto first = Workspace::create(root_.path(), "same", std::nullopt);
  try {
    Workspace::create(root_.path(), "same", std::nullopt);
    ADD_FAILURE() << "two live workspaces for one task id";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "task_already_running");
    EXPECT_EQ(std::string(e.what()).find(root_.path().string()), std::string::npos)
        << "the error, sent to the orchestrator, names a path of the worker's host: " << e.what();
  }
  EXPECT_TRUE(fs::exists(first->path()));
}

TEST_F(WorkspaceTest, BadRequestsAreRefused) {
  for (const char* id : {"", ".", "..", ".hidden", "a/b"}) {
    try {
      Workspace::create(root_.path(), id, std::nullopt);
      ADD_FAILURE() << "task id '" << id << "' accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kConfig) << id;
    }
  }
  try {
    Workspace::create(root_.path(), "tiny", 4096);
    ADD_FAILURE() << "a 4 KiB disk limit was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig);
  }
}

TEST_F(WorkspaceTest, DiskLimitAnswersEnospcForBytes) {
  SKIP_WITHOUT_IMAGES();
  fs::path path, image;
  std::string device;
  {
    auto workspace = Workspace::create(root_.path(), "disk", 16 * kMiB);
    // The image holds the whole task filesystem; the workspace is a directory in it.
    path = workspace->task_dir();
    image = root_.path() / ".disk.img";
    EXPECT_EQ(workspace->limit(), 16 * kMiB);
    EXPECT_TRUE(fs::exists(image));
    // Larger than the limit: mkfs takes its share, and the limit + 2 MiB must be left.
    EXPECT_GT(fs::file_size(image), 18 * kMiB);
    EXPECT_FALSE(mount_at(workspace->path()));
    const auto mount = mount_at(path);
    ASSERT_TRUE(mount) << path << " is not a mount point";
    EXPECT_EQ(mount->fstype, "ext4");
    device = mount->source;
    EXPECT_TRUE(device.starts_with("/dev/loop")) << device;
    EXPECT_TRUE(loop_attached(device));
    // nosuid and nodev are per-mount options: the 6th field of mountinfo.
    const auto text = cgroup_internal::read_file("/proc/self/mountinfo");
    std::string needle = " ";  // appended, not `" " + ...`: GCC 12 -Wrestrict at -O3
    needle += path.string();
    needle += ' ';
    const auto line_start = text.find(needle);
    ASSERT_NE(line_start, std::string::npos);
    const auto line = text.substr(line_start, text.find('\n', line_start) - line_start);
    EXPECT_NE(line.find("nosuid"), std::string::npos) << line;
    EXPECT_NE(line.find("nodev"), std::string::npos) << line;
    expect_task_layout(*workspace, path);
    const DiskUsage empty = workspace->usage();
    EXPECT_EQ(empty.bytes, 0u);
    EXPECT_EQ(empty.inodes, 0u);
    EXPECT_FALSE(empty.full);
    EXPECT_FALSE(workspace->full());

    std::uint64_t written = 0;
    EXPECT_EQ(fill_file(workspace->path() / "big", 32 * kMiB, &written), ENOSPC);
    std::printf("a 16 MiB limit took %.2f MiB before ENOSPC\n",
                static_cast<double>(written) / kMiB);
    // The kernel refuses only past the limit, and at most 2 MiB (one large folio) past it.
    EXPECT_GE(written, 16 * kMiB);
    EXPECT_LE(written, 18 * kMiB);
    const DiskUsage usage = workspace->usage();
    EXPECT_TRUE(usage.full);
    EXPECT_TRUE(workspace->full());  // what the engine asks after each step
    EXPECT_GE(usage.bytes, written);
    EXPECT_LE(usage.bytes, 18 * kMiB + 64 * 1024);
    EXPECT_EQ(usage.inodes, 1u);
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(image));
  EXPECT_FALSE(mount_at(path));
  EXPECT_TRUE(wait_until([&] { return !loop_attached(device); }, 2s)) << device << " attached";
}

// HOME and the temporary directories live on the image too: a task filling /tmp has no
// room left for its caches or its checkout, and the usage says so.
TEST_F(WorkspaceTest, HomeAndTmpShareTheDiskLimitWithTheWorkspace) {
  SKIP_WITHOUT_IMAGES();
  auto workspace = Workspace::create(root_.path(), "shared", 16 * kMiB);
  const fs::path task_dir = workspace->task_dir();
  std::uint64_t in_tmp = 0, in_home = 0, in_work = 0;
  EXPECT_EQ(fill_file(task_dir / "tmp" / "big", 32 * kMiB, &in_tmp), ENOSPC);
  EXPECT_GT(in_tmp, 14 * kMiB);
  EXPECT_EQ(fill_file(task_dir / "home" / "cache", kMiB, &in_home), ENOSPC);
  EXPECT_EQ(fill_file(workspace->path() / "source", kMiB, &in_work), ENOSPC);
  const DiskUsage usage = workspace->usage();
  EXPECT_TRUE(usage.full);
  EXPECT_GE(usage.bytes, in_tmp);
  EXPECT_EQ(usage.inodes, 3u);
}

TEST_F(WorkspaceTest, DiskLimitAnswersEnospcForInodes) {
  SKIP_WITHOUT_IMAGES();
  auto workspace = Workspace::create(root_.path(), "inodes", 16 * kMiB);
  const int dir = ::open(workspace->path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0);
  int created = 0, err = 0;
  for (; created < 1'000'000; ++created) {
    const std::string name = std::to_string(created);
    const int fd = ::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      err = errno;
      break;
    }
    ::close(fd);
  }
  ::close(dir);
  EXPECT_EQ(err, ENOSPC);
  const DiskUsage usage = workspace->usage();
  std::printf("16 MiB image: %d empty files before ENOSPC\n", created);
  EXPECT_TRUE(usage.full);
  EXPECT_TRUE(workspace->full());
  EXPECT_EQ(usage.inodes, static_cast<std::uint64_t>(created));
  // Space was not the limit: empty files take no blocks.
  EXPECT_LT(usage.bytes, 8 * kMiB);
}

TEST_F(WorkspaceTest, BusyImageIsDetachedLazilyAndReleasedLater) {
  SKIP_WITHOUT_IMAGES();
  fs::path path;
  std::string device;
  pid_t holder = 0;
  {
    auto workspace = Workspace::create(root_.path(), "busy", 16 * kMiB);
    path = workspace->task_dir();
    device = mount_at(path)->source;
    holder = ::fork();
    if (holder == 0) {
      if (::chdir(path.c_str()) != 0) ::_exit(1);
      for (;;) ::pause();
    }
    ASSERT_TRUE(wait_until(
        [&] { return fs::read_symlink("/proc/" + std::to_string(holder) + "/cwd") == path; }, 5s));
  }
  EXPECT_FALSE(mount_at(path)) << "still mounted while busy";
  EXPECT_FALSE(fs::exists(path));
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  EXPECT_TRUE(wait_until([&] { return !loop_attached(device); }, 5s))
      << device << " stayed attached after its last user went";
}

// What an image workspace costs. The times are printed, never asserted (a loaded machine or
// a VM under TCG is slower, and that is no defect); what would make them grossly worse is
// asserted instead: mkfs writing the whole image rather than its metadata.
TEST_F(WorkspaceTest, ImageCost) {
  SKIP_WITHOUT_IMAGES();
  constexpr int kRounds = 20;
  std::vector<double> up, down;
  for (int i = 0; i < kRounds; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto workspace = Workspace::create(root_.path(), "cost", 64 * kMiB);
    const auto created = std::chrono::steady_clock::now();
    if (i == 0) {
      struct stat st {};
      ASSERT_EQ(::stat((root_.path() / ".cost.img").c_str(), &st), 0);
      EXPECT_GE(static_cast<std::uint64_t>(st.st_size), 64 * kMiB);
      // Sparse: the image holds ext4's metadata, a few MiB, not its size in zeros.
      EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, 16 * kMiB)
          << "the image is written out in full";
    }
    workspace.reset();
    const auto removed = std::chrono::steady_clock::now();
    up.push_back(std::chrono::duration<double, std::milli>(created - start).count());
    down.push_back(std::chrono::duration<double, std::milli>(removed - created).count());
  }
  std::sort(up.begin(), up.end());
  std::sort(down.begin(), down.end());
  std::printf("64 MiB ext4 workspace: up_ms median %.1f (min %.1f), down_ms median %.1f\n",
              up[kRounds / 2], up.front(), down[kRounds / 2]);
}

}  // namespace
}  // namespace tamma::sandbox
