// probe_host: asks the kernel, rather than guessing from versions, what isolation it gives.

#include "sandbox/host.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <optional>

#include "common/error.h"
#include "common/unique_fd.h"
#include "sandbox/cgroup_internal.h"
#include "sandbox/landlock.h"
#include "sandbox/seccomp.h"
#include "sandbox/shared_cgroups.h"
#include "sandbox/tier.h"
#include "sandbox/userns_probe.h"

namespace tamma::sandbox {

namespace {

namespace ci = cgroup_internal;

// Whether a seccomp filter answers clone3 with ENOSYS, as Docker's and podman's default
// profiles do (a filter cannot read clone3's flags, so they make runtimes fall back to
// clone(2)). Without a filter, a clone3 with no arguments is EINVAL on every kernel that has
// clone3 (5.3+), so this costs one system call and no child.
bool clone3_is_filtered() {
  return ::syscall(SYS_clone3, nullptr, std::size_t{0}) < 0 && errno == ENOSYS;
}

// A child created with `flags` that exits at once: the clone succeeding is the answer, and
// *err says why not (EPERM: a seccomp filter or no privilege; EINVAL: not in this kernel).
// With clone3 filtered, namespaces are asked of clone(2), as the sandbox then does; a
// cgroup to be born in cannot be.
bool can_clone(std::uint64_t flags, int cgroup_fd = -1, bool clone3_filtered = false,
               int* err = nullptr) {
  long pid;
  if (clone3_filtered) {
    if (cgroup_fd >= 0) {
      if (err != nullptr) *err = ENOSYS;
      return false;
    }
    pid = ::syscall(SYS_clone, static_cast<unsigned long>(flags) | SIGCHLD, nullptr, nullptr,
                    nullptr, nullptr);
  } else {
    struct clone_args args {};
    args.flags = flags;
    args.exit_signal = SIGCHLD;
    if (cgroup_fd >= 0) args.cgroup = static_cast<std::uint64_t>(cgroup_fd);
    pid = ::syscall(SYS_clone3, &args, sizeof args);
  }
  if (pid == 0) ::_exit(0);
  if (pid < 0) {
    if (err != nullptr) *err = errno;
    return false;
  }
  int status = 0;
  while (::waitpid(static_cast<pid_t>(pid), &status, 0) < 0 && errno == EINTR) {
  }
  return true;
}

bool is_cgroup2(const char* path) {
  struct statfs st {};
  return ::statfs(path, &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC;
}

// The worker's own cgroup2 directory, wherever cgroup2 is mounted (pure v2 or hybrid).
std::optional<std::string> own_cgroup2_dir() {
  auto self = ci::try_read_file("/proc/self/cgroup");
  auto mounts = ci::try_read_file("/proc/self/mountinfo");
  if (!self || !mounts) return std::nullopt;
  std::optional<std::string> own;
  for (const auto& entry : ci::parse_proc_cgroup(*self)) {
    if (entry.hierarchy_id == 0 && entry.controllers.empty()) own = entry.path;
  }
  if (!own) return std::nullopt;
  for (const auto& mount : ci::parse_mountinfo(*mounts)) {
    if (mount.fstype == "cgroup2") return ci::resolve_own(mount, *own).string();
  }
  return std::nullopt;
}

// A /proc/sys/user/max_*_namespaces above 0; false when unreadable.
bool positive_number_in(const char* file) {
  UniqueFd fd(::open(file, O_RDONLY | O_CLOEXEC));
  char text[32] = {};
  return fd && ::read(fd.get(), text, sizeof text - 1) > 0 && std::strtoull(text, nullptr, 10) > 0;
}

// A root worker's sandbox makes pid, mount, net, ipc and uts namespaces (never a user
// namespace), and the kernel refuses them only for want of CAP_SYS_ADMIN, of the namespace in
// its build, of room under /proc/sys/user/max_*_namespaces (0 disables one), or because a
// seccomp filter says no, which only a clone can tell. When none of these can stand in the
// way, the probe's fork (a copy of the worker, a network namespace made and torn down: a few
// milliseconds on a slow VM, on every `run`) answers nothing new. false: ask the kernel.
bool root_namespaces_without_fork() {
  if (::prctl(PR_GET_SECCOMP, 0, 0, 0, 0) != 0) return false;
  struct __user_cap_header_struct header {};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0 ||
      (data[CAP_SYS_ADMIN / 32].effective & (1U << (CAP_SYS_ADMIN % 32))) == 0) {
    return false;
  }
  struct Namespace {
    const char* proc_ns;
    const char* max;
  };
  for (const Namespace& ns :
       {Namespace{"/proc/self/ns/pid", "/proc/sys/user/max_pid_namespaces"},
        Namespace{"/proc/self/ns/mnt", "/proc/sys/user/max_mnt_namespaces"},
        Namespace{"/proc/self/ns/net", "/proc/sys/user/max_net_namespaces"},
        Namespace{"/proc/self/ns/ipc", "/proc/sys/user/max_ipc_namespaces"},
        Namespace{"/proc/self/ns/uts", "/proc/sys/user/max_uts_namespaces"}}) {
    if (::access(ns.proc_ns, F_OK) != 0 || !positive_number_in(ns.max)) return false;
  }
  return true;
}

bool executable_exists(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    if (::access((std::string(dir) + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// What Sandbox::create needs (host.h); `exact`: every answer from a clone (doctor).
HostCapabilities probe_isolation(bool exact) {
  HostCapabilities caps;
  caps.uid = ::geteuid();
  caps.root = caps.uid == 0;

  auto missing = [&](std::string what, std::string consequence, std::string fix = {}) {
    caps.missing.push_back({std::move(what), std::move(consequence), "", std::move(fix)});
  };

  std::string why;
  if (CgroupManager* manager = shared_cgroup_manager(&why)) {
    const bool v1 = manager->version() == CgroupVersion::kV1;
    caps.cgroup_version = v1 ? (is_cgroup2("/sys/fs/cgroup/unified") ? "hybrid" : "v1") : "v2";
    caps.cgroup_root = manager->subtree();
    caps.controllers = manager->controllers();
    auto has = [&](const char* name) {
      return std::find(caps.controllers.begin(), caps.controllers.end(), name) !=
             caps.controllers.end();
    };
    if (!has("memory")) missing("memory controller", "tasks with a memory limit are refused");
    if (!has("pids")) missing("pids controller", "tasks with a process limit are refused");
    if (!has("cpu")) missing("cpu controller", "tasks with a CPU limit are refused");
  } else {
    caps.cgroup_version = "none";
    missing("cgroups (" + why + ")",
            "every task is refused unless allowDegraded: no limits, no exact usage, no "
            "guaranteed kill");
  }

  // Without root, the other namespaces can only be had inside a new user namespace.
  // One clone with every namespace answers for all of them on a host that has them (each
  // probe is a fork of the worker, and `run` pays for them on every start); only when it
  // fails is each namespace tried alone, to name what is missing.
  constexpr std::uint64_t kAll =
      CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
  caps.clone3_filtered = clone3_is_filtered();
  const bool f = caps.clone3_filtered;
  if (!exact && caps.root && root_namespaces_without_fork()) {
    // The user namespace is not the sandbox's for a root worker: told from the kernel's
    // build and limit alone (doctor tries it).
    caps.pid_ns = caps.mount_ns = caps.net_ns = caps.ipc_ns = caps.uts_ns = true;
    caps.user_ns = ::access("/proc/self/ns/user", F_OK) == 0 &&
                   positive_number_in("/proc/sys/user/max_user_namespaces");
  } else if (can_clone(kAll, -1, f, &caps.namespace_errno)) {
    caps.user_ns = caps.pid_ns = caps.mount_ns = caps.net_ns = caps.ipc_ns = caps.uts_ns = true;
    caps.namespace_errno = 0;
  } else {
    caps.user_ns = can_clone(CLONE_NEWUSER, -1, f);
    const std::uint64_t base = caps.root ? 0 : CLONE_NEWUSER;
    caps.pid_ns = can_clone(base | CLONE_NEWPID, -1, f);
    caps.mount_ns = can_clone(base | CLONE_NEWNS, -1, f);
    caps.net_ns = can_clone(base | CLONE_NEWNET, -1, f);
    caps.ipc_ns = can_clone(base | CLONE_NEWIPC, -1, f);
    caps.uts_ns = can_clone(base | CLONE_NEWUTS, -1, f);
  }
  // A worker that is not root isolates through a user namespace; that one can be created
  // says little (AppArmor on Ubuntu lets the clone succeed and denies what comes after), so
  // each step is tried.
  if (caps.user_ns && !caps.root) {
    const UsernsProbe probe = probe_userns();
    if (!probe.usable()) {
      caps.user_ns = false;
      caps.userns_problem = probe.problem();
      missing(caps.userns_problem, "the worker is not root: isolated tasks are refused",
              probe.fix());
    }
  } else if (!caps.user_ns && !caps.root) {
    missing("user namespace", "the worker is not root: isolated tasks are refused",
            UsernsProbe{.created = false, .err = EPERM}.fix());
  }
  if (!caps.pid_ns || !caps.mount_ns) {
    missing("pid or mount namespace", "isolated tasks are refused");
  }
  if (!caps.net_ns) missing("network namespace", "tasks without network are refused");
  if (!caps.ipc_ns) missing("ipc namespace", "isolated tasks are refused");
  if (!caps.uts_ns) missing("uts namespace", "isolated tasks are refused");

  caps.seccomp = seccomp_available();
  if (!caps.seccomp) missing("seccomp filters", "isolated tasks are refused");
  return caps;
}

}  // namespace

HostCapabilities probe_sandbox_host() { return probe_isolation(/*exact=*/false); }

HostCapabilities probe_host() {
  HostCapabilities caps = probe_isolation(/*exact=*/true);
  struct utsname uts {};
  if (::uname(&uts) == 0) caps.kernel = uts.release;
  const bool f = caps.clone3_filtered;
  auto missing = [&](std::string what, std::string consequence, std::string fix = {}) {
    caps.missing.push_back({std::move(what), std::move(consequence), "", std::move(fix)});
  };
  if (auto dir = own_cgroup2_dir()) {
    UniqueFd fd(::open(dir->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    caps.clone_into_cgroup = fd && can_clone(CLONE_INTO_CGROUP, fd.get(), f);
  }
  if (caps.clone3_filtered) {
    // Not a loss of isolation: the sandbox falls back to clone(2) and places tasks in their
    // group by writing cgroup.procs. Listed so that a slower start is explained.
    missing("clone3 (filtered: ENOSYS from a seccomp profile)",
            "sandboxes start with clone(2), as copies of the worker rather than sharing its "
            "memory: slower starts");
  } else if (!caps.clone_into_cgroup && caps.cgroup_version == "v2") {
    missing("clone3 CLONE_INTO_CGROUP (Linux 5.7+)",
            "tasks cannot be started on this cgroup v2 host: every spawn fails");
  }

  const LandlockSupport landlock = probe_landlock();
  caps.landlock_abi = landlock.abi;
  caps.landlock_errno = landlock.err;
  caps.landlock_scopes = landlock.scopes;
  caps.landlock_net = landlock.net;
  {
    struct __user_cap_header_struct header {};
    header.version = _LINUX_CAPABILITY_VERSION_3;
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &header, data) == 0) {
      auto has = [&](int cap) { return (data[cap / 32].effective & (1U << (cap % 32))) != 0; };
      caps.can_switch_ids = has(CAP_SETUID) && has(CAP_SETGID);
    }
  }

  const bool loop = ::access("/dev/loop-control", F_OK) == 0;
  const bool mkfs = executable_exists("mkfs.ext4");
  caps.disk_limit_method = loop && mkfs && caps.root ? "loop-ext4" : "none";
  if (caps.disk_limit_method == "none") {
    missing(!caps.root ? "root (for loop mounts)"
            : !loop    ? "/dev/loop-control"
                       : "mkfs.ext4",
            "tasks with a disk limit are refused");
  }
  return caps;
}

std::vector<Missing> tier_missing(const HostCapabilities& caps) {
  std::vector<Missing> out;
  const Tier best = choose_tier(caps);
  if (best < Tier::kFull) {
    out.push_back({missing_for(Tier::kFull, caps),
                   "no loop-mounted disk limits and no pooled network namespaces; limits need "
                   "a delegated cgroup",
                   "full", "run the worker as root on a host (or a privileged container)"});
  }
  if (best < Tier::kRootless) {
    std::string what = missing_for(Tier::kRootless, caps);
    if (caps.namespace_errno != 0) {
      what += std::string(" (clone: ") + strerrorname_np(caps.namespace_errno) +
              (caps.namespace_errno == EPERM ? ", a seccomp profile or no privilege)" : ")");
    }
    out.push_back({what,
                   "no mount, pid or network isolation: host paths are visible (Landlock keeps "
                   "them unreadable), /tmp is not private, no loopback for tasks without network",
                   "rootless",
                   "run the pod with a seccomp profile that allows CLONE_NEWUSER (or "
                   "Unconfined) and unprivileged user namespaces, or run on a host"});
  }
  if (best <= Tier::kUnprivileged) {
    if (caps.landlock_abi == 0) {
      LandlockSupport landlock;
      landlock.err = caps.landlock_errno;
      out.push_back({landlock.why_unavailable(),
                     "tasks are refused unless allowDegraded: nothing would confine their reads "
                     "and writes",
                     "unprivileged", "Linux 5.13+ with landlock in the lsm= boot parameter"});
    }
    if (caps.cgroup_version == "none") {
      out.push_back({"memory, pids and cpu controllers (cgroup filesystem read-only)",
                     "tasks with these limits are refused (exit 6) unless allowDegraded",
                     "unprivileged",
                     "limit the container itself (docker run --memory, --pids-limit)"});
    }
    if (!caps.landlock_scopes && !caps.can_switch_ids) {
      out.push_back({"signal scoping (Landlock ABI 6, Linux 6.12) or a distinct task uid",
                     "a task could signal the worker: refused unless allowDegraded", "unprivileged",
                     "Linux 6.12+, or run the worker as root with CAP_SETUID"});
    }
  }
  if (best == Tier::kNone) {
    out.push_back({"seccomp filters", "every isolated task is refused", "unprivileged",
                   "a kernel with CONFIG_SECCOMP_FILTER"});
  }
  return out;
}

nlohmann::json to_json(const HostCapabilities& caps) {
  nlohmann::json missing = nlohmann::json::array();
  for (const auto& m : caps.missing) {
    nlohmann::json item{{"what", m.what}, {"consequence", m.consequence}};
    if (!m.tier.empty()) item["tier"] = m.tier;
    if (!m.fix.empty()) item["fix"] = m.fix;
    missing.push_back(std::move(item));
  }
  return {
      {"cgroupVersion", caps.cgroup_version},
      {"cgroupRoot", caps.cgroup_root},
      {"controllers", caps.controllers},
      {"namespaces",
       {{"user", caps.user_ns},
        {"pid", caps.pid_ns},
        {"mount", caps.mount_ns},
        {"net", caps.net_ns},
        {"ipc", caps.ipc_ns},
        {"uts", caps.uts_ns}}},
      {"seccomp", caps.seccomp},
      {"cloneIntoCgroup", caps.clone_into_cgroup},
      {"clone3Filtered", caps.clone3_filtered},
      {"landlock",
       {{"abi", caps.landlock_abi}, {"scopes", caps.landlock_scopes}, {"net", caps.landlock_net}}},
      {"diskLimitMethod", caps.disk_limit_method},
      {"uid", caps.uid},
      {"root", caps.root},
      {"kernel", caps.kernel},
      {"missing", missing},
  };
}

}  // namespace tamma::sandbox
