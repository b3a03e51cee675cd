// Sandbox::create (what the host can enforce for a policy) and the Process of one command:
// its cgroup, its PID 1 (or the task itself without isolation) and its exit status.

#include "sandbox/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/unique_fd.h"
#include "sandbox/host.h"
#include "sandbox/landlock.h"
#include "sandbox/mount.h"
#include "sandbox/mount_template.h"
#include "sandbox/net.h"
#include "sandbox/pid_init.h"
#include "sandbox/seccomp.h"
#include "sandbox/shared_cgroups.h"
#include "sandbox/spawn.h"
#include "sandbox/spawn_slot.h"
#include "sandbox/user.h"
#include "sandbox/workspace.h"

namespace tamma::sandbox {

namespace fs = std::filesystem;

namespace {

constexpr const char* kHostname = "tamma-task";
constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// A jail is built in about a millisecond; this only bounds a child stuck in the kernel.
constexpr int kSetupTimeoutMs = 30'000;
// PWD=... or _=... of a lone command's environment: a path, with its name.
constexpr std::size_t kExportSlotBytes = PATH_MAX + 8;
// The task's code between clone and execve uses a few hundred bytes of stack.
constexpr std::size_t kTaskStackBytes = 64 * 1024;

struct Pipe {
  UniqueFd read, write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2 for the sandbox");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

const HostCapabilities& host() {
  // Namespaces and seccomp do not come and go while the worker runs.
  static const HostCapabilities caps = probe_sandbox_host();
  return caps;
}

int send_signal(int pidfd, int sig) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) == 0) return 0;
  return errno;
}

ExitStatus from_wait_status(int status) {
  if (WIFSIGNALED(status)) return {.signaled = true, .code = 0, .signal = WTERMSIG(status)};
  return {.signaled = false, .code = WEXITSTATUS(status), .signal = 0};
}

ExitStatus from_siginfo(const siginfo_t& info) {
  if (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED) {
    return {.signaled = true, .code = 0, .signal = info.si_status};
  }
  return {.signaled = false, .code = info.si_status, .signal = 0};
}

std::vector<char*> c_strings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const auto& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

std::string env_value(const std::vector<std::string>& env, std::string_view name) {
  for (const auto& entry : env) {
    if (entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 &&
        entry[name.size()] == '=') {
      return entry.substr(name.size() + 1);
    }
  }
  return {};
}

