// The task's filesystem on the host (its workspace, HOME and temporary directories): a plain
// directory, or, with a disk limit, a per-task ext4 image on a loop device, so that the kernel
// answers ENOSPC for both bytes and inodes. tmpfs would not do: its pages count against the task's
// memory cgroup, so a task filling it is OOM-killed instead of told ENOSPC.
//
// Cost of the image, measured on a 2 vCPU VM (kernel 6.18, e2fsprogs 1.47, image on ext4;
// WorkspaceTest.ImageCost, median of 20): 64 MiB image ~10 ms up (mkfs.ext4 ~8 ms of it:
// fork+exec and writing the metadata; loop attach ~0.5 ms, mount ~1.3 ms), ~3 ms down
// (umount ~1.4 ms, unlink ~1.2 ms). Without a resize inode mkfs takes 9 ms instead of 21 ms
// for a 10 GiB image and 15 ms instead of 26 ms for 100 GiB. Under load from other builds on
// the same 2 cores we saw up to 25 ms up and 28 ms down.
//
// Everything under the workspace was written by the task, which we do not trust: walking
// and removing it uses directory fds and *at() calls with O_NOFOLLOW, never a path that a
// concurrent rename or symlink could redirect, and never crosses into another filesystem.

#include "sandbox/workspace.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/unique_fd.h"
#include "sandbox/cgroup_internal.h"

extern char** environ;

