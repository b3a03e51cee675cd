#include "sandbox/mount.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>

#include <fmt/format.h>

#include "common/error.h"
#include "sandbox/sandbox.h"
#include "sandbox/workspace.h"

namespace tamma::sandbox {
namespace fs = std::filesystem;

namespace {

// Devices a build needs; anything else (block devices, /dev/mem, ...) stays out.
constexpr const char* kDevices[] = {"null", "zero", "full", "random", "urandom", "tty"};

class PlanBuilder {
 public:
  explicit PlanBuilder(std::string root) : root_(std::move(root)) {}

  const char* keep(std::string text) { return plan_.strings.emplace_back(std::move(text)).c_str(); }
  const char* inside(const std::string& path) { return keep(root_ + path); }

  void add(MountOp op) { plan_.ops.push_back(op); }
  // The index of a new detached tree of host directory `source` (MountPlan::trees).
  int add_tree(std::string source) {
    plan_.trees.push_back(std::move(source));
    return static_cast<int>(plan_.trees.size()) - 1;
  }

  // mkdir -p of `path` (absolute, inside the new root) without its last component.
  void parents(const std::string& path) {
    for (std::size_t slash = path.find('/', 1); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      std::string dir = path.substr(0, slash);
      if (made_.insert(dir).second) add({.kind = MountOpKind::kMkdir, .target = inside(dir)});
    }
  }
  void mkdir(const std::string& path, mode_t mode = 0755) {
    parents(path);
    if (made_.insert(path).second) {
      add({.kind = MountOpKind::kMkdir, .target = inside(path), .mode = mode});
    }
  }

