#pragma once
// Public interface of the sandbox: run one command of a task under isolation and limits.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sandbox/tier.h"
#include "sandbox/types.h"

namespace tamma::sandbox {

enum class Network { kNone, kHost };

struct Policy {
  Limits limits;
  Network network = Network::kNone;
  // Namespaces (pid, mount, ipc, uts, net per `network`), pivot_root into a minimal root,
  // seccomp, no_new_privs, all capabilities dropped, unprivileged uid/gid.
  bool isolate = true;
  // With `isolate`, the least isolation tier (tier.h) a task may run in: a host whose best
  // tier is below it refuses every task, naming what is missing (exit 6). On a host where no
  // namespace can be made (a default container), "unprivileged" runs the task under
  // Landlock, seccomp and a keeper process instead (docs/isolation.md).
  Tier minimum_tier = Tier::kRootless;
  uid_t uid = 65534;
  gid_t gid = 65534;
  // Host paths bound read-only at the same place inside the sandbox (missing ones skipped).
  std::vector<std::string> readonly_binds{"/usr",   "/bin",   "/sbin", "/lib",
                                          "/lib64", "/lib32", "/etc"};
  // Host paths bound read-only at another place inside (source, target): e.g. a file://
  // repository under the host's /tmp, which the sandbox's private /tmp would hide.
  std::vector<std::pair<std::string, std::string>> readonly_binds_at;
  // The task's filesystem on the host (Workspace::task_dir()), which must hold the workspace:
  // its home/, tmp/ and var-tmp/ (workspace.h) are bound at kSandboxHome, /tmp and /var/tmp,
  // so that the task's disk limit covers what tools write there, and the memory limit does
  // not. Empty: those three are tmpfs of tmp_bytes.
  std::string task_dir;
  // /tmp and /var/tmp as tmpfs of tmp_bytes even with a task_dir (the operator's tmpOnTmpfs):
  // faster for many small files, but charged to the task's memory limit.
  bool tmp_on_tmpfs = false;
  // Size of each tmpfs: /dev/shm always; /tmp, /var/tmp and HOME when they are tmpfs.
  std::uint64_t tmp_bytes = 256ull << 20;
  // When the host cannot enforce something asked for: false refuses the task (fail closed),
  // true runs it without and says so in `Process::degradations()`.
  bool allow_degraded = false;
  // The sandbox's first process (PID 1 with isolation, else the task until its execve) shares
  // the worker's memory instead of being a copy of it, which halves the start of a sandbox
  // (ADR 0017). Used where possible (x86-64, a root worker); false makes it a copy, as after
  // fork, everywhere: for comparison.
  bool share_worker_memory = true;
  // With network `kNone`, a root worker reuses loopback-only network namespaces one task at
  // a time instead of making and destroying one per task (ADR 0018). false: a fresh one for
  // every task, for comparison.
  bool reuse_network_namespaces = true;
  // With network `kNone`: a loopback-only network namespace made by the caller (not owned
  // here), which every process of the task enters instead of a pooled or fresh one: the one
  // where the worker's egress proxy listens (egress/listener.h). Needs a root worker.
  int net_ns_fd = -1;
  // A root worker copies the fixed part of the mount jail from a template built once instead
  // of building it for every task (ADR 0019). false: built for every task, for comparison.
  bool reuse_mount_templates = true;
};

// Mount point of the task's workspace inside the sandbox.
inline constexpr const char* kSandboxWorkspace = "/workspace";
// The task's user inside the sandbox: the name and home that the sandbox's own /etc/passwd
// gives the task's uid (whatever Policy::uid is), so that tools asking getpwuid() (ssh, pip,
// git) agree with $HOME.
inline constexpr const char* kSandboxUser = "tamma";
inline constexpr const char* kSandboxHome = "/home/tamma";

struct Command {
  std::vector<std::string> argv;    // argv[0] resolved through PATH of `env` when not absolute
  std::vector<std::string> env;     // the complete environment, "NAME=value"
  std::filesystem::path workspace;  // host directory, bound read-write at kSandboxWorkspace
  std::string workdir = ".";        // relative to the workspace
  int stdout_fd = -1;               // write ends owned by the caller; dup'ed into the task
  int stderr_fd = -1;
  int stdin_fd = -1;  // read end owned by the caller; -1 gives the task /dev/null
  // A lone command in place of the shell that would exec it (worker/lone_command.h): the task
  // also gets PWD, SHLVL and _ as bash exports them, and when argv cannot be exec'ed,
  // `shell_argv` runs with `env` unchanged.
  std::vector<std::string> shell_argv;
};

struct ExitStatus {
  bool signaled = false;
  int code = 0;    // exit code when !signaled
  int signal = 0;  // terminating signal when signaled
};

// A running task process tree. Destruction kills everything left and releases the cgroup.
class Process {
 public:
  virtual ~Process() = default;
  // Readable when the task's main process has exited (a pidfd or an equivalent).
  [[nodiscard]] virtual int exit_fd() const = 0;
  // Non-blocking: the main process's status once it has exited.
  virtual std::optional<ExitStatus> poll_exit() = 0;
  virtual void signal_all(int sig) = 0;  // every process of the task
  virtual void kill_all() = 0;           // SIGKILL all; returns when none is left
  [[nodiscard]] virtual Usage usage() const = 0;
  [[nodiscard]] virtual std::vector<std::string> degradations() const = 0;
  // When the task called execve (wall clock), if the sandbox could see it: for the timeline
  // in the debug log (where a task's start goes, issue 13).
  [[nodiscard]] virtual std::optional<std::chrono::system_clock::time_point> exec_began() const {
    return std::nullopt;
  }
};

// Whether an isolated task sees the sandbox's paths (kSandboxWorkspace, kSandboxHome, /tmp):
// false in the unprivileged tier, where without a mount namespace it works in its
// directories where they are on the host.
bool isolated_tasks_see_sandbox_paths();

class Sandbox {
 public:
  virtual ~Sandbox() = default;
  // Checks that this host can enforce `policy`; throws Error(kSandboxSetup) naming what is
  // missing unless policy.allow_degraded.
  static std::unique_ptr<Sandbox> create(const Policy& policy);
  virtual std::unique_ptr<Process> spawn(const Command& command) = 0;
};

}  // namespace tamma::sandbox