namespace tamma::sandbox {
namespace {

namespace fs = std::filesystem;

// ext4 cannot be made much smaller, and a smaller limit is surely a configuration mistake.
constexpr std::uint64_t kMinDiskLimit = 1ull << 20;
// The largest write ext4 may refuse whole. It reserves room per page-cache folio, and since
// Linux 6.16 caches files in large folios: a 1 MiB write into 0.85 MiB of room fails with
// nothing written (measured, kernel 6.18). A folio is at most a PMD, 2 MiB on x86_64.
// Smaller requests (directory blocks, inodes, direct I/O, fallocate, which halves its request
// until it fits) are refused only when less than they need is left.
constexpr std::uint64_t kLargestRefusedWrite = 2ull << 20;
// What mkfs.ext4 itself takes of an image (inode tables: 6.25% with e2fsprogs 1.47's defaults
// below 512 MiB, 256-byte inodes per 4 KiB, 1.6% above; bitmaps, descriptors; the 2% ext4
// keeps for metadata), with room to spare: the image is made this much larger than the room
// the task needs; setup() checks it sufficed and makes it again, larger, if not.
constexpr double kFilesystemOverhead = 1.10;
// Fills the room the task must not have (see ImageWorkspace::setup), at the root of the image,
// which the sandbox never shows to the task.
constexpr const char* kBallast = ".tamma-ballast";
// Directory fds held at once while walking; deeper trees are handled without more fds.
constexpr int kMaxOpenDepth = 64;

// Chosen by measuring (see the top of the file): no journal (a throwaway filesystem needs no
// crash consistency) and no resize inode (it would never grow) make mkfs write less; lazy
// inode table init and nodiscard skip writing/discarding the whole image; -m 0 gives the
// task every block of its limit.
const std::vector<std::string> kMkfsOptions{
    "-q", "-F", "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard",
    "-m", "0"};

void validate_task_id(const std::string& task_id) {
  if (task_id.empty() || task_id.front() == '.' || task_id.find('/') != std::string::npos ||
      task_id.find('\0') != std::string::npos || task_id.size() > 200) {
    throw Error(ErrorKind::kConfig, "invalid_task_id",
                "task id '" + task_id +
                    "' cannot name a workspace: it must be one path component not starting "
                    "with '.'");
  }
}

// Mount points at or below `dir` in this mount namespace, deepest first.
std::vector<fs::path> mounts_under(const fs::path& dir) {
  std::vector<fs::path> found;
  const auto mounts =
      cgroup_internal::parse_mountinfo(cgroup_internal::read_file("/proc/self/mountinfo"));
  const fs::path base = dir.lexically_normal();
  for (const auto& mount : mounts) {
    const fs::path point = fs::path(mount.mount_point).lexically_normal();
    const auto rel = point.lexically_relative(base);
    if (!rel.empty() && *rel.begin() != "..") found.push_back(point);
  }
  // Later mounts may stack on earlier ones and children sort after parents: reverse order
  // of appearance, then by depth, unmounts the top of every stack first.
  std::reverse(found.begin(), found.end());
  std::stable_sort(found.begin(), found.end(), [](const fs::path& a, const fs::path& b) {
    return std::distance(a.begin(), a.end()) > std::distance(b.begin(), b.end());
  });
  return found;
}

// Returns false if something stayed mounted.
bool unmount_all_under(const fs::path& dir) {
  bool ok = true;
  for (const auto& point : mounts_under(dir)) {
    if (::umount2(point.c_str(), UMOUNT_NOFOLLOW) == 0 || errno == EINVAL) continue;
    // Busy (a process still has a file open or its cwd there): detach it from the tree now;
    // the kernel finishes when the last user goes, and autoclear then frees the loop device.
    const int err = errno;
    if (err == EBUSY && ::umount2(point.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
      spdlog::warn("workspace: {} was busy, detached lazily", point.string());
      continue;
    }
    spdlog::error("workspace: cannot unmount {}: {}", point.string(), std::strerror(err));
    ok = false;
  }
  return ok;
}

std::vector<std::string> list_dir(int dir_fd) {
  std::vector<std::string> names;
  const int dup_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) throw_errno("dup directory fd");
  DIR* dir = ::fdopendir(dup_fd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(dup_fd);
    throw_errno("fdopendir", err);
  }
  ::rewinddir(dir);
  errno = 0;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  const int err = errno;
  ::closedir(dir);
  if (err != 0) throw_errno("readdir", err);
  return names;
}

UniqueFd open_subdir(int dir_fd, const std::string& name) {
  return UniqueFd(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

// What the walks below need of an entry, from one statx without following a symlink.
// `name` empty: `dir_fd` itself. False if it is gone (or cannot be read).
bool stat_entry(int dir_fd, const std::string& name, struct statx* st) {
  constexpr unsigned kMask =
      STATX_TYPE | STATX_MODE | STATX_NLINK | STATX_INO | STATX_BLOCKS | STATX_MNT_ID;
  const int flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | (name.empty() ? AT_EMPTY_PATH : 0);
  return ::statx(dir_fd, name.c_str(), flags, kMask, st) == 0;
}

bool is_dir(const struct statx& st) { return S_ISDIR(st.stx_mode); }

// The mount a walk stays on. By mount id where the kernel reports one (5.8+), else by device:
// overlayfs (the root of most containers) reports the overlay's device for directories but
// the device of the layer a file lives on for the others, so a device check would skip every
// file; a bind mount of the same filesystem has the same device but is another mount.
class MountIdentity {
 public:
  explicit MountIdentity(const struct statx& top)
      : by_id_((top.stx_mask & STATX_MNT_ID) != 0),
        mnt_id_(top.stx_mnt_id),
        major_(top.stx_dev_major),
        minor_(top.stx_dev_minor) {}

  [[nodiscard]] bool same(const struct statx& st) const {
    if (by_id_ && (st.stx_mask & STATX_MNT_ID) != 0) return st.stx_mnt_id == mnt_id_;
    return st.stx_dev_major == major_ && st.stx_dev_minor == minor_;
  }

 private:
  bool by_id_;
  std::uint64_t mnt_id_;
  std::uint32_t major_;
  std::uint32_t minor_;
};

// Empties the directory `top` refers to. Directories deeper than kMaxOpenDepth are first
// renamed up into `top` (same filesystem, so rename always works) and emptied from there on
// a later pass, which bounds both the fds and the stack a hostile deep tree can cost.
class Remover {
 public:
  Remover(int top, MountIdentity mount, std::string where)
      : top_(top), mount_(mount), where_(std::move(where)) {}

  // Returns false if something could not be removed (logged).
  bool run() {
    for (;;) {
      moved_ = false;
      clear(top_, 0);
      if (!moved_) return ok_;
    }
  }

 private:
  void clear(int dir_fd, int depth) {
    std::vector<std::string> names;
    try {
      names = list_dir(dir_fd);
    } catch (const Error& e) {
      fail(e.what());
      return;
    }
    for (const auto& name : names) {
      struct statx st {};
      if (!stat_entry(dir_fd, name, &st)) {
        if (errno != ENOENT) fail("stat " + name + ": " + std::strerror(errno));
        continue;
      }
      if (is_dir(st)) {
        if (!mount_.same(st)) {
          fail("'" + name + "' is another filesystem still mounted; left alone");
          continue;
        }
        if (depth + 1 >= kMaxOpenDepth) {
          move_to_top(dir_fd, name);
          continue;
        }
        UniqueFd sub = open_subdir(dir_fd, name);
        if (!sub) {
          fail("open " + name + ": " + std::strerror(errno));
          continue;
        }
        clear(sub.get(), depth + 1);
        sub.reset();
        if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
          fail("rmdir " + name + ": " + std::strerror(errno));
        }
      } else if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
        fail("unlink " + name + ": " + std::strerror(errno));
      }
    }
  }

  void move_to_top(int dir_fd, const std::string& name) {
    for (;;) {
      const std::string target = ".tamma-rm-" + std::to_string(counter_++);
      if (::renameat2(dir_fd, name.c_str(), top_, target.c_str(), RENAME_NOREPLACE) == 0) {
        moved_ = true;
        return;
      }
      if (errno != EEXIST) {
        fail("move deep directory " + name + " up: " + std::strerror(errno));
        return;
      }
    }
  }

  void fail(const std::string& what) {
    spdlog::error("workspace: removing {}: {}", where_, what);
    ok_ = false;
  }

  int top_;
  MountIdentity mount_;
  std::string where_;
  bool moved_ = false;
  bool ok_ = true;
  std::uint64_t counter_ = 0;
};

// Removes `dir` and everything in it; false (logged) if something stayed.
bool remove_tree(const fs::path& dir) {
  UniqueFd top(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!top) {
    if (errno == ENOENT) return true;
    spdlog::error("workspace: cannot open {}: {}", dir.string(), std::strerror(errno));
    return false;
  }
  struct statx st {};
  if (!stat_entry(top.get(), "", &st)) {
    spdlog::error("workspace: cannot stat {}: {}", dir.string(), std::strerror(errno));
    return false;
  }
  const bool emptied = Remover(top.get(), MountIdentity(st), dir.string()).run();
  top.reset();
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
    spdlog::error("workspace: cannot remove {}: {}", dir.string(), std::strerror(errno));
    return false;
  }
  return emptied;
}

// Sums what the task wrote: allocated blocks (st_blocks, so sparse files count what they
// use) and inodes, each hard-linked file once (by device and inode: on overlayfs a file's
// inode number is its layer's). Not following symlinks nor mounts. Beyond
// kMaxOpenDepth levels the walk stops (a directory tree that deep is hostile, and the
// walk must not run out of fds); with a disk limit, statvfs counts everything instead.
class Walker {
 public:
  explicit Walker(MountIdentity mount) : mount_(mount) {}

