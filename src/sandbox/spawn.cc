#include "sandbox/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "sandbox/pid_init.h"
#include "sandbox/seccomp.h"
#include "sandbox/user.h"

namespace tamma::sandbox {

namespace {

std::size_t c_length(const char* text) {
  std::size_t n = 0;
  while (text[n] != '\0') ++n;
  return n;
}

void put(int fd, const char* text) {
  ssize_t ignored = ::write(fd, text, c_length(text));
  (void)ignored;  // nothing to do if the task's stderr is gone
}

int close_from(unsigned int first, unsigned int flags) {
  if (::syscall(SYS_close_range, first, ~0U, flags) == 0) return 0;
  if (errno != ENOSYS || flags != 0) return errno;
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return errno;
  for (rlim_t fd = first; fd < limit.rlim_cur; ++fd) ::close(static_cast<int>(fd));
  return 0;
}

// The task's view of the world starts clean: default dispositions (exec keeps ignored
// signals ignored, and the worker ignores SIGPIPE) and nothing blocked.
int reset_signals(std::uint64_t ignored) {
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG && sig <= 64; ++sig) {
    if ((ignored & (std::uint64_t{1} << (sig - 1))) == 0) continue;
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &action, nullptr);  // glibc's internal signals answer EINVAL: fine
  }
  sigset_t none;
  sigemptyset(&none);
  return ::sigprocmask(SIG_SETMASK, &none, nullptr) == 0 ? 0 : errno;
}

int open_null(int flags) { return ::open("/dev/null", flags | O_CLOEXEC); }

int setup_stdio(const ChildPlan& plan) {
  const int sources[3] = {plan.stdin_fd, plan.stdout_fd, plan.stderr_fd};
  for (int target = 0; target < 3; ++target) {
    int source = sources[target];
    bool opened = false;
    if (source < 0) {
      source = open_null(target == 0 ? O_RDONLY : O_WRONLY);
      if (source < 0) return errno;
      opened = true;
    }
    // Sources were renumbered above 2, so no dup2 here overwrites a later source.
    if (::dup2(source, target) < 0) return errno;
    if (opened) ::close(source);
  }
  return 0;
}

[[noreturn]] TAMMA_ON_TASK_STACK void exec_failed(const ChildPlan& plan, int err) {
  put(2, "tamma-worker: cannot execute ");
  put(2, plan.argv[0]);
  put(2, ": ");
  put(2, err == ENOENT ? "command not found" : strerrordesc_np(err));
  put(2, "\n");
  // The shell's conventions: 127 not found, 126 found but not executable.
  ::_exit(err == ENOENT || err == ENOTDIR ? 127 : 126);
}

TAMMA_ON_TASK_STACK int task_main(void* plan) { exec_task(*static_cast<const ChildPlan*>(plan)); }

// A real-time worker must not hand its priority to a CI task, which could then starve the
// machine (and v1 cpu cgroups without an RT budget refuse RT processes).
int leave_real_time() {
  int policy = static_cast<int>(::syscall(SYS_sched_getscheduler, 0));
  if (policy != SCHED_FIFO && policy != SCHED_RR) return 0;
  struct sched_param param {};
  return ::syscall(SYS_sched_setscheduler, 0, SCHED_OTHER, &param) == 0 ? 0 : errno;
}

[[noreturn]] void child_main(const ChildPlan& shared) {
  if (int err = leave_real_time(); err != 0) {
    child_fail(shared.error_fd, ChildStage::kSignals, err, "sched_setscheduler(SCHED_OTHER)");
  }
  ChildPlan plan = shared;  // our own copy of the fds, renumbered below
  int* keep[] = {&plan.error_fd, &plan.release_fd, &plan.status_fd,
                 &plan.stdin_fd, &plan.stdout_fd,  &plan.stderr_fd};
  if (int err = keep_only_fds(keep, sizeof keep / sizeof keep[0]); err != 0) {
    child_fail(shared.error_fd, ChildStage::kFds, err, "renumber descriptors");
  }
  if (plan.release_fd >= 0 && (plan.release_before_setup || !plan.isolate)) {
    wait_for_release(plan.release_fd);
    plan.release_fd = -1;
  }
  if (plan.isolate) run_pid_init(plan);
  exec_task(plan);
}

}  // namespace