  MountPlan take() { return std::move(plan_); }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  MountPlan plan_;
  std::set<std::string> made_;
};

std::string normalized_absolute(const std::string& path, const char* what) {
  fs::path p(path);
  if (!p.is_absolute()) {
    throw Error(ErrorKind::kSandboxSetup, "sandbox_bad_path",
                std::string(what) + " must be an absolute path: " + path);
  }
  std::string text = p.lexically_normal().string();
  while (text.size() > 1 && text.back() == '/') text.pop_back();
  return text;
}

bool is_inside(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

long sys_mount_setattr(const char* path, unsigned int at_flags, std::uint64_t set) {
  struct mount_attr attr {};
  attr.attr_set = set;
  return ::syscall(SYS_mount_setattr, AT_FDCWD, path, at_flags, &attr, sizeof attr);
}

// Mount flags the kernel requires a bind remount to keep (they are locked when the mount
// came from a more privileged namespace); statfs reports them as ST_* which equal MS_*.
unsigned long locked_flags(const char* path) {
  struct statfs st {};
  if (::statfs(path, &st) != 0) return 0;
  return st.f_flags &
         (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY | MS_NOATIME | MS_NODIRATIME | MS_RELATIME);
}

int apply_bind_attributes(const MountOp& op) {
  if (op.flags == 0) return 0;
  std::uint64_t set = 0;
  if (op.flags & MS_RDONLY) set |= MOUNT_ATTR_RDONLY;
  if (op.flags & MS_NOSUID) set |= MOUNT_ATTR_NOSUID;
  if (op.flags & MS_NODEV) set |= MOUNT_ATTR_NODEV;
  if (op.flags & MS_NOEXEC) set |= MOUNT_ATTR_NOEXEC;
  // mount_setattr changes a whole bound tree at once; a remount would leave submounts
  // (e.g. a bind-mounted /etc/resolv.conf) writable.
  if (sys_mount_setattr(op.target, op.recursive ? AT_RECURSIVE : 0, set) == 0) return 0;
  if (errno != ENOSYS) return errno;
  const unsigned long flags = MS_BIND | MS_REMOUNT | op.flags | locked_flags(op.target);
  return ::mount(nullptr, op.target, nullptr, flags, nullptr) == 0 ? 0 : errno;
}

int apply_one(const MountOp& op, const int* trees, int tree_count) {
  switch (op.kind) {
    case MountOpKind::kMakePrivate:
      return ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 ? 0 : errno;
    case MountOpKind::kTmpfs:
      return ::mount("tmpfs", op.target, "tmpfs", op.flags, op.data) == 0 ? 0 : errno;
    case MountOpKind::kMkdir:
      if (::mkdir(op.target, op.mode) == 0 || errno == EEXIST) return 0;
      return errno;
    case MountOpKind::kTouch: {
      int fd = ::open(op.target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd < 0) return errno == EEXIST ? 0 : errno;
      ::close(fd);
      return 0;
    }
    case MountOpKind::kSymlink:
      if (::symlink(op.source, op.target) == 0 || errno == EEXIST) return 0;
      return errno;
    case MountOpKind::kBind:
      if (::mount(op.source, op.target, nullptr, MS_BIND | (op.recursive ? MS_REC : 0), nullptr) !=
          0) {
        return errno;
      }
      return apply_bind_attributes(op);
    case MountOpKind::kProc: {
      const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
      // hidepid hides the processes of other uids (PID 1 runs as root): older kernels know
      // only the numeric form, very old ones neither.
      for (const char* data : {"hidepid=invisible", "hidepid=2"}) {
        if (::mount("proc", op.target, "proc", flags, data) == 0) return 0;
        if (errno != EINVAL) return errno;
      }
      return ::mount("proc", op.target, "proc", flags, nullptr) == 0 ? 0 : errno;
    }
    case MountOpKind::kRemountRo: {
      const unsigned long flags = op.flags != 0 ? op.flags : MS_RDONLY | MS_NOSUID | MS_NODEV;
      return ::mount(nullptr, op.target, nullptr, MS_BIND | MS_REMOUNT | flags, nullptr) == 0
                 ? 0
                 : errno;
    }
    case MountOpKind::kDeviceNode:
      // The umask must not narrow a device's permissions (the host's /dev/null is 0666).
      if (::mknod(op.target, op.mode, op.device) != 0) return errno;
      return ::chmod(op.target, op.mode & 07777) == 0 ? 0 : errno;
    case MountOpKind::kWriteFile: {
      const int fd =
          ::open(op.target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, op.mode);
      if (fd < 0) return errno;
      std::size_t left = 0;
      while (op.data[left] != '\0') ++left;
      const char* next = op.data;
      while (left > 0) {
        const ssize_t n = ::write(fd, next, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          const int err = n < 0 ? errno : EIO;
          ::close(fd);
          return err;
        }
        next += n;
        left -= static_cast<std::size_t>(n);
      }
      return ::close(fd) == 0 ? 0 : errno;
    }
    case MountOpKind::kUnmount:
      return ::umount2(op.target, MNT_DETACH) == 0 ? 0 : errno;
    case MountOpKind::kDevpts:
      return ::mount("devpts", op.target, "devpts", op.flags, op.data) == 0 ? 0 : errno;
    case MountOpKind::kAttachTree:
      if (op.tree < 0 || op.tree >= tree_count) return EBADF;
      if (::syscall(SYS_move_mount, trees[op.tree], "", AT_FDCWD, op.target,
                    MOVE_MOUNT_F_EMPTY_PATH) != 0) {
        return errno;
      }
      return 0;
    case MountOpKind::kPivot:
      // pivot_root(".", ".") stacks the old root on the new one, so no put_old directory is
      // needed; detaching "." then drops the whole host tree from this namespace.
      if (::chdir(op.target) != 0) return errno;
      if (::syscall(SYS_pivot_root, ".", ".") != 0) return errno;
      if (::umount2(".", MNT_DETACH) != 0) return errno;
      return ::chdir("/") == 0 ? 0 : errno;
  }
  return EINVAL;
}

}  // namespace

std::string choose_root_mount_point(const std::vector<std::string>& must_stay_visible) {
  // Directories every distribution has and no build reads from inside the sandbox: the
  // mount namespace is private, so mounting over one hides nothing on the host.
  for (const char* candidate :
       {"/mnt", "/media", "/srv", "/opt", "/boot", "/run", "/var/empty", "/tmp", "/proc"}) {
    struct stat st {};
    if (::lstat(candidate, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    bool hides = std::any_of(must_stay_visible.begin(), must_stay_visible.end(),
                             [&](const std::string& path) { return is_inside(path, candidate); });
    if (!hides) return candidate;
  }
  throw Error(ErrorKind::kSandboxSetup, "sandbox_unavailable",
              "no host directory can hold the sandbox root without hiding a bind source");
}

namespace {

// Where the jail mounts something of its own: a read-only bind there would hide it, or be
// hidden. A bind of HOME's parent (/home) would also leave no room to make HOME in.
bool shadows_sandbox_mount(const std::string& path) {
  return path == "/" || is_inside(path, "/proc") || is_inside(path, "/dev") ||
         is_inside(path, kSandboxWorkspace) || is_inside(path, "/tmp") || path == "/var/tmp" ||
         is_inside(path, kSandboxHome) || is_inside(kSandboxHome, path);
}

// A read-only bind below /var/tmp (an external handler kept there, say) must be mounted on
// top of the task's own /var/tmp, after it: it cannot be part of a template.
bool below_var_tmp(const std::string& path) { return is_inside(path, "/var/tmp"); }

// The host's directories, read-only, as the policy lists them: those below /var/tmp
// (`below_var_tmp`), or all the others.
void add_readonly_binds(PlanBuilder& b, const MountRequest& request, bool below_var_tmp_only) {
  // Parents before children, so a bind below another bind lands on top of it.
  std::vector<std::string> binds;
  for (const auto& bind : request.readonly_binds) {
    std::string path = normalized_absolute(bind, "bind");
    if (below_var_tmp(path) == below_var_tmp_only) binds.push_back(std::move(path));
  }
  std::sort(binds.begin(), binds.end());
  binds.erase(std::unique(binds.begin(), binds.end()), binds.end());
  for (const auto& path : binds) {
    if (shadows_sandbox_mount(path)) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_bad_path",
                  "read-only bind would shadow a sandbox mount: " + path);
    }
    std::error_code ec;
    const auto status = fs::symlink_status(path, ec);
    if (ec || !fs::exists(status)) continue;  // the policy lists what may exist
    b.parents(path);
    if (fs::is_symlink(status)) {
      // Merged-/usr layouts (/lib -> usr/lib): a bind would follow the link and duplicate
      // the tree; the link itself resolves against the binds inside.
      b.add({.kind = MountOpKind::kSymlink,
             .source = b.keep(fs::read_symlink(path).string()),
             .target = b.inside(path)});
      continue;
    }
    if (fs::is_directory(status)) {
      b.mkdir(path);
    } else {
      b.add({.kind = MountOpKind::kTouch, .target = b.inside(path)});
    }
    b.add({.kind = MountOpKind::kBind,
           .source = b.keep(path),
           .target = b.inside(path),
           .flags = MS_RDONLY | MS_NOSUID | MS_NODEV,
           .recursive = true});
  }

  for (const auto& [source_path, target_path] : request.readonly_binds_at) {
    const std::string source = normalized_absolute(source_path, "bind source");
    const std::string target = normalized_absolute(target_path, "bind target");
    if (below_var_tmp(target) != below_var_tmp_only) continue;
    if (shadows_sandbox_mount(target)) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_bad_path",
                  "read-only bind would shadow a sandbox mount: " + target);
    }
    std::error_code ec;
    const auto status = fs::status(source, ec);
    if (ec || !fs::exists(status)) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_bad_path",
                  "read-only bind source does not exist: " + source);
    }
    if (fs::is_directory(status)) {
      b.mkdir(target);
    } else {
      b.parents(target);
      b.add({.kind = MountOpKind::kTouch, .target = b.inside(target)});
    }
    b.add({.kind = MountOpKind::kBind,
           .source = b.keep(source),
           .target = b.inside(target),
           .flags = MS_RDONLY | MS_NOSUID | MS_NODEV,
           .recursive = true});
  }
}

