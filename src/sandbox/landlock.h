#pragma once
// Landlock for the unprivileged tier (ADR 0030): without a mount namespace the task sees the
// host's files, so Landlock decides what it may read, run and write. The parent builds the
// ruleset (an fd) per spawn; the child only calls landlock_restrict_self (ADR 0009).

#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace tamma::sandbox {

struct LandlockSupport {
  int abi = 0;          // 0: unavailable
  int err = 0;          // why unavailable: ENOSYS not built, EOPNOTSUPP not in lsm=, EPERM seccomp
  bool scopes = false;  // LANDLOCK_SCOPE_SIGNAL and ABSTRACT_UNIX_SOCKET (ABI 6)
  bool net = false;     // TCP bind/connect rights (ABI 4)
  [[nodiscard]] std::string why_unavailable() const;
};

// Asks the kernel (landlock_create_ruleset's version query), and for scoping creates a
// ruleset with `scoped` set, since a reported ABI is not proof of every feature.
LandlockSupport probe_landlock();

// Every filesystem right Landlock ABI `abi` knows: what a ruleset handles, so that anything
// not granted below is denied. ABI 1 has 13 rights, 2 adds REFER, 3 TRUNCATE, 5 IOCTL_DEV.
std::uint64_t landlock_fs_rights(int abi);

struct LandlockPlan {
  int abi = 0;
  // Read, list and execute.
  std::vector<std::string> read_exec;
  // Read and list only (/proc, /sys).
  std::vector<std::string> read_only;
  // Everything but creating device nodes: the task's workspace and its own directories.
  std::vector<std::string> writable;
  // Read and write files, and ioctl (terminals): /dev/null and the like.
  std::vector<std::string> devices;
  // Handle TCP bind and connect with no port allowed (ABI 4): no network.
  bool deny_tcp = false;
  // Keep the task from signalling processes outside its own domain, the worker included,
  // and from abstract unix sockets outside it (ABI 6).
  bool scope = false;
};

// Parent side: the ruleset fd, with a rule per existing path (missing paths are skipped).
// Throws Error(kSandboxSetup) naming the path when the kernel refuses a rule.
UniqueFd build_landlock_ruleset(const LandlockPlan& plan);

// Child side, raw system call: confines the calling thread and its future children.
// no_new_privs must be set. Returns 0 or an errno.
int landlock_enter(int ruleset_fd);

}  // namespace tamma::sandbox
