#pragma once
// clone3 of a sandboxed child and the task side of it (the process that execs the command).
//
// The worker may be multi-threaded: after clone3 the child owns a copy of memory in which
// other threads may have held locks (malloc, stdio, the dynamic loader). So everything the
// child needs is prepared by the parent in a ChildPlan of plain C data, and the child only
// reads it and makes raw system calls: no allocation, no locks, no glibc set*id wrappers.

#include <linux/filter.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "sandbox/mount.h"

namespace tamma::sandbox {

struct SpawnSlot;

// v1 hierarchies a task may have to enter itself (memory, pids, cpu, cpuacct, freezer, and
// room for one more).
inline constexpr int kMaxCgroupProcsFds = 6;

// Where a child failed before exec; sent to the parent as a fixed-size record.
enum class ChildStage : int {
  kRelease = 1,
  kFds,
  kSignals,
  kMounts,
  kHostname,
  kLoopback,
  kForkTask,
  kSession,
  kStdio,
  kChdir,
  kPrivileges,
  kNoNewPrivs,
  kCapabilities,
  kSeccomp,
  kParentDeath,
  kCgroup,
  kNetNamespace,
  kLandlock,
  kSubreaper,
  kRlimits,
};
const char* to_string(ChildStage stage);

struct ChildError {
  int stage = 0;  // a ChildStage
  int err = 0;    // errno
  char detail[240] = {};
};

struct ChildPlan {
  // With isolation the clone3 child is PID 1 of new namespaces and forks the task; without,
  // the clone3 child is the task itself.
  bool isolate = true;
  // false: the unprivileged tier's keeper (tree_kill.h), a PID 1 without a pid namespace: a
  // child subreaper that forwards signals to, and kills, the task's descendants by walking
  // them, never with kill(-1).
  bool own_pid_namespace = true;
  // Landlock ruleset the task enters after dropping privileges (landlock.h); -1: none.
  int landlock_ruleset_fd = -1;
  // The unprivileged tier: keep the worker's ids when it cannot switch (PrivilegeDrop), and
  // leave RLIMIT_RTPRIO at 0.
  bool keep_ids = false;
  bool unprivileged = false;
  const MountPlan* mounts = nullptr;  // set when isolating
  // With a template (mount_template.h): the namespace PID 1 copies before `mounts`, which
  // then attaches the detached `mount_tree_fds` (MountPlan::trees).
  int mount_template_fd = -1;
  int mount_tree_fds[kMaxMountTrees] = {-1, -1, -1, -1};
  int mount_tree_count = 0;
  const char* hostname = nullptr;  // set with a new uts namespace
  bool loopback_up = false;        // with a new net namespace
  int net_ns_fd = -1;              // a pooled network namespace PID 1 enters (net.h)

  char* const* argv = nullptr;
  char* const* envp = nullptr;
  // Full paths to try in order (the PATH lookup, prepared by the parent against the paths
  // the task will see); null-terminated.
  const char* const* exec_candidates = nullptr;
  // Where the task stores the wall-clock time (CLOCK_REALTIME, ns) at which it calls execve.
  // Seen by the worker only when the task shares its memory (the worker reads it once the exec
  // is done); null: not asked.
  std::int64_t* exec_wall_ns = nullptr;
  const char* workdir = nullptr;  // absolute, as the task sees it
  // A lone command run without its shell (worker/lone_command.h): when no candidate can be
  // exec'ed, this shell command runs instead, with `fallback_envp`, and answers as before.
  char* const* fallback_argv = nullptr;
  char* const* fallback_envp = nullptr;
  // Entries of envp the child fills in as bash would export them when it execs a command:
  // "PWD=" the working directory, "_=" the file executed. Each holds `slot_bytes`.
  char* pwd_slot = nullptr;
  char* underscore_slot = nullptr;
  std::size_t slot_bytes = 0;

  // Signals the worker ignores (bit n-1 for signal n): execve keeps them ignored, so the task
  // resets them. Handled signals need nothing: clone3 clears them and execve resets PID 1's.
  std::uint64_t ignored_signals = 0;
  // Caller's fds for the task's stdio; stdin -1 means /dev/null.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;