  void walk(int dir_fd, int depth) {
    std::vector<std::string> names;
    try {
      names = list_dir(dir_fd);
    } catch (const Error&) {
      return;  // removed or made unreadable while we walk: the task is still running
    }
    for (const auto& name : names) {
      struct statx st {};
      if (!stat_entry(dir_fd, name, &st)) continue;
      if (!mount_.same(st)) continue;
      if (!is_dir(st) && st.stx_nlink > 1 &&
          !seen_.insert({st.stx_dev_major, st.stx_dev_minor, st.stx_ino}).second) {
        continue;
      }
      usage_.bytes += st.stx_blocks * 512;
      ++usage_.inodes;
      if (!is_dir(st)) continue;
      if (depth + 1 >= kMaxOpenDepth) {
        if (!truncated_) spdlog::warn("workspace: usage walk stops at depth {}", kMaxOpenDepth);
        truncated_ = true;
        continue;
      }
      if (UniqueFd sub = open_subdir(dir_fd, name)) walk(sub.get(), depth + 1);
    }
  }

  [[nodiscard]] const DiskUsage& usage() const { return usage_; }

 private:
  MountIdentity mount_;
  DiskUsage usage_;
  std::set<std::tuple<std::uint32_t, std::uint32_t, std::uint64_t>> seen_;  // device, inode
  bool truncated_ = false;
};

std::string find_program(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = ::getenv("PATH")) {
    std::string_view rest(path);
    while (!rest.empty()) {
      const auto colon = rest.find(':');
      dirs.emplace_back(rest.substr(0, colon));
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  // Service managers often run us with a PATH lacking the sbin directories.
  dirs.insert(dirs.end(), {"/usr/sbin", "/sbin", "/usr/bin", "/bin"});
  for (const auto& dir : dirs) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

// Runs `argv` to completion; throws Error(kSandboxSetup) with its output if it fails.
// posix_spawn rather than fork: the worker is multi-threaded.
void run_program(const std::vector<std::string>& argv, std::string_view purpose) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int err = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) throw_errno("spawn " + argv[0], err);
  write_end.reset();
  std::string output;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < 64 * 1024) output.append(buffer, static_cast<std::size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid " + argv[0]);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string command;
    for (const auto& arg : argv) command += (command.empty() ? "" : " ") + arg;
    throw Error(ErrorKind::kSandboxSetup, "workspace_setup_failed",
                std::string(purpose) + ": '" + command + "' failed (" +
                    (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                       : "signal " + std::to_string(WTERMSIG(status))) +
                    "): " + cgroup_internal::trim(output));
  }
}

// Attaches `image_fd` to a free loop device that detaches itself once unmounted and closed.
// Returns the device path and an open fd of it (the caller closes it after mounting).
std::pair<std::string, UniqueFd> attach_loop(int image_fd, const fs::path& image) {
  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control) {
    throw Error(ErrorKind::kSandboxSetup, "loop_device_missing",
                std::string("cannot open /dev/loop-control: ") + std::strerror(errno) +
                    ": cannot enforce resources.disk");
  }
  loop_info64 info{};
  info.lo_flags = LO_FLAGS_AUTOCLEAR;
  std::strncpy(reinterpret_cast<char*>(info.lo_file_name), image.c_str(), LO_NAME_SIZE - 1);
  // Another process may take the device we were offered before we configure it: retry.
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (number < 0) throw_errno("LOOP_CTL_GET_FREE");
    const std::string device = "/dev/loop" + std::to_string(number);
    UniqueFd loop(::open(device.c_str(), O_RDWR | O_CLOEXEC));
    if (!loop) {
      // The device node may appear in /dev a moment after the kernel created the device.
      if (errno == ENOENT && attempt < 15) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      throw_errno("open " + device);
    }
    loop_config config{};
    config.fd = static_cast<std::uint32_t>(image_fd);
    config.info = info;
    if (::ioctl(loop.get(), LOOP_CONFIGURE, &config) == 0) return {device, std::move(loop)};
    if (errno == EBUSY) continue;
    if (errno != EINVAL && errno != ENOTTY) throw_errno("LOOP_CONFIGURE " + device);
    // Kernels before 5.8: the two-step attach.
    if (::ioctl(loop.get(), LOOP_SET_FD, image_fd) != 0) {
      if (errno == EBUSY) continue;
      throw_errno("LOOP_SET_FD " + device);
    }
    if (::ioctl(loop.get(), LOOP_SET_STATUS64, &info) != 0) {
      const int err = errno;
      ::ioctl(loop.get(), LOOP_CLR_FD, 0);
      throw_errno("LOOP_SET_STATUS64 " + device, err);
    }
    return {device, std::move(loop)};
  }
  throw Error(ErrorKind::kSandboxSetup, "loop_device_busy",
              "no free loop device after 16 attempts: cannot enforce resources.disk");
}

// A leftover of a crashed worker for the same task: unmount and remove it so that the new
// workspace starts empty.
void clear_leftover(const fs::path& dir, const fs::path& image) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dir, ec))) {
    spdlog::warn("workspace: removing leftover {}", dir.string());
    unmount_all_under(dir);
    if (!remove_tree(dir)) {
      throw Error(ErrorKind::kInfrastructure, "workspace_leftover",
                  "cannot remove the leftover workspace " + dir.string());
    }
  }
  if (::unlink(image.c_str()) != 0 && errno != ENOENT) throw_errno("unlink " + image.string());
}

fs::path lock_path(const fs::path& root, const std::string& task_id) {
  return root / ("." + task_id + ".lock");
}

fs::path image_path(const fs::path& root, const std::string& task_id) {
  return root / ("." + task_id + ".img");
}

