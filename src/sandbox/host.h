#pragma once
// What this host offers for isolation; used by `tamma-worker doctor` and to fail closed.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tamma::sandbox {

struct Missing {
  std::string what;         // e.g. "memory controller"
  std::string consequence;  // e.g. "tasks with resources.memory are refused"
  std::string tier;         // the isolation tier (tier.h) it keeps from the host, if one
  std::string fix;          // what an operator can do about it, if anything
};

struct HostCapabilities {
  std::string cgroup_version;  // "v1", "v2", "hybrid", "none"
  std::string cgroup_root;     // where task groups are created
  std::vector<std::string> controllers;
  bool user_ns = false, pid_ns = false, mount_ns = false, net_ns = false, ipc_ns = false,
       uts_ns = false;
  // Why a user namespace, though it can be created, is not usable (the step that failed, see
  // userns_probe.h); empty when usable or never needed (a root worker).
  std::string userns_problem;
  bool seccomp = false;
  bool clone_into_cgroup = false;
  // clone3 answers ENOSYS (a container's seccomp profile): spawns use clone(2).
  bool clone3_filtered = false;
  // Why a clone with every namespace failed (EPERM: a seccomp filter or no privilege).
  int namespace_errno = 0;
  // Landlock (landlock.h): ABI 0 when unavailable, and why (an errno).
  int landlock_abi = 0;
  int landlock_errno = 0;
  bool landlock_scopes = false;
  bool landlock_net = false;
  // CAP_SETUID and CAP_SETGID: tasks can run as a uid of their own.
  bool can_switch_ids = false;
  std::string disk_limit_method;  // "loop-ext4" or "none"
  unsigned uid = 0;
  bool root = false;
  std::string kernel;
  std::vector<Missing> missing;
};

// Everything, each answer tried for real (a child cloned into every namespace, another into
// a cgroup): for `doctor`.
HostCapabilities probe_host();
// What Sandbox::create decides with (the cgroup version, the namespaces, the user namespace's
// usability, seccomp, a filtered clone3), without the doctor-only fields (clone_into_cgroup,
// Landlock, can_switch_ids, disk_limit_method, kernel, missing). A root worker that nothing
// can refuse a namespace (no seccomp filter, CAP_SYS_ADMIN, the namespaces in the kernel and
// not limited to none) is known to get them without a fork; otherwise as probe_host. An
// answer that turns out wrong fails the task's own clone: it never loosens isolation.
HostCapabilities probe_sandbox_host();
// The tiers (tier.h) and what keeps this host from each one above its best, with its
// consequence and fix: for `doctor`.
std::vector<Missing> tier_missing(const HostCapabilities& caps);
nlohmann::json to_json(const HostCapabilities& caps);

}  // namespace tamma::sandbox