// A minimal /dev: a few host devices bound onto a small tmpfs, and the usual links.
void add_dev(PlanBuilder& b, bool device_nodes) {
  b.mkdir("/dev");
  b.add({.kind = MountOpKind::kTmpfs,
         .target = b.inside("/dev"),
         .data = "mode=0755,size=64k,nr_inodes=64",
         .flags = MS_NOSUID | MS_NOEXEC});
  for (const char* device : kDevices) {
    const std::string host = std::string("/dev/") + device;
    struct stat st {};
    if (::stat(host.c_str(), &st) != 0 || !S_ISCHR(st.st_mode)) continue;
    if (device_nodes) {
      b.add({.kind = MountOpKind::kDeviceNode,
             .target = b.inside(host),
             .mode = st.st_mode & (S_IFMT | 0777),
             .device = st.st_rdev});
      continue;
    }
    b.add({.kind = MountOpKind::kTouch, .target = b.inside(host)});
    // No attributes to set: a device node is neither run nor setuid, and nodev would
    // make it useless.
    b.add({.kind = MountOpKind::kBind, .source = b.keep(host), .target = b.inside(host)});
  }
  // /dev/ptmx leads to the devpts instance each task mounts on /dev/pts (add_task_filesystems),
  // as the kernel's documentation for private instances recommends.
  for (auto [name, target] : {std::pair{"fd", "/proc/self/fd"},
                              {"stdin", "/proc/self/fd/0"},
                              {"stdout", "/proc/self/fd/1"},
                              {"stderr", "/proc/self/fd/2"},
                              {"ptmx", "pts/ptmx"}}) {
    b.add({.kind = MountOpKind::kSymlink,
           .source = target,
           .target = b.inside(std::string("/dev/") + name)});
  }
  b.mkdir("/dev/shm", 01777);
  b.mkdir("/dev/pts", 0755);
}

