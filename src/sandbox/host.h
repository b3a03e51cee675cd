#pragma once
// What this host offers for isolation; used by `tamma-worker doctor` and to fail closed.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tamma::sandbox {

struct Missing {
  std::string what;         // e.g. "memory controller"
  std::string consequence;  // e.g. "tasks with resources.memory are refused"
};

struct HostCapabilities {
  std::string cgroup_version;  // "v1", "v2", "hybrid", "none"
  std::string cgroup_root;     // where task groups are created
  std::vector<std::string> controllers;
  bool user_ns = false, pid_ns = false, mount_ns = false, net_ns = false, ipc_ns = false,
       uts_ns = false;
  bool seccomp = false;
  bool clone_into_cgroup = false;
  // clone3 answers ENOSYS (a container's seccomp profile): spawns use clone(2).
  bool clone3_filtered = false;
  // Why a clone with every namespace failed (EPERM: a seccomp filter or no privilege).
  int namespace_errno = 0;
  std::string disk_limit_method;  // "loop-ext4" or "none"
  unsigned uid = 0;
  bool root = false;
  std::string kernel;
  std::vector<Missing> missing;
};

HostCapabilities probe_host();
nlohmann::json to_json(const HostCapabilities& caps);

}  // namespace tamma::sandbox
