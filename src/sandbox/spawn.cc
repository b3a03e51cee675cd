#include "sandbox/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "sandbox/landlock.h"
#include "sandbox/pid_init.h"
#include "sandbox/seccomp.h"
#include "sandbox/spawn_slot.h"
#include "sandbox/user.h"

#if defined(__x86_64__) && defined(__LP64__)
#define TAMMA_HAS_CLONE3_CALL 1
static_assert(SYS_clone3 == 435 && SYS_exit == 60);
// clone3 that starts the child on a stack of ours and has it call entry(arg), then exit with
// its result: what glibc does inside pthread_create and does not export. (A child on a new
// stack cannot return through the syscall() wrapper.) Returns the child's pid or -errno.
extern "C" long tamma_clone3_call(struct clone_args* args, std::size_t size, int (*entry)(void*),
                                  void* arg);
asm(R"(
    .text
    .globl tamma_clone3_call
    .hidden tamma_clone3_call
    .type tamma_clone3_call, @function
tamma_clone3_call:
    .cfi_startproc
    mov %rdx, %r8
    mov %rcx, %r9
    mov $435, %eax
    syscall
    test %rax, %rax
    jz 1f
    ret
1:
    .cfi_undefined %rip
    xor %ebp, %ebp
    mov %r9, %rdi
    call *%r8
    mov %eax, %edi
    mov $60, %eax
    syscall
    hlt
    .cfi_endproc
    .size tamma_clone3_call, .-tamma_clone3_call
)");
#endif

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