// Held for the workspace's whole life; the kernel drops it when the worker dies, however.
class OwnerLock {
 public:
  explicit OwnerLock(fs::path path) : path_(std::move(path)) {
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd_) throw_errno("create workspace lock " + path_.string());
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        // Not naming the lock file: the message goes to the orchestrator, which has no use
        // for this host's paths (the worker's log has them).
        spdlog::warn("workspace: {} is held by a live worker", path_.string());
        throw Error(ErrorKind::kConfig, "task_already_running",
                    "a live worker on this host already runs a task with this id (its "
                    "workspace lock is held)");
      }
      throw_errno("flock " + path_.string());
    }
  }
  OwnerLock(const OwnerLock&) = delete;
  OwnerLock& operator=(const OwnerLock&) = delete;
  ~OwnerLock() {
    // Unlinked before it is unlocked, so no one can take a lock on a file about to vanish.
    ::unlink(path_.c_str());
  }

 private:
  fs::path path_;
  UniqueFd fd_;
};

void make_dir(const fs::path& dir, mode_t mode) {
  if (::mkdir(dir.c_str(), mode) != 0) throw_errno("mkdir " + dir.string());
  // mkdir applies the umask; the mode is part of the contract.
  if (::chmod(dir.c_str(), mode) != 0) throw_errno("chmod " + dir.string());
}

// The four directories of a fresh task filesystem (workspace.h).
void make_task_dirs(const fs::path& task_dir) {
  make_dir(task_dir / kWorkDir, 0755);
  make_dir(task_dir / kHomeDir, 0755);
  // Sticky and world-writable, as /tmp and /var/tmp are: whatever uid the task runs as (a
  // user namespace maps it to the worker's) may write there, and not remove others' files.
  make_dir(task_dir / kTmpDir, 01777);
  make_dir(task_dir / kVarTmpDir, 01777);
}