const char* to_string(ChildStage stage) {
  switch (stage) {
    case ChildStage::kRelease:
      return "wait for the parent";
    case ChildStage::kFds:
      return "descriptors";
    case ChildStage::kSignals:
      return "signals";
    case ChildStage::kMounts:
      return "mount jail";
    case ChildStage::kHostname:
      return "hostname";
    case ChildStage::kLoopback:
      return "loopback interface";
    case ChildStage::kForkTask:
      return "fork the task";
    case ChildStage::kSession:
      return "setsid";
    case ChildStage::kStdio:
      return "stdio";
    case ChildStage::kChdir:
      return "chdir to the working directory";
    case ChildStage::kPrivileges:
      return "drop privileges";
    case ChildStage::kNoNewPrivs:
      return "no_new_privs";
    case ChildStage::kCapabilities:
      return "capabilities";
    case ChildStage::kSeccomp:
      return "seccomp filter";
    case ChildStage::kParentDeath:
      return "parent death signal";
  }
  return "?";
}

int keep_only_fds(int* fds[], std::size_t count) {
  int kept = 0;
  for (std::size_t i = 0; i < count; ++i) kept += *fds[i] >= 0 ? 1 : 0;
  const int first = 3;
  // Two passes: a target number may be one of the sources, so every source is first
  // copied above the target range.
  int copies[16];
  if (count > 16) return EINVAL;
  for (std::size_t i = 0; i < count; ++i) {
    copies[i] = -1;
    if (*fds[i] < 0) continue;
    copies[i] = ::fcntl(*fds[i], F_DUPFD_CLOEXEC, first + kept);
    if (copies[i] < 0) return errno;
  }
  int next = first;
  for (std::size_t i = 0; i < count; ++i) {
    if (copies[i] < 0) continue;
    if (::dup3(copies[i], next, O_CLOEXEC) < 0) return errno;
    *fds[i] = next++;
  }
  return close_from(static_cast<unsigned int>(first + kept), 0);
}

std::uint64_t ignored_signals() {
  int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno("open /proc/self/status");
  char buffer[8192];
  ssize_t got = ::read(fd, buffer, sizeof buffer - 1);
  ::close(fd);
  if (got <= 0) throw_errno("read /proc/self/status");
  buffer[got] = '\0';
  const char* line = ::strstr(buffer, "\nSigIgn:");
  if (line == nullptr) {
    // Unknown layout: reset every signal rather than risk an inherited SIG_IGN.
    return ~std::uint64_t{0};
  }
  return std::strtoull(line + 8, nullptr, 16);
}

void wait_for_release(int release_fd) {
  char go = 0;
  ssize_t got;
  do {
    got = ::read(release_fd, &go, 1);
  } while (got < 0 && errno == EINTR);
  // EOF: the parent could not place us in the cgroups and has given up on us.
  if (got != 1) ::_exit(1);
  ::close(release_fd);
}

pid_t start_task(const ChildPlan& plan) {
  // glibc's clone() is a bare system call stub: unlike fork() it runs no atfork handlers and
  // takes none of the locks that some thread of the worker may have held at clone3 time.
  auto top = reinterpret_cast<std::uintptr_t>(plan.task_stack + plan.task_stack_size);
  top &= ~static_cast<std::uintptr_t>(15);  // the ABI wants a 16-byte aligned stack
  return ::clone(task_main, reinterpret_cast<void*>(top), CLONE_VM | CLONE_VFORK | SIGCHLD,
                 const_cast<ChildPlan*>(&plan));
}

TAMMA_ON_TASK_STACK void child_fail(int error_fd, ChildStage stage, int err, const char* detail) {
  ChildError record;
  record.stage = static_cast<int>(stage);
  record.err = err;
  std::size_t n = 0;
  for (; detail != nullptr && detail[n] != '\0' && n + 1 < sizeof record.detail; ++n) {
    record.detail[n] = detail[n];
  }
  record.detail[n] = '\0';
  if (error_fd >= 0) {
    ssize_t ignored = ::write(error_fd, &record, sizeof record);
    (void)ignored;  // the parent then sees an exit without a record
  }
  ::_exit(125);
}