// "<prefix><value>" into slot (bytes long), cut to fit; no allocation after the clone.
TAMMA_ON_TASK_STACK void fill_slot(char* slot, std::size_t bytes, const char* prefix,
                                   const char* value) {
  std::size_t at = 0;
  for (const char* p = prefix; *p != '\0' && at + 1 < bytes; ++p) slot[at++] = *p;
  for (const char* p = value; *p != '\0' && at + 1 < bytes; ++p) slot[at++] = *p;
  slot[at] = '\0';
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

[[noreturn]] void child_main(const ChildPlan& shared);
TAMMA_ON_TASK_STACK int shared_memory_main(void* plan) {
  child_main(*static_cast<const ChildPlan*>(plan));
}

// A real-time worker must not hand its priority to a CI task, which could then starve the
// machine (and v1 cpu cgroups without an RT budget refuse RT processes).
int leave_real_time() {
  int policy = static_cast<int>(::syscall(SYS_sched_getscheduler, 0));
  if (policy != SCHED_FIFO && policy != SCHED_RR) return 0;
  struct sched_param param {};
  return ::syscall(SYS_sched_setscheduler, 0, SCHED_OTHER, &param) == 0 ? 0 : errno;
}

[[noreturn]] TAMMA_ON_TASK_STACK void child_main(const ChildPlan& shared) {
  if (int err = leave_real_time(); err != 0) {
    child_fail(shared.error_fd, ChildStage::kSignals, err, "sched_setscheduler(SCHED_OTHER)");
  }
  ChildPlan plan = shared;  // our own copy of the fds, renumbered below
  int* keep[10 + kMaxMountTrees + 2 * kMaxCgroupProcsFds] = {
      &plan.error_fd,          &plan.release_fd,         &plan.status_fd,      &plan.stdin_fd,
      &plan.stdout_fd,         &plan.stderr_fd,          &plan.task_cgroup_fd, &plan.net_ns_fd,
      &plan.mount_template_fd, &plan.landlock_ruleset_fd};
  std::size_t kept = 10;
  for (int i = 0; i < plan.mount_tree_count; ++i) keep[kept++] = &plan.mount_tree_fds[i];
  for (int i = 0; i < plan.cgroup_procs_count; ++i) keep[kept++] = &plan.cgroup_procs_fds[i];
  for (int i = 0; i < plan.cgroup_parent_count; ++i) keep[kept++] = &plan.cgroup_parent_fds[i];
  if (int err = keep_only_fds(keep, kept); err != 0) {
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
    case ChildStage::kCgroup:
      return "enter the task's cgroup";
    case ChildStage::kNetNamespace:
      return "enter the network namespace";
    case ChildStage::kLandlock:
      return "Landlock";
    case ChildStage::kSubreaper:
      return "child subreaper";
    case ChildStage::kRlimits:
      return "resource limits";
  }
  return "?";
}

int keep_only_fds(int* fds[], std::size_t count) {
  if (count > 24) return EINVAL;
  // Usually every descriptor to keep is above 2 already: closing the ranges between them is
  // two or three system calls, where renumbering takes two per descriptor.
  int sorted[24];
  std::size_t distinct = 0;
  bool all_above_stdio = true;
  for (std::size_t i = 0; i < count; ++i) {
    const int fd = *fds[i];
    if (fd < 0) continue;
    all_above_stdio &= fd > 2;
    std::size_t at = distinct;
    while (at > 0 && sorted[at - 1] > fd) {
      sorted[at] = sorted[at - 1];
      --at;
    }
    if (at > 0 && sorted[at - 1] == fd) {  // the same fd twice (stdout and stderr)
      for (std::size_t j = at; j < distinct; ++j) sorted[j] = sorted[j + 1];
      continue;
    }
    sorted[at] = fd;
    ++distinct;
  }
  if (all_above_stdio) {
    unsigned int next = 3;
    for (std::size_t i = 0; i < distinct; ++i) {
      const auto fd = static_cast<unsigned int>(sorted[i]);
      if (fd > next && ::syscall(SYS_close_range, next, fd - 1, 0) != 0) {
        if (errno != ENOSYS) return errno;
        for (unsigned int gap = next; gap < fd; ++gap) ::close(static_cast<int>(gap));
      }
      next = fd + 1;
    }
    return close_from(next, 0);
  }

  int kept = 0;
  for (std::size_t i = 0; i < count; ++i) kept += *fds[i] >= 0 ? 1 : 0;
  const int first = 3;
  // Two passes: a target number may be one of the sources, so every source is first
  // copied above the target range.
  int copies[24];
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

TAMMA_ON_TASK_STACK void wait_for_release(int release_fd) {
  char go = 0;
  ssize_t got;
  do {
    got = ::read(release_fd, &go, 1);
  } while (got < 0 && errno == EINTR);
  // EOF: the parent could not place us in the cgroups and has given up on us.
  if (got != 1) ::_exit(1);
  ::close(release_fd);
}

TAMMA_ON_TASK_STACK pid_t start_task(ChildPlan& plan) {
  if (plan.task_cgroup_fd >= 0) {
#ifdef TAMMA_HAS_CLONE3_CALL
    // v2, PID 1 outside the task's group: the task is born in it.
    struct clone_args args {};
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.stack = reinterpret_cast<std::uint64_t>(plan.task_stack);
    args.stack_size = plan.task_stack_size & ~static_cast<std::size_t>(15);
    args.cgroup = static_cast<std::uint64_t>(plan.task_cgroup_fd);
    long pid = tamma_clone3_call(&args, sizeof args, task_main, &plan);
    if (pid >= 0) return static_cast<pid_t>(pid);
    if (pid != -ENOSYS) {
      errno = static_cast<int>(-pid);
      return -1;
    }
#endif
    // clone3 filtered (a container's seccomp profile answers it with ENOSYS): the task enters
    // the group itself before exec, as on v1, through the group's cgroup.procs. The task
    // shares PID 1's memory until execve, a window v1 has as well.
    if (plan.cgroup_procs_count >= kMaxCgroupProcsFds) {
      errno = EMFILE;
      return -1;
    }
    const int procs = ::openat(plan.task_cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
    if (procs < 0) return -1;
    plan.cgroup_procs_fds[plan.cgroup_procs_count++] = procs;
  }
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
  // First, so that everything the task does is counted and limited (v1; on v2 it was born
  // in its group). Still root: only root moves a process between v1 groups.
  for (int i = 0; i < plan.cgroup_procs_count; ++i) {
    if (::write(plan.cgroup_procs_fds[i], "0", 1) != 1) {
      child_fail(plan.error_fd, ChildStage::kCgroup, errno, "cgroup.procs");
    }
  }
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
    if (plan.unprivileged) {
      // Real-time priority would let a task starve the worker of the CPU it shares.
      struct rlimit no_rt {};
      if (::setrlimit(RLIMIT_RTPRIO, &no_rt) != 0) {
        child_fail(plan.error_fd, ChildStage::kRlimits, errno, "RLIMIT_RTPRIO");
      }
    }
    PrivilegeDrop drop{.uid = plan.uid,
                       .gid = plan.gid,
                       .cap_last = plan.cap_last,
                       .in_user_ns = plan.in_user_ns,
                       .bounding_set_dropped = plan.bounding_set_dropped,
                       .keep_ids = plan.keep_ids};
    DropStep step = DropStep::kNone;
    if (int err = drop_privileges(drop, &step); err != 0) {
      child_fail(plan.error_fd, ChildStage::kPrivileges, err, to_string(step));
    }
  }
  // After the switch of uid, so the task can only work where its own uid may.
  if (::chdir(plan.workdir) != 0)
    child_fail(plan.error_fd, ChildStage::kChdir, errno, plan.workdir);
  // After no_new_privs, which an unprivileged landlock_restrict_self needs.
  if (plan.landlock_ruleset_fd >= 0) {
    if (int err = landlock_enter(plan.landlock_ruleset_fd); err != 0) {
      child_fail(plan.error_fd, ChildStage::kLandlock, err, "landlock_restrict_self");
    }
    ::close(plan.landlock_ruleset_fd);
  }
  // Last: the filter also applies to everything above.
  if (plan.seccomp != nullptr) {
    if (int err = install_seccomp(*plan.seccomp); err != 0) {
      child_fail(plan.error_fd, ChildStage::kSeccomp, err, "seccomp(SET_MODE_FILTER)");
    }
  }
  if (plan.pwd_slot != nullptr) {
    fill_slot(plan.pwd_slot, plan.slot_bytes, "PWD=", plan.workdir);
    // The directory as the kernel names it, as bash's getcwd() would (symlinks resolved).
    if (::getcwd(plan.pwd_slot + 4, plan.slot_bytes - 4) == nullptr) {
      fill_slot(plan.pwd_slot, plan.slot_bytes, "PWD=", plan.workdir);
    }
  }
  if (plan.exec_wall_ns != nullptr) {
    timespec now{};
    if (::clock_gettime(CLOCK_REALTIME, &now) == 0) {
      __atomic_store_n(plan.exec_wall_ns,
                       static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec,
                       __ATOMIC_RELEASE);
    }
  }
  int err = ENOENT;
  bool denied = false;
  for (const char* const* candidate = plan.exec_candidates; *candidate != nullptr; ++candidate) {
    if (plan.underscore_slot != nullptr) {
      fill_slot(plan.underscore_slot, plan.slot_bytes, "_=", *candidate);
    }
    ::execve(*candidate, plan.argv, plan.envp);
    err = errno;
    // As execvp: keep looking after "not here"; report "no permission" if nothing else runs.
    if (err == EACCES) {
      denied = true;
    } else if (err != ENOENT && err != ENOTDIR && err != ELOOP && err != ENAMETOOLONG) {
      break;
    }
  }
  if (plan.fallback_argv != nullptr) {
    // Not found, not permitted, no #! line, ...: the shell reports it (or runs the file as a
    // script) exactly as if it had been asked first.
    ::execve(plan.fallback_argv[0], plan.fallback_argv, plan.fallback_envp);
    err = errno;
    denied = false;
  }
  exec_failed(plan, denied && (err == ENOENT || err == ENOTDIR) ? EACCES : err);
}

namespace {

// The child shares the worker's memory: no page tables to copy and no copy-on-write faults on
// either side (most of a sandbox's start on a VM). It runs on a stack of the slot with a thread
// block nobody else uses, and never returns here. Returns the pid or -errno.
long clone_sharing_memory(const clone_args& base, bool isolate, const SpawnSlot& slot,
                          const ChildPlan& plan) {
#ifdef TAMMA_HAS_CLONE3_CALL
  struct clone_args args = base;
  args.flags |= CLONE_VM | CLONE_SETTLS;
  args.tls = reinterpret_cast<std::uint64_t>(slot.thread_pointer);
  if (isolate) {
    // PID 1, for the task's whole life.
    args.stack = reinterpret_cast<std::uint64_t>(slot.init_stack);
    args.stack_size = slot.init_stack_size & ~static_cast<std::size_t>(15);
  } else {
    // The task itself, until execve: as vfork, the caller resumes once it has exec'ed.
    args.flags |= CLONE_VFORK;
    args.stack = reinterpret_cast<std::uint64_t>(slot.task_stack);
    args.stack_size = slot.task_stack_size & ~static_cast<std::size_t>(15);
  }
  return tamma_clone3_call(&args, sizeof args, shared_memory_main, const_cast<ChildPlan*>(&plan));
#else
  (void)base, (void)isolate, (void)slot, (void)plan;
  return -ENOSYS;
#endif
}

// Set once clone3 answered ENOSYS: a seccomp filter (Docker's and podman's default profiles)
// or a kernel before 5.3. Later spawns go straight to clone(2).
std::atomic<bool> clone3_filtered{false};

// The signal handlers of the worker, reset in a copy made by clone(2), which has no
// CLONE_CLEAR_SIGHAND; signals stay blocked until then (see clone_copy).
void reset_handlers() {
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction current {};
    if (::sigaction(sig, nullptr, &current) != 0) continue;  // glibc's own signals: EINVAL
    if (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN) continue;
    struct sigaction reset {};
    reset.sa_handler = SIG_DFL;
    ::sigaction(sig, &reset, nullptr);
  }
}

// A fork-style copy through clone(2), for hosts where clone3 is filtered. The pidfd comes
// back through the parent_tid argument (CLONE_PIDFD, Linux 5.2). clone(2) takes no flag
// above bit 31, so neither CLONE_CLEAR_SIGHAND nor CLONE_INTO_CGROUP: every signal is
// blocked around the call, and the child resets the handlers before it unblocks them, so
// no handler of the worker ever runs in the copy.
long clone_copy(std::uint64_t flags, int* pidfd, const ChildPlan& plan) {
  const auto low = static_cast<unsigned long>(flags & 0xffffffffULL & ~0xffULL) | SIGCHLD;
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  long pid = ::syscall(SYS_clone, low, nullptr, pidfd, nullptr, nullptr);
  if (pid == 0) {
    reset_handlers();
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    child_main(plan);
  }
  const int err = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return pid;
}

[[noreturn]] void throw_clone_failed(const CloneRequest& request, int err) {
  throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
              std::string(clone3_filtered.load(std::memory_order_relaxed) ? "clone" : "clone3") +
                  " of the sandbox (namespaces" +
                  (request.cgroup_fd >= 0 ? ", into the task cgroup" : "") +
                  "): " + strerrordesc_np(err));
}

}  // namespace