// Sums what the task wrote below the four directories (not the directories themselves, which
// the worker made), hard links counted once across all of them.
DiskUsage walk_task_dirs(const fs::path& task_dir) {
  UniqueFd top(::open(task_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!top) throw_errno("open " + task_dir.string());
  struct statx st {};
  if (!stat_entry(top.get(), "", &st)) throw_errno("stat " + task_dir.string());
  Walker walker{MountIdentity(st)};
  for (const char* name : {kWorkDir, kHomeDir, kTmpDir, kVarTmpDir}) {
    if (UniqueFd sub = open_subdir(top.get(), name)) walker.walk(sub.get(), 0);
  }
  return walker.usage();
}

// Copies what the task left in its four directories to `dest`, never following a symlink the
// task made. Runs after the task's processes are gone, so nothing moves underneath.
void copy_task_files(const fs::path& task_dir, const fs::path& dest) {
  make_dir(dest, 0755);
  for (const char* name : {kWorkDir, kHomeDir, kTmpDir, kVarTmpDir}) {
    const fs::path from = task_dir / name;
    std::error_code ec;
    if (!fs::is_directory(fs::symlink_status(from, ec))) continue;
    fs::create_directory(dest / name, from, ec);
    if (ec) throw_errno("create " + (dest / name).string(), ec.value());
    for (auto it = fs::recursive_directory_iterator(from, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const fs::path to = dest / name / it->path().lexically_relative(from);
      const fs::file_status status = it->symlink_status(ec);
      if (ec) break;
      if (fs::is_symlink(status)) {
        fs::copy_symlink(it->path(), to, ec);
      } else if (fs::is_directory(status)) {
        fs::create_directory(to, it->path(), ec);
      } else if (fs::is_regular_file(status)) {
        fs::copy_file(it->path(), to, ec);
      }
      if (ec) throw_errno("keep " + it->path().string(), ec.value());
    }
    if (ec) throw_errno("keep " + from.string(), ec.value());
  }
}

void make_parents(const fs::path& dest) {
  std::error_code ec;
  fs::create_directories(dest.parent_path(), ec);
  if (ec) throw_errno("create " + dest.parent_path().string(), ec.value());
  if (fs::exists(fs::symlink_status(dest, ec))) {
    throw Error(ErrorKind::kConfig, "keep_target_exists",
                "cannot keep the workspace at " + dest.string() + ": it exists");
  }
}

// What a directory carries besides its entries that a task may change and emptying it does
// not undo, with the owner, mode and times that recycling sets anyway.
struct DirAttributes {
  std::optional<int> flags;           // FS_IOC_GETFLAGS (chattr): none where unsupported
  std::optional<struct fsxattr> fsx;  // project id, extent size hints
  std::vector<std::pair<std::string, std::string>> security;  // security.* xattrs, by name
  bool other_xattrs = false;                                  // any other (an ACL, user.*)
  std::uint64_t size = 0;  // a directory that grew large stays large
};

// The names of the extended attributes of `fd`, as the kernel lists them.
std::optional<std::vector<std::string>> xattr_names(int fd) {
  std::vector<char> buffer(1024);
  for (;;) {
    const ssize_t n = ::flistxattr(fd, buffer.data(), buffer.size());
    if (n >= 0) {
      std::vector<std::string> names;
      for (std::size_t at = 0; at < static_cast<std::size_t>(n);) {
        names.emplace_back(buffer.data() + at);
        at += names.back().size() + 1;
      }
      return names;
    }
    if (errno == ENOTSUP) return std::vector<std::string>{};
    if (errno != ERANGE || buffer.size() >= (1u << 20)) return std::nullopt;
    buffer.resize(buffer.size() * 4);
  }
}

std::optional<DirAttributes> dir_attributes(int fd) {
  DirAttributes a;
  int flags = 0;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
    a.flags = flags;
  } else if (errno != ENOTTY && errno != EOPNOTSUPP && errno != EINVAL) {
    return std::nullopt;
  }
  struct fsxattr fsx {};
  if (::ioctl(fd, FS_IOC_FSGETXATTR, &fsx) == 0) {
    a.fsx = fsx;
  } else if (errno != ENOTTY && errno != EOPNOTSUPP && errno != EINVAL) {
    return std::nullopt;
  }
  const auto names = xattr_names(fd);
  if (!names) return std::nullopt;
  for (const auto& name : *names) {
    if (!name.starts_with("security.")) {
      a.other_xattrs = true;
      continue;
    }
    std::string value(4096, '\0');
    const ssize_t n = ::fgetxattr(fd, name.c_str(), value.data(), value.size());
    if (n < 0) return std::nullopt;
    value.resize(static_cast<std::size_t>(n));
    a.security.emplace_back(name, std::move(value));
  }
  std::sort(a.security.begin(), a.security.end());
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::nullopt;
  a.size = static_cast<std::uint64_t>(st.st_size);
  return a;
}

bool same_fsx(const std::optional<struct fsxattr>& a, const std::optional<struct fsxattr>& b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return a->fsx_xflags == b->fsx_xflags && a->fsx_extsize == b->fsx_extsize &&
         a->fsx_projid == b->fsx_projid && a->fsx_cowextsize == b->fsx_cowextsize;
}

// Gives an emptied task directory (the remover succeeded on it) back what make_dir() gave it;
// returns why it cannot be reused, or nothing when it now matches `fresh` (a directory the worker
// made beside it, which the task never saw: what a new directory here inherits is the same).
std::optional<std::string> reset_task_dir(int fd, mode_t mode, const DirAttributes& fresh) {
  if (::fchown(fd, ::geteuid(), ::getegid()) != 0) {
    return std::string("chown: ") + std::strerror(errno);
  }
  if (::fchmod(fd, mode) != 0) return std::string("chmod: ") + std::strerror(errno);
  // ACLs (system.posix_acl_*), user.* and whatever else the task set; security.* (an LSM's
  // label) is the host's, compared below instead.
  const auto names = xattr_names(fd);
  if (!names) return std::string("listxattr: ") + std::strerror(errno);
  for (const auto& name : *names) {
    if (name.starts_with("security.")) continue;
    if (::fremovexattr(fd, name.c_str()) != 0 && errno != ENODATA) {
      return "removexattr " + name + ": " + std::strerror(errno);
    }
  }
  if (::futimens(fd, nullptr) != 0) return std::string("utimes: ") + std::strerror(errno);
  const auto now = dir_attributes(fd);
  if (!now) return std::string("reading its attributes: ") + std::strerror(errno);
  if (now->flags != fresh.flags) return "its inode flags changed (chattr)";
  if (!same_fsx(now->fsx, fresh.fsx)) return "its project or extent attributes changed";
  if (now->security != fresh.security) return "its security attributes changed";
  if (now->size > fresh.size) return "it grew (" + std::to_string(now->size) + " bytes)";
  if (now->other_xattrs) return "extended attributes remain";
  return std::nullopt;
}

class PlainWorkspace final : public Workspace {
 public:
  PlainWorkspace(fs::path root, fs::path dir, std::unique_ptr<OwnerLock> lock)
      : root_(std::move(root)),
        dir_(std::move(dir)),
        work_(dir_ / kWorkDir),
        lock_(std::move(lock)) {}

  // Never throws: an exception leaving a destructor ends the process, and a host short of
  // descriptors makes reading /proc/self/mountinfo fail. What is left is swept by the next
  // remove_stale().
  ~PlainWorkspace() override {
    if (kept_) return;
    try {
      unmount_all_under(dir_);
      remove_tree(dir_);
    } catch (const std::exception& e) {
      spdlog::error("workspace: tearing down {} failed: {}", dir_.string(), e.what());
    }
  }

  void setup() {
    make_dir(dir_, 0755);
    make_task_dirs(dir_);
  }

  [[nodiscard]] const fs::path& path() const override { return work_; }
  [[nodiscard]] const fs::path& task_dir() const override { return dir_; }

  [[nodiscard]] DiskUsage usage() const override { return walk_task_dirs(dir_); }
  [[nodiscard]] bool full() const override { return false; }

  [[nodiscard]] std::optional<std::uint64_t> limit() const override { return std::nullopt; }

  fs::path keep(const fs::path& dest) override {
    make_parents(dest);
    unmount_all_under(dir_);
    if (::rename(dir_.c_str(), dest.c_str()) == 0) {
      kept_ = true;
      return dest;
    }
    if (errno != EXDEV) throw_errno("move " + dir_.string() + " to " + dest.string());
    copy_task_files(dir_, dest);
    kept_copy_ = true;
    return dest;
  }

  [[nodiscard]] const fs::path& root() const { return root_; }

  // Empties the four directories, makes each again what make_task_dirs() makes, and renames
  // the whole to `spare_dir` (whose lock the caller holds): nothing is left for the
  // destructor but the task's lock. Returns why it could not; the destructor then removes
  // everything, as it does for any workspace.
  std::optional<std::string> recycle_into(const fs::path& spare_dir) {
    if (kept_ || kept_copy_) return "it was kept";
    if (!unmount_all_under(dir_)) return "something stays mounted in it";
    UniqueFd top(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!top) return std::string("open: ") + std::strerror(errno);
    struct statx top_st {};
    if (!stat_entry(top.get(), "", &top_st)) return std::string("stat: ") + std::strerror(errno);
    auto names = list_dir(top.get());
    std::sort(names.begin(), names.end());
    if (names != std::vector<std::string>{kHomeDir, kTmpDir, kVarTmpDir, kWorkDir}) {
      return "it holds more than its four directories";
    }
    // What a directory made here now would have: the task never saw the top directory (the
    // sandbox shows it the four inside), so it is as the worker made it.
    const auto fresh = dir_attributes(top.get());
    if (!fresh) return std::string("reading its attributes: ") + std::strerror(errno);
    // New directories here inherit attributes (a default ACL on the workspace root): which
    // ones a fresh directory would get is the kernel's to say, so none is rebuilt by hand.
    if (fresh->other_xattrs) return "new directories here get extended attributes (an ACL?)";
    const MountIdentity mount(top_st);
    for (const auto& [name, mode] : {std::pair{kWorkDir, 0755}, std::pair{kHomeDir, 0755},
                                     std::pair{kTmpDir, 01777}, std::pair{kVarTmpDir, 01777}}) {
      UniqueFd sub = open_subdir(top.get(), name);
      struct statx st {};
      if (!sub || !stat_entry(sub.get(), "", &st) || !is_dir(st)) {
        return std::string(name) + " is not a directory";
      }
      if (!mount.same(st)) return std::string(name) + " is another filesystem";
      if (!Remover(sub.get(), mount, (dir_ / name).string()).run()) {
        return std::string("emptying ") + name + " failed";
      }
      if (auto why = reset_task_dir(sub.get(), static_cast<mode_t>(mode), *fresh)) {
        return std::string(name) + ": " + *why;
      }
    }
    top.reset();
    if (::renameat2(AT_FDCWD, dir_.c_str(), AT_FDCWD, spare_dir.c_str(), RENAME_NOREPLACE) != 0) {
      return std::string("rename: ") + std::strerror(errno);
    }
    kept_ = true;  // moved away whole, empty: nothing left to remove
    return std::nullopt;
  }

 private:
  fs::path root_;  // as given to Workspace::create
  fs::path dir_;
  fs::path work_;
  bool kept_ = false;                // moved away whole: nothing left to remove
  bool kept_copy_ = false;           // copied away: what is left is no spare's
  std::unique_ptr<OwnerLock> lock_;  // released last, after the tree is gone
};

class ImageWorkspace final : public Workspace {
 public:
  ImageWorkspace(fs::path dir, fs::path image, std::uint64_t limit, std::unique_ptr<OwnerLock> lock)
      : path_(std::move(dir)),
        work_(path_ / kWorkDir),
        image_(std::move(image)),
        limit_(limit),
        lock_(std::move(lock)) {}

  ~ImageWorkspace() override { teardown(); }

  // Every step undoes itself through teardown() if a later one throws.
  void setup() {
    // Loop devices and ext4 mounts need real root (ext4 cannot be mounted in a user
    // namespace): a worker that is not root says so rather than failing on /dev/loop-control.
    if (::geteuid() != 0) {
      throw Error(ErrorKind::kSandboxSetup, "disk_limit_needs_root",
                  "resources.disk needs a worker running as root (the limit is a loop-mounted "
                  "ext4 image); this worker runs as uid " +
                      std::to_string(::geteuid()));
    }
    if (find_program("mkfs.ext4").empty()) {
      throw Error(ErrorKind::kSandboxSetup, "mkfs_ext4_missing",
                  "mkfs.ext4 not found (install e2fsprogs): cannot enforce resources.disk");
    }
    // mkfs.ext4's share depends on its defaults for the size (and its version): should the
    // estimate fall short, the image is made again, larger by what was missing.
    std::uint64_t size = image_size(limit_);
    for (int attempt = 0;; ++attempt) {
      format_and_mount(size);
      const std::uint64_t room = available_bytes();
      if (room >= room_needed(limit_)) break;
      if (attempt == 2) {
        throw Error(ErrorKind::kSandboxSetup, "disk_image_too_small",
                    "the workspace image for a disk limit of " + std::to_string(limit_) +
                        " bytes has room for only " + std::to_string(room) + " bytes");
      }
      spdlog::debug("workspace: a {} byte image has room for {} bytes, {} needed: made again", size,
                    room, room_needed(limit_));
      teardown();
      size = round_up_mib(static_cast<std::uint64_t>(static_cast<double>(size) *
                                                     static_cast<double>(room_needed(limit_)) /
                                                     static_cast<double>(room) * 1.01));
    }
    fill_ballast();
    // What the empty filesystem already uses (root directory, reserved inodes, the four
    // directories, the ballast) is not the task's.
    const struct statvfs empty = stat_fs();
    base_bytes_ = (empty.f_blocks - empty.f_bfree) * empty.f_frsize;
    base_inodes_ = empty.f_files - empty.f_ffree;
  }

  [[nodiscard]] const fs::path& path() const override { return work_; }
  [[nodiscard]] const fs::path& task_dir() const override { return path_; }

  [[nodiscard]] DiskUsage usage() const override {
    const struct statvfs st = stat_fs();
    DiskUsage usage;
    const std::uint64_t used = (st.f_blocks - st.f_bfree) * st.f_frsize;
    const std::uint64_t inodes = st.f_files - st.f_ffree;
    usage.bytes = used > base_bytes_ ? used - base_bytes_ : 0;
    usage.inodes = inodes > base_inodes_ ? inodes - base_inodes_ : 0;
    // The task has room for limit + kLargestRefusedWrite (setup()), and ext4 refuses a write
    // only with less room left than that write needs, at most kLargestRefusedWrite: whatever
    // the tool and write size, a task that was told ENOSPC has used more than its limit. And a
    // task that used more than its limit did exceed it. No guess, either way. (ext4's
    // statfs counts delayed-allocation reservations as used, the same figure its refusal
    // checks.) An inode table runs out exactly when no inode is left.
    usage.full = usage.bytes >= limit_ || st.f_favail == 0;
    return usage;
  }

  [[nodiscard]] bool full() const override { return usage().full; }  // one statvfs

  [[nodiscard]] std::optional<std::uint64_t> limit() const override { return limit_; }

  fs::path keep(const fs::path& dest) override {
    make_parents(dest);
    copy_task_files(path_, dest);
    return dest;
  }

 private:
  // A sparse image of `size` bytes, formatted, attached, mounted on path_, holding the four
  // empty task directories.
  void format_and_mount(std::uint64_t size) {
    {
      UniqueFd image(::open(image_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!image) throw_errno("create " + image_.string());
      image_created_ = true;
      // Sparse: the host pays only for what the task writes.
      if (::ftruncate(image.get(), static_cast<off_t>(size)) != 0) {
        throw_errno("size " + image_.string());
      }
    }
    std::vector<std::string> argv{find_program("mkfs.ext4")};
    argv.insert(argv.end(), kMkfsOptions.begin(), kMkfsOptions.end());
    argv.push_back(image_.string());
    run_program(argv, "formatting the workspace image");

    make_dir(path_, 0755);
    dir_created_ = true;
    UniqueFd image(::open(image_.c_str(), O_RDWR | O_CLOEXEC));
    if (!image) throw_errno("open " + image_.string());
    auto [device, loop] = attach_loop(image.get(), image_);
    if (::mount(device.c_str(), path_.c_str(), "ext4", MS_NOSUID | MS_NODEV, nullptr) != 0) {
      throw_errno("mount " + device + " (ext4) on " + path_.string());
    }
    mounted_ = true;
    // The mount holds the device now; closing our fd leaves autoclear to detach it at umount.
    loop.reset();
    if (::rmdir((path_ / "lost+found").c_str()) != 0 && errno != ENOENT) {
      throw_errno("rmdir " + (path_ / "lost+found").string());
    }
    if (::chmod(path_.c_str(), 0755) != 0) throw_errno("chmod " + path_.string());
    make_task_dirs(path_);
  }

  [[nodiscard]] std::uint64_t available_bytes() const {
    const struct statvfs st = stat_fs();
    return st.f_bavail * st.f_frsize;
  }

  // The task must have room for its limit plus the largest write ext4 may refuse whole, so
  // that running out always means the limit was passed (usage()).
  [[nodiscard]] static std::uint64_t room_needed(std::uint64_t limit) {
    return limit + kLargestRefusedWrite;
  }
  [[nodiscard]] static std::uint64_t round_up_mib(std::uint64_t bytes) {
    return (bytes + (1ull << 20) - 1) & ~((1ull << 20) - 1);
  }
  [[nodiscard]] static std::uint64_t image_size(std::uint64_t limit) {
    const auto size =
        static_cast<std::uint64_t>(static_cast<double>(room_needed(limit)) * kFilesystemOverhead);
    return round_up_mib(size + (1ull << 20));  // + 1 MiB for the fixed parts
  }

  // mkfs.ext4 leaves more room than the task may have (image_size() errs on the large side):
  // a file allocated (not written: the image stays sparse) at the root of the image takes the
  // rest, so the kernel refuses the task's writes at room_needed(), not some percent later.
  void fill_ballast() {
    const struct statvfs st = stat_fs();
    const std::uint64_t room = st.f_bavail * st.f_frsize;
    const std::uint64_t excess = (room - room_needed(limit_)) / st.f_frsize * st.f_frsize;
    if (excess == 0) return;
    const fs::path ballast = path_ / kBallast;
    UniqueFd fd(::open(ballast.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0));
    if (!fd) throw_errno("create " + ballast.string());
    if (::fallocate(fd.get(), 0, 0, static_cast<off_t>(excess)) != 0) {
      throw_errno("allocate " + ballast.string());
    }
  }

  [[nodiscard]] struct statvfs stat_fs() const {
    struct statvfs st {};
    if (::statvfs(path_.c_str(), &st) != 0) throw_errno("statvfs " + path_.string());
    return st;
  }

  void teardown() noexcept {
    try {
      if (mounted_ || dir_created_) {
        unmount_all_under(path_);
        // Should the unmount have failed, the remover stays on the mount's parent filesystem.
        remove_tree(path_);
      }
      if (image_created_ && ::unlink(image_.c_str()) != 0 && errno != ENOENT) {
        spdlog::error("workspace: cannot remove image {}: {}", image_.string(),
                      std::strerror(errno));
      }
      mounted_ = dir_created_ = image_created_ = false;
    } catch (const std::exception& e) {
      spdlog::error("workspace: tearing down {} failed: {}", path_.string(), e.what());
    }
  }

  fs::path path_;  // the mount point: the task's filesystem
  fs::path work_;
  fs::path image_;
  std::uint64_t limit_;
  bool image_created_ = false;
  bool dir_created_ = false;
  bool mounted_ = false;
  std::uint64_t base_bytes_ = 0;
  std::uint64_t base_inodes_ = 0;
  std::unique_ptr<OwnerLock> lock_;  // released last, after the tree is gone
};

// A name no task id and no other spare has: task ids are the orchestrator's, which never
// start with "spare-" (they start with "tsk_", `run`'s with "task-").
std::string spare_name() {
  unsigned char bytes[8];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("getrandom");
    got += static_cast<std::size_t>(n);
  }
  std::string name = "spare-";
  for (unsigned char b : bytes) name += fmt::format("{:02x}", b);
  return name;
}

}  // namespace