// The paths execvp would try, in order; resolved by the child against its own view of the
// filesystem (the jail), since the workspace is not at the same place on the host.
std::vector<std::string> exec_candidates(const Command& command) {
  const std::string& name = command.argv.front();
  if (name.find('/') != std::string::npos) return {name};
  bool has_path = false;
  for (const auto& entry : command.env) has_path |= entry.rfind("PATH=", 0) == 0;
  const std::string path = has_path ? env_value(command.env, "PATH") : kDefaultPath;
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    std::size_t end = path.find(':', start);
    std::string dir = path.substr(start, end == std::string::npos ? end : end - start);
    out.push_back((dir.empty() ? std::string(".") : dir) + "/" + name);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

fs::path checked_workdir(const std::string& workdir) {
  fs::path rel = fs::path(workdir.empty() ? "." : workdir).lexically_normal();
  if (rel.is_absolute() || (!rel.empty() && *rel.begin() == "..")) {
    throw Error(ErrorKind::kConfig, "bad_workdir",
                "working directory must stay inside the workspace: " + workdir);
  }
  return rel;
}

class ProcessImpl final : public Process {
 public:
  // With a PID 1, `exit_poll` is an epoll set holding `status`, the pipe on which PID 1
  // reports; `init_outside_group`: PID 1 is not in the task's group.
  // `keeper`: PID 1 has no pid namespace (tree_kill.h) and is asked, not SIGKILLed, to end
  // the tree.
  ProcessImpl(Spawned spawned, bool has_init, bool keeper, UniqueFd status, UniqueFd exit_poll,
              bool init_outside_group, std::unique_ptr<Cgroup> cgroup, SpawnSlotLease slot,
              NetNamespaceLease net, NetCounters fresh_net, std::vector<std::string> degradations)
      : pid_(spawned.pid),
        pidfd_(spawned.pidfd),
        has_init_(has_init),
        keeper_(keeper),
        status_(std::move(status)),
        exit_poll_(std::move(exit_poll)),
        init_outside_group_(init_outside_group),
        cgroup_(std::move(cgroup)),
        slot_(std::move(slot)),
        net_(std::move(net)),
        fresh_net_(std::move(fresh_net)),
        degradations_(std::move(degradations)) {}

  ~ProcessImpl() override {
    // PID 1 reported: every process of the task is dead and reaped. If PID 1 is not in the
    // group either, the group goes now, while PID 1's exit tears down the namespaces.
    if (reported_ && init_outside_group_) cgroup_.reset();
    try {
      kill_all();
    } catch (const std::exception& e) {
      spdlog::error("sandbox: cleaning up task process {}: {}", pid_, e.what());
    }
    // A PID 1 that could not be reaped may still run on the slot's stacks.
    if (!reaped_) {
      slot_.abandon();
      net_.abandon();
    }
    cgroup_.reset();  // kills what is left and removes the group; never throws
  }

  int exit_fd() const override { return has_init_ ? exit_poll_.get() : pidfd_.get(); }

  std::optional<ExitStatus> poll_exit() override {
    if (!exit_ && has_init_ && status_) read_report();
    if (!exit_) reap(false);
    return exit_;
  }

  void signal_all(int sig) override {
    if (reaped_ && !cgroup_ && has_init_) return;
    if (has_init_ && (sig == SIGKILL || is_forwarded_signal(sig))) {
      // PID 1 passes it to every process of the namespace, which holds the whole task;
      // SIGKILL of PID 1 makes the kernel kill the namespace. A keeper kills the tree when
      // asked with its own signal.
      if (!reaped_) {
        int err = send_signal(pidfd_.get(), keeper_ && sig == SIGKILL ? kKeeperKillSignal : sig);
        if (err != 0 && err != ESRCH) throw_errno("pidfd_send_signal to the task", err);
      }
      return;
    }
    if (cgroup_) {
      cgroup_->signal_all(sig);
    } else if (::kill(has_init_ ? pid_ : -pid_, sig) != 0 && errno != ESRCH) {
      throw_errno("kill of the task's process group");
    }
  }

  void kill_all() override {
    // The main process first, reaped, so the group below does not wait on our zombie.
    if (!reaped_) {
      // A keeper kills and reaps the tree, reports and exits; its exit is what to wait for.
      int err = send_signal(pidfd_.get(), keeper_ ? kKeeperKillSignal : SIGKILL);
      if (err != 0 && err != ESRCH) throw_errno("pidfd_send_signal(SIGKILL) to the task", err);
      reap(true);
    }
    // A reaped PID 1 means an empty pid namespace, and nothing can leave one: only without
    // isolation can processes of the task still be running. A keeper that exited on its own
    // killed the tree first; one that was killed (by a task of its uid) may have left
    // descendants, which only a cgroup would still hold.
    if (has_init_ && !(keeper_ && cgroup_)) return;
    if (cgroup_) {
      cgroup_->kill_all();
    } else if (::kill(-pid_, SIGKILL) != 0 && errno != ESRCH) {
      throw_errno("kill of the task's process group");
    }
  }

  Usage usage() const override {
    if (cgroup_) {
      Usage usage = cgroup_->usage();
      usage.network_unreachable = network_unreachable();
      return usage;
    }
    // Without a cgroup the kernel's rusage of the reaped tree is the best there is: it
    // misses processes that were never waited for.
    Usage usage;
    usage.network_unreachable = network_unreachable();
    usage.exact = false;
    usage.cpu_user_us = static_cast<std::uint64_t>(rusage_.ru_utime.tv_sec) * 1'000'000 +
                        static_cast<std::uint64_t>(rusage_.ru_utime.tv_usec);
    usage.cpu_system_us = static_cast<std::uint64_t>(rusage_.ru_stime.tv_sec) * 1'000'000 +
                          static_cast<std::uint64_t>(rusage_.ru_stime.tv_usec);
    usage.peak_memory_bytes = static_cast<std::uint64_t>(rusage_.ru_maxrss) * 1024;
    return usage;
  }

  std::vector<std::string> degradations() const override { return degradations_; }

  std::optional<std::chrono::system_clock::time_point> exec_began() const override {
    return exec_began_;
  }
  void set_exec_began(std::chrono::system_clock::time_point at) { exec_began_ = at; }

 private:
  // Once PID 1 reported, every process of the task is gone: the namespace's counters are final
  // even before PID 1 itself is reaped (when the namespace goes back to the pool).
  std::uint64_t network_unreachable() const {
    if (reaped_) return network_unreachable_;
    return net_ ? net_.unreachable_since_lease() : fresh_net_.unreachable();
  }

  // PID 1 writes the task's wait status once the task's processes are all dead and reaped,
  // before its own exit. End of file without it: PID 1 was killed (kill_all, the OOM
  // killer), and its exit, through the pidfd, is what to wait for.
  void read_report() {
    int status = 0;
    const ssize_t got = ::read(status_.get(), &status, sizeof status);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (got == static_cast<ssize_t>(sizeof status)) {
      exit_ = from_wait_status(status);
      reported_ = true;
    } else if (::epoll_ctl(exit_poll_.get(), EPOLL_CTL_DEL, status_.get(), nullptr) != 0) {
      throw_errno("epoll_ctl on the task's exit");
    } else {
      epoll_event on_exit{.events = EPOLLIN, .data = {}};
      if (::epoll_ctl(exit_poll_.get(), EPOLL_CTL_ADD, pidfd_.get(), &on_exit) != 0) {
        throw_errno("epoll_ctl on PID 1's pidfd");
      }
    }
    status_.reset();
  }

  void reap(bool block) {
    if (reaped_) return;
    siginfo_t info{};
    struct rusage usage {};
    long rc;
    do {
      rc = ::syscall(SYS_waitid, P_PIDFD, pidfd_.get(), &info, WEXITED | (block ? 0 : WNOHANG),
                     &usage);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) throw_errno("waitid on the task's pidfd");
    if (info.si_pid == 0) return;  // still running
    reaped_ = true;
    slot_ = SpawnSlotLease();  // PID 1 is gone: its stacks and thread block are free
    // ... and with it every process of its pid namespace, the only ones in the network
    // namespace: what they sent is counted, and it can serve the next task.
    network_unreachable_ = net_ ? net_.unreachable_since_lease() : fresh_net_.unreachable();
    fresh_net_ = NetCounters();
    net_ = NetNamespaceLease();
    rusage_ = usage;
    if (exit_) return;  // PID 1's report
    exit_ = from_siginfo(info);
    if (!has_init_ || !status_) return;
    // PID 1 reports the task's status just before exiting; without a report PID 1 itself
    // was killed (by kill_all or the OOM killer), and its status is the answer.
    int status = 0;
    ssize_t got = ::read(status_.get(), &status, sizeof status);
    if (got == static_cast<ssize_t>(sizeof status)) {
      exit_ = from_wait_status(status);
      reported_ = true;
    }
  }

  pid_t pid_;
  UniqueFd pidfd_;
  bool has_init_;
  bool keeper_;
  UniqueFd status_;     // until PID 1's report is read
  UniqueFd exit_poll_;  // with a PID 1: the status pipe, then (no report) PID 1's pidfd
  bool init_outside_group_;
  bool reported_ = false;
  std::unique_ptr<Cgroup> cgroup_;
  SpawnSlotLease slot_;    // set when PID 1 shares the worker's memory
  NetNamespaceLease net_;  // set when the task has a pooled network namespace
  NetCounters fresh_net_;  // ... or the counters of the one made for it
  std::uint64_t network_unreachable_ = 0;
  std::vector<std::string> degradations_;
  std::optional<std::chrono::system_clock::time_point> exec_began_;
  std::optional<ExitStatus> exit_;
  bool reaped_ = false;
  struct rusage rusage_ {};
};

// What this sandbox will actually do, after the host's answers and the policy's consent to
// run degraded.
struct Effective {
  Limits limits;
  bool isolate = true;
  bool new_net = false, new_ipc = false, new_uts = false, new_user = false;
  // The network namespace comes from the pool (net.h) rather than from clone3. Only a root
  // PID 1 may enter a namespace the worker made.
  bool pooled_net = false;
  // The jail's fixed part is copied from a template (mount_template.h); root only, as
  // entering a namespace the worker made needs its privileges.
  bool mount_template = false;
  // PID 1 shares the worker's memory (spawn_slot.h); it then stays out of the task's cgroup,
  // lest the OOM killer, choosing among the group's processes, pick the worker's memory.
  bool share_memory = false;
  // The task enters its cgroup itself (v1 writes, v2 clone3 from PID 1) rather than
  // inheriting it from a PID 1 placed there by the worker.
  bool task_enters_cgroup = false;
  // The unprivileged tier (tier.h): no namespace; PID 1 is a keeper (tree_kill.h), the task
  // is confined by Landlock (landlock_abi > 0) and the tier's seccomp additions, and keeps
  // the worker's ids when it cannot switch (keep_ids).
  Tier tier = Tier::kFull;
  bool keeper = false;
  bool keep_ids = false;
  int landlock_abi = 0;
  bool landlock_scope = false;
  bool deny_tcp = false;
  // clone3 is filtered (host.h): no child is born in a v2 group; the task writes the group's
  // cgroup.procs itself, or the worker writes a PID 1's pid there before the release.
  bool clone3_filtered = false;
  std::shared_ptr<const SeccompProgram> seccomp;
  CgroupManager* cgroups = nullptr;
  std::vector<std::string> degradations;
};

class SandboxImpl final : public Sandbox {
 public:
  SandboxImpl(Policy policy, Effective effective)
      : policy_(std::move(policy)), eff_(std::move(effective)), cap_last_(cap_last_cap()) {}

  std::unique_ptr<Process> spawn(const Command& command) override {
    if (command.argv.empty() || command.argv.front().empty()) {
      throw Error(ErrorKind::kConfig, "bad_command", "empty command");
    }
    const fs::path workdir = checked_workdir(command.workdir);
    struct stat st {};
    if (::stat(command.workspace.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                  "workspace is not a directory: " + command.workspace.string());
    }

    // With isolation, a task that enters its group itself gets it made while PID 1 builds
    // the jail (at once when the scheduler puts PID 1 on another CPU, else interleaved):
    // PID 1 opens it once released. Otherwise the group exists before the clone.
    std::unique_ptr<Cgroup> cgroup;
    const TreeKill tree_kill = eff_.isolate ? TreeKill::kByPidNamespace : TreeKill::kByGroup;
    const bool group_during_jail =
        eff_.cgroups != nullptr && eff_.isolate && eff_.task_enters_cgroup;
    std::string group_name;
    std::vector<int> group_parents;
    if (eff_.cgroups != nullptr) {
      static std::atomic<std::uint64_t> counter{0};
      group_name = "task-" + std::to_string(++counter);
      if (group_during_jail) {
        group_parents = eff_.cgroups->parent_fds(tree_kill);
      } else {
        cgroup = eff_.cgroups->create_group(group_name, eff_.limits, tree_kill);
      }
    }
    const bool group_v2 = eff_.cgroups != nullptr && eff_.cgroups->version() == CgroupVersion::kV2;
    const std::string group_path = group_v2 ? group_name : group_name + "/cgroup.procs";

    // Everything the child reads is built here: it may not allocate after clone3.
    const std::vector<std::string> candidates = exec_candidates(command);
    std::vector<const char*> candidate_ptrs;
    for (const auto& c : candidates) candidate_ptrs.push_back(c.c_str());
    candidate_ptrs.push_back(nullptr);
    std::vector<char*> argv = c_strings(command.argv);
    std::vector<char*> envp = c_strings(command.env);
    std::vector<char*> shell_argv;
    std::vector<char> exported_slots;
    std::vector<char*> exported_envp;
    if (!command.shell_argv.empty()) {
      shell_argv = c_strings(command.shell_argv);
      // What bash exports when it execs a command: SHLVL as it got it (lone_command() leaves
      // a set SHLVL to the shell, so 0), PWD and _ filled in by the child.
      exported_slots.assign(2 * kExportSlotBytes, '\0');
      exported_envp.assign(envp.begin(), envp.end() - 1);
      exported_envp.push_back(const_cast<char*>("SHLVL=0"));
      exported_envp.push_back(exported_slots.data());
      exported_envp.push_back(exported_slots.data() + kExportSlotBytes);
      exported_envp.push_back(nullptr);
    }
    std::string cwd;
    MountPlan mounts;
    std::shared_ptr<const MountTemplate> jail_template;
    std::vector<UniqueFd> mount_trees;
    if (eff_.isolate) {
      cwd = (fs::path(kSandboxWorkspace) / workdir).lexically_normal().string();
      const std::string workspace = fs::absolute(command.workspace).lexically_normal().string();
      const std::string task_dir = policy_.task_dir.empty()
                                       ? std::string()
                                       : fs::absolute(policy_.task_dir).lexically_normal().string();
      MountRequest request{.readonly_binds = policy_.readonly_binds,
                           .readonly_binds_at = policy_.readonly_binds_at,
                           .workspace = workspace,
                           .task_dir = task_dir,
                           .tmp_on_tmpfs = policy_.tmp_on_tmpfs,
                           .tmp_bytes = policy_.tmp_bytes,
                           .uid = policy_.uid,
                           .gid = policy_.gid,
                           .device_nodes = !eff_.new_user};
      if (eff_.mount_template && fits_a_template(request)) {
        jail_template = mount_template(request);
        // Built first: it refuses a workspace outside the task directory before any tree
        // is cloned.
        mounts = build_task_mount_plan(request);
        for (const auto& directory : mounts.trees) mount_trees.push_back(detached_tree(directory));
      } else {
        std::vector<std::string> visible = policy_.readonly_binds;
        visible.push_back(workspace);
        if (!task_dir.empty()) visible.push_back(task_dir);
        for (const auto& [source, target] : policy_.readonly_binds_at) visible.push_back(source);
        request.root_mount_point = choose_root_mount_point(visible);
        mounts = build_mount_plan(request);
      }
      // The task runs as policy.uid and must be able to write its workspace and HOME.
      std::vector<fs::path> owned{command.workspace};
      if (!task_dir.empty()) owned.push_back(fs::path(task_dir) / kHomeDir);
      for (const auto& dir : owned) {
        struct stat owner {};
        if (::stat(dir.c_str(), &owner) != 0) throw_errno("stat " + dir.string());
        if ((owner.st_uid != policy_.uid || owner.st_gid != policy_.gid) &&
            ::chown(dir.c_str(), policy_.uid, policy_.gid) != 0 && !eff_.new_user) {
          throw_errno("chown of " + dir.string());
        }
      }
    } else {
      cwd = (command.workspace / workdir).lexically_normal().string();
    }
    UniqueFd landlock;
    if (eff_.keeper) {
      // No mount namespace: the task works in the workspace where it is on the host, under
      // a uid that may have to be given it.
      if (!eff_.keep_ids) {
        std::vector<fs::path> owned{command.workspace};
        if (!policy_.task_dir.empty()) owned.push_back(fs::path(policy_.task_dir) / kHomeDir);
        for (const auto& dir : owned) {
          struct stat owner {};
          if (::stat(dir.c_str(), &owner) == 0 &&
              (owner.st_uid != policy_.uid || owner.st_gid != policy_.gid) &&
              ::chown(dir.c_str(), policy_.uid, policy_.gid) != 0) {
            throw_errno("chown of the task's workspace");
          }
        }
      }
      if (eff_.landlock_abi > 0) {
        LandlockPlan plan{.abi = eff_.landlock_abi,
                          .read_exec = policy_.readonly_binds,
                          .read_only = {"/proc", "/sys"},
                          .writable = {fs::absolute(command.workspace).string()},
                          .devices = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                      "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts"},
                          .deny_tcp = eff_.deny_tcp,
                          .scope = eff_.landlock_scope};
        for (const auto& [source, target] : policy_.readonly_binds_at) {
          plan.read_exec.push_back(source);
        }
        if (!policy_.task_dir.empty()) plan.writable.push_back(policy_.task_dir);
        landlock = build_landlock_ruleset(plan);
      }
    }
    const bool has_init = eff_.isolate || eff_.keeper;

    Pipe error = make_pipe();
    Pipe status = make_pipe();
    // With a PID 1 the caller waits on its report, in an epoll set so that the wait can move
    // to PID 1's pidfd if it dies without one.
    UniqueFd exit_poll;
    if (has_init) {
      exit_poll.reset(::epoll_create1(EPOLL_CLOEXEC));
      epoll_event on_report{.events = EPOLLIN, .data = {}};
      if (!exit_poll ||
          ::epoll_ctl(exit_poll.get(), EPOLL_CTL_ADD, status.read.get(), &on_report) != 0) {
        throw_errno("epoll for the task's exit");
      }
    }
    const bool task_enters = (cgroup || group_during_jail) && eff_.task_enters_cgroup;
    // The v2 group a clone is born in; none when clone3 is filtered.
    const int v2_group = cgroup && !eff_.clone3_filtered ? cgroup->clone_into_fd() : -1;
    std::vector<UniqueFd> procs_files;
    if (task_enters && cgroup) procs_files = cgroup->open_procs_files();
    if (task_enters && cgroup && eff_.clone3_filtered && cgroup->clone_into_fd() >= 0) {
      UniqueFd procs(::openat(cgroup->clone_into_fd(), "cgroup.procs", O_WRONLY | O_CLOEXEC));
      if (!procs) throw_errno("open cgroup.procs of the task's group");
      procs_files.push_back(std::move(procs));
    }
    if (std::max(procs_files.size(), group_parents.size()) >
        static_cast<std::size_t>(kMaxCgroupProcsFds)) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                  "too many cgroup v1 hierarchies for one task: " +
                      std::to_string(std::max(procs_files.size(), group_parents.size())));
    }
    // On v1 the child must wait until the worker has moved it into the cgroups (unless the
    // task enters them itself); with a user namespace, until the id maps exist; when the
    // group is made during the jail's construction, until it exists.
    const bool needs_release =
        (cgroup && !task_enters && v2_group < 0) || eff_.new_user || group_during_jail;
    Pipe release;
    if (needs_release) release = make_pipe();
    SpawnSlotLease slot;
    if (eff_.share_memory) slot = lease_spawn_slot();
    NetNamespaceLease net;
    const bool given_net = eff_.isolate && eff_.new_net && policy_.net_ns_fd >= 0;
    if (eff_.isolate && eff_.new_net && eff_.pooled_net && !given_net) net = lease_net_namespace();

    ChildPlan plan;
    plan.isolate = has_init;
    plan.own_pid_namespace = eff_.isolate;
    plan.landlock_ruleset_fd = landlock.get();
    plan.keep_ids = eff_.keep_ids;
    plan.unprivileged = eff_.keeper;
    plan.mounts = eff_.isolate ? &mounts : nullptr;
    plan.mount_template_fd = jail_template ? jail_template->ns.get() : -1;
    for (const auto& tree : mount_trees) plan.mount_tree_fds[plan.mount_tree_count++] = tree.get();
    plan.hostname = eff_.isolate && eff_.new_uts ? kHostname : nullptr;
    plan.loopback_up = eff_.isolate && eff_.new_net && !net && !given_net;
    plan.net_ns_fd = given_net ? policy_.net_ns_fd : net ? net.fd() : -1;
    plan.argv = argv.data();
    plan.envp = envp.data();
    plan.exec_candidates = candidate_ptrs.data();
    std::int64_t exec_wall_ns = 0;
    plan.exec_wall_ns = &exec_wall_ns;
    plan.workdir = cwd.c_str();
    if (!shell_argv.empty()) {
      plan.envp = exported_envp.data();
      plan.fallback_argv = shell_argv.data();
      plan.fallback_envp = envp.data();
      plan.pwd_slot = exported_slots.data();
      plan.underscore_slot = exported_slots.data() + kExportSlotBytes;
      plan.slot_bytes = kExportSlotBytes;
    }
    plan.ignored_signals = ignored_signals();
    plan.stdin_fd = command.stdin_fd;
    plan.stdout_fd = command.stdout_fd;
    plan.stderr_fd = command.stderr_fd;
    plan.drop_privileges = has_init;
    plan.in_user_ns = eff_.new_user;
    plan.uid = policy_.uid;
    plan.gid = policy_.gid;
    plan.cap_last = cap_last_;
    plan.seccomp = has_init && eff_.seccomp ? &eff_.seccomp->program : nullptr;
    plan.release_fd = needs_release ? release.read.get() : -1;
    plan.release_before_setup = eff_.new_user;
    std::vector<char> task_stack;
    if (slot) {
      plan.task_stack = slot.slot().task_stack;
      plan.task_stack_size = slot.slot().task_stack_size;
    } else {
      task_stack.resize(kTaskStackBytes);
      plan.task_stack = task_stack.data();
      plan.task_stack_size = task_stack.size();
    }
    plan.error_fd = error.write.get();
    plan.status_fd = status.write.get();
    for (const auto& file : procs_files) {
      plan.cgroup_procs_fds[plan.cgroup_procs_count++] = file.get();
    }
    for (int parent : group_parents) plan.cgroup_parent_fds[plan.cgroup_parent_count++] = parent;
    plan.cgroup_path = group_path.c_str();
    plan.cgroup_v2 = group_v2;
    // v2: the clone below is born in the group, unless PID 1 stays outside and clones the
    // task into it.
    const bool pid1_places_task = task_enters && eff_.isolate;
    plan.task_cgroup_fd = pid1_places_task ? v2_group : -1;

    CloneRequest request{.isolate = eff_.isolate,
                         .new_mount = !jail_template,
                         .new_net = eff_.new_net && !net && !given_net,
                         .new_ipc = eff_.new_ipc,
                         .new_uts = eff_.new_uts,
                         .new_user = eff_.new_user,
                         .cgroup_fd = pid1_places_task ? -1 : v2_group,
                         .shared_slot = slot ? &slot.slot() : nullptr};
    Spawned spawned = clone_child(request, plan);
    UniqueFd pidfd(spawned.pidfd);
    // A namespace made by clone() is the child's from its first instruction on; the files
    // opened now keep counting it after the child is gone.
    NetCounters fresh_net;
    if (eff_.isolate && eff_.new_net && !net && !given_net) {
      fresh_net = NetCounters::open("/proc/" + std::to_string(spawned.pid) + "/net");
    }
    error.write.reset();
    status.write.reset();
    // release.read stays open until the byte is written: a child that died meanwhile must
    // not turn the write into SIGPIPE.

    auto abandon = [&]() {
      // Closing the release pipe unblocks a waiting child, which then exits.
      release.write.reset();
      send_signal(pidfd.get(), SIGKILL);
      siginfo_t info{};
      int rc;
      while ((rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &info, WEXITED)) < 0 &&
             errno == EINTR) {
      }
      if (rc != 0) {  // not reaped: it may still use the slot and the namespace
        slot.abandon();
        net.abandon();
      }
    };
    try {
      if (needs_release) {
        try {
          if (group_during_jail) {
            cgroup = eff_.cgroups->create_group(group_name, eff_.limits, tree_kill);
          }
          if (cgroup && !task_enters && v2_group < 0) {
            // The child leaves a real-time policy itself, but maybe not before this write,
            // which a v1 cpu group without an RT budget refuses for RT processes.
            const int sched = ::sched_getscheduler(0);
            if (sched == SCHED_FIFO || sched == SCHED_RR) {
              struct sched_param param {};
              if (::sched_setscheduler(spawned.pid, SCHED_OTHER, &param) != 0) {
                throw_errno("sched_setscheduler of the sandbox child");
              }
            }
            cgroup->add_process(spawned.pid);
          }
          if (eff_.new_user) write_id_maps(spawned.pid, policy_.uid, policy_.gid);
        } catch (...) {
          // A child that failed on its own explains this failure better: EOF on the release
          // pipe makes a waiting child exit, then its report (if any) is read.
          release.write.reset();
          wait_for_exec(error.read.get());
          throw;
        }
        char go = 1;
        if (::write(release.write.get(), &go, 1) != 1) throw_errno("release the sandbox child");
        release.write.reset();
        release.read.reset();
      }
      wait_for_exec(error.read.get());
    } catch (...) {
      abandon();
      throw;
    }

    if (::fcntl(status.read.get(), F_SETFL, O_NONBLOCK) != 0) {
      abandon();
      throw_errno("fcntl on the status pipe");
    }
    pidfd.release();
    auto process = std::make_unique<ProcessImpl>(
        spawned, has_init, eff_.keeper, std::move(status.read), std::move(exit_poll), task_enters,
        std::move(cgroup), std::move(slot), std::move(net), std::move(fresh_net),
        eff_.degradations);
    // Written by the task before its execve, if it shares our memory; the exec is done now.
    if (const std::int64_t ns = __atomic_load_n(&exec_wall_ns, __ATOMIC_ACQUIRE); ns > 0) {
      process->set_exec_began(std::chrono::system_clock::time_point(
          std::chrono::duration_cast<std::chrono::system_clock::duration>(
              std::chrono::nanoseconds(ns))));
    }
    return process;
  }

 private:
  // Returns once the task has exec'ed (EOF: the close-on-exec error pipe is gone); throws
  // with the child's own report if it failed before.
  static void wait_for_exec(int fd) {
    ChildError record;
    std::size_t got = 0;
    auto* bytes = reinterpret_cast<char*>(&record);
    while (got < sizeof record) {
      pollfd pfd{.fd = fd, .events = POLLIN, .revents = 0};
      int ready = ::poll(&pfd, 1, kSetupTimeoutMs);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) throw_errno("poll on the sandbox error pipe");
      if (ready == 0) {
        throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                    "the sandbox child did not start the task within 30 s");
      }
      ssize_t n = ::read(fd, bytes + got, sizeof record - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("read of the sandbox error pipe");
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    if (got == 0) return;
    if (got < sizeof record) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                  "the sandbox child sent a truncated error report");
    }
    record.detail[sizeof record.detail - 1] = '\0';
    const auto stage = static_cast<ChildStage>(record.stage);
    std::string message =
        std::string(to_string(stage)) + " (" + record.detail + "): " + strerrordesc_np(record.err);
    if (stage == ChildStage::kChdir) {
      throw Error(ErrorKind::kConfig, "bad_workdir",
                  "cannot enter the working directory: " + message);
    }
    throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed", "sandbox setup: " + message);
  }

  Policy policy_;
  Effective eff_;
  int cap_last_;
};