Spawned clone_child(const CloneRequest& request, const ChildPlan& plan) {
  std::uint64_t flags = CLONE_PIDFD;
  if (request.isolate) {
    flags |= CLONE_NEWPID;
    if (request.new_mount) flags |= CLONE_NEWNS;
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
  const bool filtered = clone3_filtered.load(std::memory_order_relaxed);
  if (request.shared_slot != nullptr && !filtered) {
    long pid = clone_sharing_memory(args, request.isolate, *request.shared_slot, plan);
    if (pid >= 0) return Spawned{.pid = static_cast<pid_t>(pid), .pidfd = pidfd};
    // EINVAL: a kernel without CLONE_CLEAR_SIGHAND, where a worker handler could run in the
    // child on the worker's own memory. ENOSYS: clone3 filtered, and clone(2) has no
    // CLONE_CLEAR_SIGHAND either. A copy is safe in both cases; it is made below.
    if (pid == -ENOSYS) clone3_filtered.store(true, std::memory_order_relaxed);
    if (pid != -EINVAL && pid != -ENOSYS) throw_clone_failed(request, static_cast<int>(-pid));
  }
  long pid = -1;
  if (!clone3_filtered.load(std::memory_order_relaxed)) {
    // No stack: like fork, the child continues on a copy of this one.
    pid = ::syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0 && errno == EINVAL) {
      // Kernels before 5.5 lack CLONE_CLEAR_SIGHAND: there a worker handler stays installed
      // in the child until execve resets it, a window accepted on such kernels.
      args.flags &= ~static_cast<std::uint64_t>(CLONE_CLEAR_SIGHAND);
      pid = ::syscall(SYS_clone3, &args, sizeof args);
    }
    if (pid == 0) child_main(plan);
    if (pid < 0 && errno == ENOSYS) clone3_filtered.store(true, std::memory_order_relaxed);
  }
  if (clone3_filtered.load(std::memory_order_relaxed)) {
    if (request.cgroup_fd >= 0) {
      // Only clone3 can place a child in a v2 group at birth; the caller places it by
      // writing cgroup.procs instead (host().clone3_filtered), so this is a caller's bug.
      throw Error(ErrorKind::kSandboxSetup, "sandbox_unavailable",
                  "clone3 is filtered (ENOSYS, a seccomp profile such as a container's "
                  "default), so the sandbox cannot be started inside its cgroup v2 group");
    }
    pid = clone_copy(flags & ~static_cast<std::uint64_t>(CLONE_CLEAR_SIGHAND), &pidfd, plan);
  }
  if (pid < 0) throw_clone_failed(request, errno);
  return Spawned{.pid = static_cast<pid_t>(pid), .pidfd = pidfd};
}

bool clone3_seen_filtered() { return clone3_filtered.load(std::memory_order_relaxed); }

}  // namespace tamma::sandbox