  // Privileges, applied to the task only when `drop_privileges`.
  bool drop_privileges = false;
  bool in_user_ns = false;  // setgroups is denied there; the id maps did the switch
  uid_t uid = 0;
  gid_t gid = 0;
  int cap_last = 0;                     // highest capability number of this kernel
  bool bounding_set_dropped = false;    // PID 1 did it (user.h)
  const sock_fprog* seccomp = nullptr;  // null: no filter
  // Control pipes, child ends. release_fd: -1 or a pipe the child reads one byte from once the
  // parent has moved it into the v1 cgroups and written its id maps: before anything else with
  // a user namespace (mounting needs the maps), otherwise just before the task is forked, so
  // that the cgroup writes overlap with building the jail.
  int release_fd = -1;
  bool release_before_setup = false;
  int error_fd = -1;   // ChildError records; close-on-exec, so EOF means the task exec'ed
  int status_fd = -1;  // PID 1 writes the task's raw wait status here
  // Stack on which PID 1 starts the task with CLONE_VM|CLONE_VFORK (allocated by the parent;
  // sharing memory until execve spares copying the page tables of a worker-sized process).
  char* task_stack = nullptr;
  std::size_t task_stack_size = 0;

  // When PID 1 stays outside the task's cgroup (it shares the worker's memory, see
  // sandbox.cc), the task enters the group itself before its first instruction of the
  // command: on v2 PID 1 clones it into `task_cgroup_fd`; on v1 it writes its own pid to
  // each of `cgroup_procs_fds` (cgroup.procs files opened by the parent).
  int task_cgroup_fd = -1;
  int cgroup_procs_fds[kMaxCgroupProcsFds] = {-1, -1, -1, -1, -1, -1};
  int cgroup_procs_count = 0;
  // Set when the worker makes the group while PID 1 builds the jail: once released, PID 1
  // opens `cgroup_path` below each of these directories, giving `cgroup_procs_fds` (v1, a
  // path to cgroup.procs) or `task_cgroup_fd` (v2, the group's directory).
  int cgroup_parent_fds[kMaxCgroupProcsFds] = {-1, -1, -1, -1, -1, -1};
  int cgroup_parent_count = 0;
  const char* cgroup_path = nullptr;
  bool cgroup_v2 = false;
};

struct CloneRequest {
  bool isolate = true;
  bool new_mount = true;  // false: PID 1 copies a template instead
  bool new_net = false;
  bool new_ipc = true;
  bool new_uts = true;
  bool new_user = false;
  int cgroup_fd = -1;  // v2: clone straight into the task's group
  // Set: the child shares the worker's memory (CLONE_VM) and runs with the slot's thread
  // block instead of being a copy of the worker (spawn_slot.h). With isolation it is PID 1,
  // on the slot's first stack; without, it is the task, on the second, and the caller is
  // suspended until it execs (CLONE_VFORK).
  const SpawnSlot* shared_slot = nullptr;
};

struct Spawned {
  pid_t pid = -1;
  int pidfd = -1;  // owned by the caller
};

// clone3 with the namespaces of `request` and CLONE_PIDFD; the child runs `plan` and never
// returns. Throws Error(kSandboxSetup) when the kernel refuses the clone.
// Where clone3 answers ENOSYS (Docker's and podman's default seccomp profiles filter it,
// since its flags are out of a filter's reach), the child is a copy made by clone(2) with
// CLONE_PIDFD, never sharing the worker's memory; `request.cgroup_fd` must then be -1
// (see clone3_seen_filtered), or this throws.
Spawned clone_child(const CloneRequest& request, const ChildPlan& plan);
// Whether clone_child has met a filtered clone3 in this process.
bool clone3_seen_filtered();

// Child side, used by pid_init: keeps only `fds` (at most 24; renumbered 3, 4, ... in place
// if one of them is below 3), closes every other descriptor above 2. Returns 0 or an errno.
int keep_only_fds(int* fds[], std::size_t count);
// Parent side: the signals this process ignores, from /proc/self/status (three system calls
// instead of one query per signal in the child).
std::uint64_t ignored_signals();
// Child side: blocks until the parent writes the release byte; _exits if it gave up.
void wait_for_release(int release_fd);
// Child side (PID 1): starts exec_task(plan) in a vfork-like child on plan.task_stack and
// returns its pid, or -1 with errno, once it has exec'ed or failed. No atfork handlers, no
// locks, no copy of the address space. With clone3 filtered the task enters
// plan.task_cgroup_fd itself (added to plan.cgroup_procs_fds).
pid_t start_task(ChildPlan& plan);
// Code that may run on plan.task_stack, a buffer AddressSanitizer takes for a huge stack: it
// must not announce its noreturn calls to ASan, whose warning about them would otherwise land
// in the task's output.
#define TAMMA_ON_TASK_STACK __attribute__((no_sanitize("address")))

// Child side: sends a failure record to the parent (best effort) and _exits.
[[noreturn]] TAMMA_ON_TASK_STACK void child_fail(int error_fd, ChildStage stage, int err,
                                                 const char* detail);
// Child side: the task process from its stdio to execve; never returns.
[[noreturn]] TAMMA_ON_TASK_STACK void exec_task(const ChildPlan& plan);

}  // namespace tamma::sandbox
