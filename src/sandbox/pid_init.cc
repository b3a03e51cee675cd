#include "sandbox/pid_init.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/mount.h"
#include "sandbox/net.h"
#include "sandbox/spawn.h"
#include "sandbox/tree_kill.h"
#include "sandbox/user.h"

namespace tamma::sandbox {

namespace {

constexpr int kForwarded[] = {SIGHUP,  SIGINT,  SIGQUIT,  SIGUSR1, SIGUSR2,
                              SIGTERM, SIGALRM, SIGWINCH, SIGCONT};

void ignore_signal(int) {}

void close_if_open(int fd) {
  if (fd >= 0) ::close(fd);
}

// The group the worker made meanwhile: what the task needs to enter it. Returns 0 or errno.
TAMMA_ON_TASK_STACK int open_task_cgroup(ChildPlan& plan) {
  for (int i = 0; i < plan.cgroup_parent_count; ++i) {
    const int fd = plan.cgroup_v2 ? ::openat(plan.cgroup_parent_fds[i], plan.cgroup_path,
                                             O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                                  : ::openat(plan.cgroup_parent_fds[i], plan.cgroup_path,
                                             O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    if (plan.cgroup_v2) {
      plan.task_cgroup_fd = fd;
    } else {
      plan.cgroup_procs_fds[plan.cgroup_procs_count++] = fd;
    }
    ::close(plan.cgroup_parent_fds[i]);
    plan.cgroup_parent_fds[i] = -1;
  }
  return 0;
}

}  // namespace

bool is_forwarded_signal(int sig) {
  for (int forwarded : kForwarded) {
    if (forwarded == sig) return true;
  }
  return false;
}

TAMMA_ON_TASK_STACK void run_pid_init(ChildPlan& plan) {
  // The kernel drops signals to a namespace's init that has no handler for them, even when
  // they are blocked at the moment; a handler plus a blocked mask queues them for sigwaitinfo.
  sigset_t waited;
  sigemptyset(&waited);
  sigaddset(&waited, SIGCHLD);
  struct sigaction action {};
  action.sa_handler = ignore_signal;
  for (int sig : kForwarded) {
    sigaddset(&waited, sig);
    ::sigaction(sig, &action, nullptr);
  }
  ::sigaction(SIGCHLD, &action, nullptr);
  const bool keeper = !plan.own_pid_namespace;
  if (keeper) {
    sigaddset(&waited, kKeeperKillSignal);
    ::sigaction(kKeeperKillSignal, &action, nullptr);
  }
  if (::sigprocmask(SIG_BLOCK, &waited, nullptr) != 0) {
    child_fail(plan.error_fd, ChildStage::kSignals, errno, "sigprocmask");
  }
  // If the worker dies, its tasks die with it instead of running on unsupervised. (The
  // signal follows the thread that cloned us: the worker spawns from the thread that then
  // supervises the task.)
  // A keeper asks for its kill request instead: killed itself, it would leave the tree.
  if (::prctl(PR_SET_PDEATHSIG, keeper ? kKeeperKillSignal : SIGKILL, 0, 0, 0) != 0) {
    child_fail(plan.error_fd, ChildStage::kParentDeath, errno, "PR_SET_PDEATHSIG");
  }
  // Without a pid namespace, orphans of the task would go to the host's (or container's)
  // init, out of reach: as a subreaper the keeper gets them, and they stay in its tree.
  if (keeper && ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    child_fail(plan.error_fd, ChildStage::kSubreaper, errno, "PR_SET_CHILD_SUBREAPER");
  }
  ::umask(022);

  if (plan.net_ns_fd >= 0) {
    if (::setns(plan.net_ns_fd, CLONE_NEWNET) != 0) {
      child_fail(plan.error_fd, ChildStage::kNetNamespace, errno, "setns(CLONE_NEWNET)");
    }
    ::close(plan.net_ns_fd);
  }

  if (plan.mount_template_fd >= 0) {
    // A namespace of our own, copied from the template: its mounts are shared with nobody.
    if (::setns(plan.mount_template_fd, CLONE_NEWNS) != 0) {
      child_fail(plan.error_fd, ChildStage::kMounts, errno, "setns into the jail template");
    }
    if (::unshare(CLONE_NEWNS) != 0) {
      child_fail(plan.error_fd, ChildStage::kMounts, errno, "copy of the jail template");
    }
    ::close(plan.mount_template_fd);
  }
  if (plan.mounts != nullptr) {
    const MountOp* failed = nullptr;
    int err = apply_mount_plan(*plan.mounts, plan.mount_tree_fds, plan.mount_tree_count, &failed);
    if (err != 0) {
      child_fail(plan.error_fd, ChildStage::kMounts, err,
                 failed != nullptr && failed->target != nullptr ? failed->target : "/");
    }
  }
  for (int i = 0; i < plan.mount_tree_count; ++i) close_if_open(plan.mount_tree_fds[i]);
  if (plan.hostname != nullptr) {
    std::size_t length = 0;
    while (plan.hostname[length] != '\0') ++length;
    if (::sethostname(plan.hostname, length) != 0) {
      child_fail(plan.error_fd, ChildStage::kHostname, errno, plan.hostname);
    }
  }
  if (plan.loopback_up) {
    int err = bring_up_loopback();
    if (err != 0) child_fail(plan.error_fd, ChildStage::kLoopback, err, "lo");
  }

  if (plan.drop_privileges) {
    // Without CAP_SETPCAP (a container's non-root user) the set cannot shrink; the task's
    // no_new_privs makes it moot.
    if (int err = drop_bounding_set(plan.cap_last); err != 0 && !(plan.keep_ids && err == EPERM)) {
      child_fail(plan.error_fd, ChildStage::kPrivileges, err, "drop capability bounding set");
    }
    plan.bounding_set_dropped = true;
  }

  // The release: the worker has made the task's group meanwhile (or, for a PID 1 that is a
  // copy of the worker, moved it into the group).
  if (plan.release_fd >= 0) wait_for_release(plan.release_fd);
  if (int err = open_task_cgroup(plan); err != 0) {
    child_fail(plan.error_fd, ChildStage::kCgroup, err, plan.cgroup_path);
  }
  const pid_t task = start_task(plan);
  if (task < 0) child_fail(plan.error_fd, ChildStage::kForkTask, errno, "clone of the task");

  // From here on the task reports its own failures; PID 1 must not hold the task's pipes
  // open, or its readers would never see EOF.
  close_if_open(plan.error_fd);
  close_if_open(plan.stdin_fd);
  close_if_open(plan.stdout_fd);
  close_if_open(plan.stderr_fd);
  close_if_open(plan.task_cgroup_fd);
  for (int i = 0; i < plan.cgroup_procs_count; ++i) close_if_open(plan.cgroup_procs_fds[i]);

  for (;;) {
    siginfo_t info;
    int sig = ::sigwaitinfo(&waited, &info);
    if (sig < 0) continue;  // EINTR
    if (keeper && sig == kKeeperKillSignal) {
      // The worker's kill_all (or its death): the whole tree, then the task's status.
      int status = SIGKILL;  // as a wait status: killed by SIGKILL, if the walk misses it
      kill_descendants(task, &status);
      ssize_t ignored = ::write(plan.status_fd, &status, sizeof status);
      (void)ignored;
      ::_exit(0);
    }
    if (sig != SIGCHLD) {
      if (keeper) {
        // Never kill(-1) here: outside a pid namespace it reaches every process of the uid.
        signal_descendants(sig);
      } else {
        // From inside the namespace, -1 means every process in it but PID 1.
        ::kill(-1, sig);
      }
      continue;
    }
    int status = 0;
    pid_t reaped;
    while ((reaped = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (reaped != task) continue;
      // The tree dies with its main process. Killing and reaping the rest here, rather than
      // leaving it to the kernel when PID 1 exits, means that once the worker has the status
      // nothing of the task runs or waits to be reaped: it reads the final accounting and
      // removes the group while this exit tears the namespaces down.
      if (keeper) {
        kill_descendants(task, nullptr);
      } else {
        ::kill(-1, SIGKILL);
        while (::waitpid(-1, nullptr, __WALL) > 0 || errno == EINTR) {
        }
      }
      ssize_t ignored = ::write(plan.status_fd, &status, sizeof status);
      (void)ignored;  // the parent falls back to PID 1's own status
      ::_exit(0);
    }
  }
}

}  // namespace tamma::sandbox