// A read-write bind of the task's own directories.
void bind_writable(PlanBuilder& b, const std::string& source, const char* target) {
  b.add({.kind = MountOpKind::kBind,
         .source = b.keep(source),
         .target = b.inside(target),
         .flags = MS_NOSUID | MS_NODEV,
         .recursive = true});
}

void add_tmpfs(PlanBuilder& b, const char* target, const std::string& data) {
  b.add({.kind = MountOpKind::kTmpfs,
         .target = b.inside(target),
         .data = b.keep(data),
         .flags = MS_NOSUID | MS_NODEV});
}

// What belongs to one task alone: its workspace; its HOME, /tmp and /var/tmp, on its own
// filesystem next to the workspace (or tmpfs without one); a /proc of its own pid namespace,
// a /dev/shm, and a devpts instance of its own. The mount points exist already.
//
// `from_tree`: each of them comes as a detached tree of its own (MountPlan::trees), moved to
// its place (a copy of the template cannot see host paths). One tree of the task directory,
// attached somewhere to bind the pieces from and then unmounted, would cost every start the
// RCU grace period an unmount waits for.
void add_task_filesystems(PlanBuilder& b, const MountRequest& request, bool from_tree) {
  const std::string workspace = normalized_absolute(request.workspace, "workspace");
  std::string task_dir;
  if (!request.task_dir.empty()) {
    task_dir = normalized_absolute(request.task_dir, "task directory");
    if (workspace == task_dir || !is_inside(workspace, task_dir)) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_bad_path",
                  "the workspace " + workspace + " is not inside the task directory " + task_dir);
    }
  }
  const std::string size = ",size=" + std::to_string(request.tmp_bytes);

  // The task's own directory `source` (a host path) at `target` inside the jail.
  auto writable = [&](const std::string& source, const char* target) {
    // Checked here, once, for both ways of building the jail: a bind by host path would
    // follow a symlink left in the directory's place.
    struct stat st {};
    if (::lstat(source.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_bad_path",
                  "the task's directory " + source + " is not a directory" +
                      (S_ISLNK(st.st_mode) ? " (a symlink is not followed)" : ""));
    }
    if (from_tree) {
      b.add({.kind = MountOpKind::kAttachTree,
             .target = b.inside(target),
             .tree = b.add_tree(source)});
    } else {
      bind_writable(b, source, target);
    }
  };
  writable(workspace, kSandboxWorkspace);
  if (task_dir.empty()) {
    add_tmpfs(b, kSandboxHome,
              "mode=0755,uid=" + std::to_string(request.uid) +
                  ",gid=" + std::to_string(request.gid) + size);
  } else {
    writable(task_dir + "/" + kHomeDir, kSandboxHome);
  }
  if (task_dir.empty() || request.tmp_on_tmpfs) {
    add_tmpfs(b, "/tmp", "mode=1777" + size);
    add_tmpfs(b, "/var/tmp", "mode=1777" + size);
  } else {
    writable(task_dir + "/" + kTmpDir, "/tmp");
    writable(task_dir + "/" + kVarTmpDir, "/var/tmp");
  }
  if (!from_tree) {
    // Their mount points are made in the task's /var/tmp, and go with it.
    add_readonly_binds(b, request, /*below_var_tmp_only=*/true);
  }

  b.add({.kind = MountOpKind::kProc, .target = b.inside("/proc")});
  add_tmpfs(b, "/dev/shm", "mode=1777" + size);
  // newinstance: the task's ptys are its own, not the host's nor another task's. No gid=
  // option: the tty group need not be mapped in a user namespace, and the slave then belongs
  // to the opener's group, which mode=0620 leaves to it alone.
  b.add({.kind = MountOpKind::kDevpts,
         .target = b.inside("/dev/pts"),
         .data = "newinstance,ptmxmode=0666,mode=0620",
         .flags = MS_NOSUID | MS_NOEXEC});
}

