#pragma once
// Internal to the sandbox: one cgroup per task, on v1 or v2, behind one interface.

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "sandbox/types.h"

namespace tamma::sandbox {

enum class CgroupVersion { kV1, kV2 };
enum class TreeKill { kByGroup, kByPidNamespace };

// The cgroup of one task. Destruction kills what is left and removes the group
// (retrying while the kernel still reports it busy); it never throws.
class Cgroup {
 public:
  virtual ~Cgroup() = default;

  // Directory fd for clone3(CLONE_INTO_CGROUP) on v2; -1 on v1.
  [[nodiscard]] virtual int clone_into_fd() const = 0;
  // Moves a process into the group (every hierarchy on v1). Must happen before it execs.
  virtual void add_process(pid_t pid) = 0;
  // v1: every hierarchy's cgroup.procs, open for writing, for a process that enters the
  // group itself by writing "0" to each. Empty on v2, where clone_into_fd() serves.
  [[nodiscard]] virtual std::vector<UniqueFd> open_procs_files() const = 0;
  [[nodiscard]] virtual std::vector<pid_t> processes() const = 0;
  // Sends `sig` to every process in the group.
  virtual void signal_all(int sig) = 0;
  // SIGKILLs every process, escapees included (v2 cgroup.kill; v1 freeze, kill, thaw),
  // and returns once the group is empty.
  virtual void kill_all() = 0;
  [[nodiscard]] virtual Usage usage() const = 0;
  [[nodiscard]] virtual std::string path() const = 0;  // for logs and diagnostics
};

// Per-worker owner of the cgroup subtree in which task groups are created.
class CgroupManager {
 public:
  virtual ~CgroupManager() = default;

  // Detects v1, v2 or hybrid (statfs on /sys/fs/cgroup), finds the worker's own groups
  // from /proc/self/cgroup, prepares the subtree (on v2: moves the worker into a leaf so
  // controllers can be enabled) and removes groups left by workers that died.
  // Throws Error(kSandboxSetup) naming what is missing.
  static std::unique_ptr<CgroupManager> create(const std::string& root_override = "");

  [[nodiscard]] virtual CgroupVersion version() const = 0;
  // Controllers usable for task limits: any of "memory", "pids", "cpu", "cpuacct", "freezer".
  [[nodiscard]] virtual std::vector<std::string> controllers() const = 0;
  // Where this worker's task groups are created (on v1, in the memory hierarchy if mounted).
  [[nodiscard]] virtual std::string subtree() const = 0;
  // Creates a group, applies `limits` (throws Error(kSandboxSetup) when one cannot be set).
  // `kill` says what ends the task's processes besides the group's kill_all: with a pid
  // namespace (which no process can leave, and which dies with its PID 1) v1 does without
  // a freezer group, one mkdir, one cgroup.procs write and one rmdir fewer per task.
  virtual std::unique_ptr<Cgroup> create_group(std::string_view name, const Limits& limits,
                                               TreeKill kill) = 0;
  std::unique_ptr<Cgroup> create_group(std::string_view name, const Limits& limits) {
    return create_group(name, limits, TreeKill::kByGroup);
  }
  // Directories (fds owned by the manager) in which create_group(name, _, kill) makes the
  // group: one per v1 hierarchy, in the order a process must enter them; one on v2. For a
  // process that opens the group itself once it exists: the sandbox's PID 1 builds the jail
  // while the worker makes the group.
  [[nodiscard]] virtual std::vector<int> parent_fds(TreeKill kill) const = 0;
  // Removes groups whose owning worker process is gone; returns how many were removed.
  virtual std::size_t remove_stale() = 0;
};

}  // namespace tamma::sandbox