struct SpareWorkspace::Parts {
  fs::path root;  // as given to make(): compared with create()'s as given
  fs::path dir;
  std::unique_ptr<OwnerLock> lock;
  bool taken = false;  // renamed into a workspace, which removes it

  ~Parts() {
    if (taken || dir.empty()) return;
    try {
      remove_tree(dir);
    } catch (const std::exception& e) {
      spdlog::error("workspace: removing the spare {} failed: {}", dir.string(), e.what());
    }
  }  // then the lock goes, after the tree
};

std::unique_ptr<SpareWorkspace> SpareWorkspace::make(const fs::path& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw_errno("create workspace root " + root.string(), ec.value());
  auto parts = std::make_unique<Parts>();
  parts->root = root;
  const std::string name = spare_name();
  parts->lock = std::make_unique<OwnerLock>(lock_path(root, name));
  parts->dir = root / name;  // from here on the destructor removes whatever was made
  make_dir(parts->dir, 0755);
  make_task_dirs(parts->dir);
  return std::unique_ptr<SpareWorkspace>(new SpareWorkspace(std::move(parts)));
}

std::unique_ptr<SpareWorkspace> SpareWorkspace::recycle(std::unique_ptr<Workspace> finished) {
  auto* plain = dynamic_cast<PlainWorkspace*>(finished.get());
  if (plain == nullptr) return nullptr;  // an image: `finished` unmounts and removes it
  try {
    auto parts = std::make_unique<Parts>();
    parts->root = plain->root();
    const std::string name = spare_name();
    // The spare's lock before its directory exists, as make() takes it: a sweep never sees
    // an unlocked spare of a live worker.
    parts->lock = std::make_unique<OwnerLock>(lock_path(parts->root, name));
    if (auto why = plain->recycle_into(parts->root / name)) {
      spdlog::debug("workspace: {} is removed, not reused: {}", plain->task_dir().string(), *why);
      return nullptr;  // `finished` removes what is left; `parts` its lock
    }
    parts->dir = parts->root / name;
    finished.reset();  // the task's lock, last
    return std::unique_ptr<SpareWorkspace>(new SpareWorkspace(std::move(parts)));
  } catch (const std::exception& e) {
    spdlog::debug("workspace: {} is removed, not reused: {}", plain->task_dir().string(), e.what());
    return nullptr;
  }
}

