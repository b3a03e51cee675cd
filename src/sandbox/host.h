#pragma once
// What this host offers for isolation; used by `tamma-worker doctor` and to fail closed.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tamma::sandbox {

struct Missing {
  std::string what;         // e.g. "memory controller"
  std::string consequence;  // e.g. "tasks with resources.memory are refused"
  std::string fix;          // what an operator can do about it; empty when nothing is known
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
  std::string disk_limit_method;  // "loop-ext4" or "none"
  unsigned uid = 0;
  bool root = false;
  std::string kernel;
  std::vector<Missing> missing;
};

HostCapabilities probe_host();
nlohmann::json to_json(const HostCapabilities& caps);

}  // namespace tamma::sandbox