TAMMA_ON_TASK_STACK void exec_task(const ChildPlan& plan) {
  if (int err = reset_signals(plan.ignored_signals); err != 0) {
    child_fail(plan.error_fd, ChildStage::kSignals, err, "sigprocmask");
  }
  // Its own session and process group: terminal signals of the worker do not reach it, and
  // without a pid namespace the group is what the worker signals.
  if (::setsid() < 0) child_fail(plan.error_fd, ChildStage::kSession, errno, "setsid");
  if (int err = setup_stdio(plan); err != 0) {
    child_fail(plan.error_fd, ChildStage::kStdio, err, "stdin/stdout/stderr");
  }
  // Close-on-exec rather than close: the error pipe must survive a failed execve.
  if (int err = close_from(3, CLOSE_RANGE_CLOEXEC); err != 0) {
    child_fail(plan.error_fd, ChildStage::kFds, err, "close_range");
  }
  if (plan.drop_privileges) {
    // Core files of a sandboxed task could be handed to a host-side core handler.
    struct rlimit no_core {};
    ::setrlimit(RLIMIT_CORE, &no_core);
    PrivilegeDrop drop{
        .uid = plan.uid, .gid = plan.gid, .cap_last = plan.cap_last, .in_user_ns = plan.in_user_ns};
    DropStep step = DropStep::kNone;
    if (int err = drop_privileges(drop, &step); err != 0) {
      child_fail(plan.error_fd, ChildStage::kPrivileges, err, to_string(step));
    }
  }
  // After the switch of uid, so the task can only work where its own uid may.
  if (::chdir(plan.workdir) != 0)
    child_fail(plan.error_fd, ChildStage::kChdir, errno, plan.workdir);
  // Last: the filter also applies to everything above.
  if (plan.seccomp != nullptr) {
    if (int err = install_seccomp(*plan.seccomp); err != 0) {
      child_fail(plan.error_fd, ChildStage::kSeccomp, err, "seccomp(SET_MODE_FILTER)");
    }
  }
  int err = ENOENT;
  bool denied = false;
  for (const char* const* candidate = plan.exec_candidates; *candidate != nullptr; ++candidate) {
    ::execve(*candidate, plan.argv, plan.envp);
    err = errno;
    // As execvp: keep looking after "not here"; report "no permission" if nothing else runs.
    if (err == EACCES) {
      denied = true;
    } else if (err != ENOENT && err != ENOTDIR && err != ELOOP && err != ENAMETOOLONG) {
      break;
    }
  }
  exec_failed(plan, denied && (err == ENOENT || err == ENOTDIR) ? EACCES : err);
}

Spawned clone_child(const CloneRequest& request, const ChildPlan& plan) {
  std::uint64_t flags = CLONE_PIDFD;
  if (request.isolate) {
    flags |= CLONE_NEWPID | CLONE_NEWNS;
    if (request.new_ipc) flags |= CLONE_NEWIPC;
    if (request.new_uts) flags |= CLONE_NEWUTS;
    if (request.new_net) flags |= CLONE_NEWNET;
    if (request.new_user) flags |= CLONE_NEWUSER;
  }
  // Handlers of the worker must not run in the child before its own are set (a handler
  // writing to a self-pipe would write to whatever that fd number is in the child).
  flags |= CLONE_CLEAR_SIGHAND;
  int pidfd = -1;
  struct clone_args args {};
  args.pidfd = reinterpret_cast<std::uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  if (request.cgroup_fd >= 0) {
    flags |= CLONE_INTO_CGROUP;
    args.cgroup = static_cast<std::uint64_t>(request.cgroup_fd);
  }
  args.flags = flags;
  // No stack: like fork, the child continues on a copy of this one.
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0 && errno == EINVAL) {
    // Kernels before 5.5 lack CLONE_CLEAR_SIGHAND: there a worker handler stays installed in
    // the child until execve resets it, a window accepted on such kernels.
    args.flags &= ~static_cast<std::uint64_t>(CLONE_CLEAR_SIGHAND);
    pid = ::syscall(SYS_clone3, &args, sizeof args);
  }
  if (pid == 0) child_main(plan);
  if (pid < 0) {
    int err = errno;
    throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                std::string("clone3 of the sandbox (namespaces") +
                    (request.cgroup_fd >= 0 ? ", into the task cgroup" : "") +
                    "): " + strerrordesc_np(err));
  }
  return Spawned{.pid = static_cast<pid_t>(pid), .pidfd = pidfd};
}

}  // namespace tamma::sandbox