SpareWorkspace::SpareWorkspace(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}
SpareWorkspace::~SpareWorkspace() = default;
const fs::path& SpareWorkspace::dir() const { return parts_->dir; }

std::unique_ptr<Workspace> Workspace::create(const fs::path& root, const std::string& task_id,
                                             std::optional<std::uint64_t> disk_limit_bytes,
                                             std::unique_ptr<SpareWorkspace> spare) {
  validate_task_id(task_id);
  if (disk_limit_bytes && *disk_limit_bytes < kMinDiskLimit) {
    throw Error(ErrorKind::kConfig, "invalid_disk_limit",
                "resources.disk must be at least 1 MiB, got " + std::to_string(*disk_limit_bytes) +
                    " bytes");
  }
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw_errno("create workspace root " + root.string(), ec.value());
  const fs::path path = root / task_id;
  const fs::path image = image_path(root, task_id);
  // The lock comes first: from then on no sweeper takes this workspace for a leftover.
  auto lock = std::make_unique<OwnerLock>(lock_path(root, task_id));
  clear_leftover(path, image);

  if (!disk_limit_bytes) {
    auto workspace = std::make_unique<PlainWorkspace>(root, path, std::move(lock));
    if (spare && spare->parts_->root == root) {
      if (::rename(spare->parts_->dir.c_str(), path.c_str()) == 0) {
        spare->parts_->taken = true;
        return workspace;
      }
      // Not fatal: the spare goes with `spare`, and a fresh one is made.
      const int err = errno;
      spdlog::debug("workspace: the spare {} could not become {}: {}", spare->parts_->dir.string(),
                    path.string(), std::strerror(err));
    }
    workspace->setup();
    return workspace;
  }
  auto workspace =
      std::make_unique<ImageWorkspace>(path, image, *disk_limit_bytes, std::move(lock));
  workspace->setup();
  return workspace;
}