// Fail closed: either the host gives what was asked, or the policy allows going without it
// and the loss is recorded.
class Requirements {
 public:
  explicit Requirements(bool allow_degraded) : allow_(allow_degraded) {}
  bool need(bool available, const std::string& what, const std::string& consequence) {
    if (available) return true;
    if (!allow_) {
      throw Error(ErrorKind::kSandboxSetup, "sandbox_unavailable",
                  what + " (set allowDegraded, or --allow-degraded, to run without it)");
    }
    degradations.push_back(what + ": " + consequence);
    return false;
  }
  std::vector<std::string> degradations;

 private:
  bool allow_;
};

bool has_effective_capability(int cap) {
  struct __user_cap_header_struct header {};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  return (data[cap / 32].effective & (1U << (cap % 32))) != 0;
}

bool has(const std::vector<std::string>& list, const char* item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

}  // namespace

CgroupManager* shared_cgroup_manager(std::string* why) {
  // A failure is not kept for good: it may come from the host's state at that moment (out of
  // descriptors or memory) rather than its make-up, and a worker that stood down for it must
  // find cgroups again once the host recovers. Once a second is enough: a host without
  // cgroups then pays one detection per second, not one per task.
  constexpr auto kRetryAfter = std::chrono::seconds(1);
  static std::mutex mutex;
  static std::unique_ptr<CgroupManager> manager;
  static std::optional<std::chrono::steady_clock::time_point> failed_at;
  static std::string failure;
  std::lock_guard lock(mutex);
  const auto now = std::chrono::steady_clock::now();
  if (!manager && (!failed_at || now - *failed_at >= kRetryAfter)) {
    try {
      manager = CgroupManager::create();
      failed_at.reset();
    } catch (const std::exception& e) {
      failure = e.what();
      failed_at = now;
    }
  }
  if (!manager && why != nullptr) *why = failure;
  return manager.get();
}