void add_mount_points(PlanBuilder& b, bool device_nodes) {
  b.mkdir(kSandboxWorkspace);
  b.mkdir(kSandboxHome);
  b.mkdir("/tmp", 01777);
  b.mkdir("/var/tmp", 01777);
  b.mkdir("/proc", 0555);
  add_dev(b, device_nodes);
}

// The accounts the jail shows: root, the task's user with its HOME, and nobody/nogroup for
// the ids a user namespace leaves unmapped. The host's own files name other users and homes
// (uid 65534 is "nobody" with home /nonexistent there).
std::string passwd_text(uid_t uid, gid_t gid) {
  std::string text;
  if (uid != 0) text += "root:x:0:0:root:/root:/bin/sh\n";
  text += fmt::format("{}:x:{}:{}:{}:{}:/bin/sh\n", uid == 0 ? "root" : kSandboxUser, uid, gid,
                      kSandboxUser, kSandboxHome);
  if (uid != 65534) text += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
  return text;
}

std::string group_text(gid_t gid) {
  std::string text;
  if (gid != 0) text += "root:x:0:\n";
  text += fmt::format("{}:x:{}:\n", gid == 0 ? "root" : kSandboxUser, gid);
  if (gid != 65534) text += "nogroup:x:65534:\n";
  return text;
}