std::size_t Workspace::remove_stale(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return 0;
  // One listing serves both sweeps: `run` pays for this at every start.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    names.push_back(entry.path().filename());
  }
  std::size_t removed = 0;
  for (const std::string& name : names) {
    if (name.empty() || name.front() == '.') continue;
    const fs::path dir = root / name;
    const fs::path lock = lock_path(root, name);
    UniqueFd fd(::open(lock.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // its worker is alive
    // No lock file, or one nobody holds: the worker that made it is gone.
    spdlog::warn("workspace: removing {} left by a worker that is gone", dir.string());
    unmount_all_under(dir);
    if (!remove_tree(dir)) {
      spdlog::error("workspace: cannot remove stale {}", dir.string());
      continue;
    }
    ::unlink(image_path(root, name).c_str());
    ::unlink(lock.c_str());
    ++removed;
  }
  // Images and locks whose directory is already gone (a crash between the two removals; the
  // ones the sweep above just removed with their directory are gone already).
  for (const std::string& name : names) {
    for (const char* suffix : {".img", ".lock"}) {
      const std::string s(suffix);
      if (name.size() <= s.size() + 1 || name.front() != '.' ||
          name.compare(name.size() - s.size(), s.size(), s) != 0) {
        continue;
      }
      const std::string task_id = name.substr(1, name.size() - s.size() - 1);
      if (fs::exists(fs::symlink_status(root / task_id, ec))) continue;
      UniqueFd fd(::open(lock_path(root, task_id).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
      if (fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
      ::unlink((root / name).c_str());
    }
  }
  return removed;
}

}  // namespace tamma::sandbox