bool isolated_tasks_see_sandbox_paths() { return choose_tier(host()) >= Tier::kRootless; }

std::unique_ptr<Sandbox> Sandbox::create(const Policy& policy) {
  const HostCapabilities& caps = host();
  Requirements req(policy.allow_degraded);
  Effective eff;
  eff.limits = policy.limits;

  // The tier first: it decides what a missing cgroup costs.
  const Tier best = choose_tier(caps);
  if (policy.isolate && best < policy.minimum_tier) {
    throw Error(ErrorKind::kSandboxSetup, "sandbox_unavailable",
                std::string("isolation \"") + to_string(policy.minimum_tier) +
                    "\" is required, and this host offers only \"" + to_string(best) +
                    "\": missing " + missing_for(policy.minimum_tier, caps) +
                    (best == Tier::kUnprivileged
                         ? " (isolation \"unprivileged\" runs tasks here under Landlock and "
                           "seccomp, without namespaces)"
                         : ""));
  }
  const bool unprivileged = policy.isolate && best == Tier::kUnprivileged;

  std::string why;
  eff.cgroups = shared_cgroup_manager(&why);
  if (unprivileged && eff.cgroups == nullptr) {
    // Nothing to limit with (a container's cgroupfs is read-only): each limit asked for is
    // refused by name; a task without limits needs no cgroup, since the keeper ends its tree.
    const std::string cause = " (cgroups unavailable: " + why + ")";
    if (policy.limits.memory_bytes) {
      req.need(false, "memory limit" + cause, "the memory limit is not enforced");
    }
    if (policy.limits.pids) {
      // RLIMIT_NPROC is no substitute: it counts every process of the uid, the worker's and
      // other tasks' included, and only at fork.
      req.need(false, "process limit" + cause, "the process limit is not enforced");
    }
    if (policy.limits.cpus) req.need(false, "CPU limit" + cause, "the CPU limit is not enforced");
    eff.limits = {};
  } else if (req.need(eff.cgroups != nullptr, "cgroups (" + why + ")",
                      "no limits, usage is inexact and escaped processes may survive the task")) {
    const auto controllers = eff.cgroups->controllers();
    if (policy.limits.memory_bytes &&
        !req.need(has(controllers, "memory"), "memory cgroup controller",
                  "the memory limit is not enforced")) {
      eff.limits.memory_bytes.reset();
    }
    if (policy.limits.pids && !req.need(has(controllers, "pids"), "pids cgroup controller",
                                        "the process limit is not enforced")) {
      eff.limits.pids.reset();
    }
    if (policy.limits.cpus && !req.need(has(controllers, "cpu"), "cpu cgroup controller",
                                        "the CPU limit is not enforced")) {
      eff.limits.cpus.reset();
    }
  } else {
    eff.limits = {};
  }

  eff.isolate = policy.isolate && !unprivileged;
  eff.tier = policy.isolate ? best : Tier::kNone;
  if (unprivileged) {
    eff.keeper = true;
    static const LandlockSupport landlock = probe_landlock();
    if (req.need(landlock.abi > 0, landlock.why_unavailable(),
                 "the task can read and write whatever the worker's user can")) {
      eff.landlock_abi = landlock.abi;
      eff.landlock_scope = landlock.scopes;
      eff.deny_tcp = policy.network == Network::kNone && landlock.net;
    }
    // A worker that cannot switch ids (a container's non-root user) runs the task as itself:
    // only Landlock's signal scope then keeps the task from signalling the worker.
    eff.keep_ids = !(has_effective_capability(CAP_SETUID) && has_effective_capability(CAP_SETGID));
    req.need(!eff.keep_ids || eff.landlock_scope,
             "signal scoping (Landlock ABI 6, Linux 6.12) or a distinct task uid (CAP_SETUID)",
             "a task can signal the worker and other tasks");
    eff.seccomp = task_seccomp_program(
        {.deny_io_uring = true, .deny_inet = policy.network == Network::kNone});
    // Not refusals: the operator chose this tier. Listed so that a result says how the task
    // ran.
    req.degradations.push_back(
        "mount namespace (unprivileged tier): host paths are visible, Landlock keeps them "
        "unreadable and unwritable outside the system directories and the workspace");
    req.degradations.push_back(
        "pid namespace (unprivileged tier): other processes are visible; the task's tree is "
        "found and killed by walking it");
    if (policy.network == Network::kNone) {
      req.degradations.push_back(
          "network namespace (unprivileged tier): no loopback either, IPv4/IPv6 sockets are "
          "refused (EACCES)");
    }
  }
  if (eff.isolate) {
    eff.new_user = !caps.root;
    const bool core = caps.pid_ns && caps.mount_ns && (caps.root || caps.user_ns);
    if (!req.need(core,
                  caps.root ? "pid and mount namespaces"
                  : caps.userns_problem.empty()
                      ? "pid, mount and user namespaces (the worker is not root)"
                      : "a usable user namespace (the worker is not root): " + caps.userns_problem,
                  "the task runs without isolation, as the worker's user")) {
      eff.isolate = false;
      eff.new_user = false;
    }
  }
  if (eff.isolate) {
    eff.new_net = policy.network == Network::kNone &&
                  req.need(caps.net_ns, "network namespace", "the task has the host's network");
    eff.new_ipc = req.need(caps.ipc_ns, "ipc namespace", "the task shares System V IPC");
    eff.new_uts = req.need(caps.uts_ns, "uts namespace", "the task sees the host's name");
    if (req.need(caps.seccomp, "seccomp", "the task's system calls are not filtered")) {
      eff.seccomp = task_seccomp_program();
    }
  }
  // A root worker has the task enter its cgroup itself, before exec, and keeps PID 1
  // outside: a PID 1 sharing the worker's memory must never be the OOM killer's choice in
  // the task's group, since the kernel kills every process sharing the victim's memory.
  // With a user namespace (a worker that is not root) PID 1 is a copy of the worker, as
  // large as it is: on cgroup v2 the group is delegated to the worker (check_delegation), so
  // PID 1 may still clone the task into it and stay outside, where the OOM killer never
  // weighs it against the task's processes. On v1 it lacks that right: PID 1 is then placed
  // in the group by the worker. Without isolation the task shares the worker's memory only
  // until its execve, suspending the worker meanwhile, so it too must enter the group itself.
  eff.task_enters_cgroup =
      !eff.new_user || (eff.cgroups != nullptr && eff.cgroups->version() == CgroupVersion::kV2);
  eff.pooled_net = eff.new_net && !eff.new_user && policy.reuse_network_namespaces;
  // A given namespace (the egress proxy's) belongs to the initial user namespace: a task in a
  // user namespace of its own could not enter it, and without isolation the task would have
  // the host's network. Never degraded: the task asked for a bounded network.
  if (policy.net_ns_fd >= 0 && (!eff.new_net || eff.new_user)) {
    throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                !eff.new_net ? "a network allow-list needs isolation with a network namespace"
                             : "a network allow-list needs a root worker (its egress proxy "
                               "listens in a network namespace the worker makes)");
  }
  eff.mount_template =
      eff.isolate && !eff.new_user && policy.reuse_mount_templates && mount_templates_supported();
  // clone(2), the fallback for a filtered clone3, cannot clear the worker's signal handlers
  // in a child that would share its memory: such a child is always a copy.
  eff.clone3_filtered = caps.clone3_filtered;
  eff.share_memory =
      !eff.new_user && !eff.clone3_filtered && policy.share_worker_memory && can_share_memory();
  eff.degradations = std::move(req.degradations);
  for (const auto& d : eff.degradations) spdlog::warn("sandbox degraded: {}", d);
  return std::make_unique<SandboxImpl>(policy, std::move(eff));
}

}  // namespace tamma::sandbox