// /etc/passwd and /etc/group of the jail: written to a small tmpfs on the still empty /proc,
// bound read-only over the host's files, and the tmpfs detached again (the binds keep it).
void add_identity(PlanBuilder& b, const MountRequest& request) {
  std::vector<std::string> binds;
  for (const auto& bind : request.readonly_binds) {
    binds.push_back(normalized_absolute(bind, "bind"));
  }
  const std::string staging = "/proc";
  b.add({.kind = MountOpKind::kTmpfs,
         .target = b.inside(staging),
         .data = "mode=0755,size=64k,nr_inodes=16",
         .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC});
  for (const auto& [name, text] : {std::pair{"passwd", passwd_text(request.uid, request.gid)},
                                   std::pair{"group", group_text(request.gid)}}) {
    const std::string file = std::string("/etc/") + name;
    const bool bound = std::any_of(binds.begin(), binds.end(),
                                   [&](const std::string& bind) { return is_inside(file, bind); });
    if (bound) {
      // Inside a read-only bind of the host's /etc: only a file that is there can be covered,
      // and a symlink would lead the bind out of the jail.
      struct stat st {};
      if (::lstat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    } else {
      b.parents(file);
      b.add({.kind = MountOpKind::kTouch, .target = b.inside(file)});
    }
    const std::string source = staging + "/" + name;
    b.add({.kind = MountOpKind::kWriteFile,
           .target = b.inside(source),
           .data = b.keep(text),
           .mode = 0644});
    b.add({.kind = MountOpKind::kBind,
           .source = b.inside(source),
           .target = b.inside(file),
           .flags = MS_RDONLY | MS_NOSUID | MS_NODEV});
  }
  b.add({.kind = MountOpKind::kUnmount, .target = b.inside(staging)});
}

void add_new_root(PlanBuilder& b) {
  b.add({.kind = MountOpKind::kMakePrivate});
  b.add({.kind = MountOpKind::kTmpfs,
         .target = b.keep(b.root()),
         .data = "mode=0755,size=1m,nr_inodes=4096",
         .flags = MS_NOSUID | MS_NODEV});
}

// The root and /dev hold nothing a task writes: read-only, also for PID 1, which is root.
void add_read_only_remounts(PlanBuilder& b) {
  b.add({.kind = MountOpKind::kRemountRo,
         .target = b.inside("/dev"),
         .flags = MS_RDONLY | MS_NOSUID | MS_NOEXEC});
  b.add({.kind = MountOpKind::kRemountRo, .target = b.keep(b.root())});
}

}  // namespace

bool fits_a_template(const MountRequest& request) {
  const auto below = [](const std::string& path) {
    return below_var_tmp(fs::path(path).lexically_normal().string());
  };
  return std::none_of(request.readonly_binds.begin(), request.readonly_binds.end(), below) &&
         std::none_of(request.readonly_binds_at.begin(), request.readonly_binds_at.end(),
                      [&](const auto& bind) { return below(bind.second); });
}

MountPlan build_mount_plan(const MountRequest& request) {
  PlanBuilder b(normalized_absolute(request.root_mount_point, "root mount point"));
  add_new_root(b);
  add_readonly_binds(b, request, /*below_var_tmp_only=*/false);
  add_mount_points(b, request.device_nodes);
  add_identity(b, request);
  add_task_filesystems(b, request, /*from_tree=*/false);
  add_read_only_remounts(b);
  b.add({.kind = MountOpKind::kPivot, .target = b.keep(b.root())});
  return b.take();
}

MountPlan build_template_plan(const MountRequest& request) {
  if (!fits_a_template(request)) {
    throw Error(ErrorKind::kSandboxSetup, "sandbox_bad_path",
                "a read-only bind below /var/tmp cannot be part of a jail template");
  }
  PlanBuilder b(normalized_absolute(request.root_mount_point, "root mount point"));
  add_new_root(b);
  add_readonly_binds(b, request, /*below_var_tmp_only=*/false);
  add_mount_points(b, request.device_nodes);
  add_identity(b, request);
  // Every task's copy shares these file systems (a copied mount keeps its superblock).
  add_read_only_remounts(b);
  b.add({.kind = MountOpKind::kPivot, .target = b.keep(b.root())});
  return b.take();
}

MountPlan build_task_mount_plan(const MountRequest& request) {
  PlanBuilder b("");
  add_task_filesystems(b, request, /*from_tree=*/true);
  return b.take();
}

int apply_mount_plan(const MountPlan& plan, const int* trees, int tree_count,
                     const MountOp** failed) {
  for (const MountOp& op : plan.ops) {
    int err = apply_one(op, trees, tree_count);
    if (err != 0 && !op.optional) {
      *failed = &op;
      return err;
    }
  }
  return 0;
}

}  // namespace tamma::sandbox
