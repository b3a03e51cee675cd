#include "sandbox/mount_template.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

#include "common/error.h"
#include "sandbox/own_thread.h"

namespace tamma::sandbox {

namespace {

// A template pins the host mounts it binds: host mounts made later below them appear in
// new templates only.
constexpr auto kMaxAge = std::chrono::minutes(5);
constexpr std::size_t kMaxTemplates = 8;

struct Cache {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<const MountTemplate>> by_binds;
};

Cache& cache() {
  static auto* instance = new Cache;  // never destroyed: a spawn may outlive main
  return *instance;
}

[[noreturn]] void throw_setup(const std::string& what, int err) {
  throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
              "mount jail template: " + what + ": " + strerrordesc_np(err));
}

std::string key_of(const MountRequest& request) {
  std::string key;
  for (const auto& bind : request.readonly_binds) key += bind + '\n';
  key += '\0';
  for (const auto& [source, target] : request.readonly_binds_at) {
    key += source + '\n' + target + '\n';
  }
  // The passwd and group files of the template name the task's ids.
  key += '\0' + std::to_string(request.uid) + ':' + std::to_string(request.gid);
  return key;
}

UniqueFd build_template(const MountRequest& request) {
  std::vector<std::string> visible = request.readonly_binds;
  for (const auto& [source, target] : request.readonly_binds_at) visible.push_back(source);
  MountRequest fixed = request;
  fixed.root_mount_point = choose_root_mount_point(visible);
  fixed.device_nodes = true;  // templates are for root workers
  const MountPlan plan = build_template_plan(fixed);

  // In a thread of its own: its file system context and mount namespace stay with it.
  return in_own_thread([&plan] {
    if (::unshare(CLONE_FS | CLONE_NEWNS) != 0) throw_setup("unshare", errno);
    // The namespace, not a path: still the same namespace after pivot_root hides /proc.
    UniqueFd ns(::open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC));
    if (!ns) throw_setup("open /proc/thread-self/ns/mnt", errno);
    ::umask(022);  // the worker's own umask must not shape the jail's directories
    const MountOp* failed = nullptr;
    if (int err = apply_mount_plan(plan, nullptr, 0, &failed); err != 0) {
      throw_setup(failed != nullptr && failed->target != nullptr ? failed->target : "/", err);
    }
    return ns;
  });
}

}  // namespace

std::shared_ptr<const MountTemplate> mount_template(const MountRequest& request) {
  const std::string key = key_of(request);
  const auto now = std::chrono::steady_clock::now();
  Cache& c = cache();
  {
    std::lock_guard lock(c.mutex);
    auto found = c.by_binds.find(key);
    if (found != c.by_binds.end() && now - found->second->built < kMaxAge) return found->second;
  }
  auto made = std::make_shared<MountTemplate>();
  made->ns = build_template(request);
  made->built = now;
  std::lock_guard lock(c.mutex);
  if (c.by_binds.size() >= kMaxTemplates && c.by_binds.find(key) == c.by_binds.end()) {
    const auto oldest = std::min_element(
        c.by_binds.begin(), c.by_binds.end(),
        [](const auto& a, const auto& b) { return a.second->built < b.second->built; });
    c.by_binds.erase(oldest);  // spawns holding it keep it alive
  }
  c.by_binds[key] = made;
  return made;
}

UniqueFd detached_tree(const std::string& directory) {
  // The plan refused a symlink in the directory's place (build_task_mount_plan); not
  // following one here costs nothing.
  UniqueFd tree(static_cast<int>(
      ::syscall(SYS_open_tree, AT_FDCWD, directory.c_str(),
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW)));
  if (!tree) throw_setup("open_tree of the task's directory " + directory, errno);
  // A clone of a shared host mount would join its peer group: private, as after the
  // MS_PRIVATE that starts a jail built in place.
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  attr.propagation = MS_PRIVATE;
  if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr,
                sizeof attr) != 0) {
    throw_setup("mount_setattr of the task's directory " + directory, errno);
  }
  return tree;
}

bool mount_templates_supported() {
  static const bool supported = [] {
    // Harmless forms of each call: ENOSYS is the only answer that means "absent".
    UniqueFd root(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, "/", OPEN_TREE_CLOEXEC)));
    if (!root && errno == ENOSYS) return false;
    if (::syscall(SYS_move_mount, -1, "", -1, "", 0) != 0 && errno == ENOSYS) return false;
    struct mount_attr attr {};
    if (::syscall(SYS_mount_setattr, -1, "", 0, &attr, sizeof attr) != 0 && errno == ENOSYS) {
      return false;
    }
    return true;
  }();
  return supported;
}

}  // namespace tamma::sandbox
