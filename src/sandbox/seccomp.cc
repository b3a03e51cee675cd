#include "sandbox/seccomp.h"

#include <errno.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"

namespace tamma::sandbox {

namespace {

// Each would let a task act on something beyond its own process tree and files.
constexpr const char* kDenied[] = {
    // mounts and namespaces (the jail is built before the filter; nothing may change it)
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "setns",
    "unshare",
    "mount_setattr",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    // other processes' memory
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    // kernel code and state
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "lookup_dcookie",
    "uselib",
    "vhangup",
    "nfsservctl",
    // the kernel keyring is shared by every process of a uid
    "keyctl",
    "add_key",
    "request_key",
    // file handles bypass path permission checks; userfaultfd eases kernel exploits
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
};

// clone flags that create namespaces; CLONE_NEWTIME (0x80) overlaps the exit signal byte of
// clone(2), so it can only be asked for through clone3/unshare, which are denied outright.
constexpr unsigned long kNamespaceFlags[] = {CLONE_NEWNS,    CLONE_NEWUTS, CLONE_NEWIPC,
                                             CLONE_NEWUSER,  CLONE_NEWPID, CLONE_NEWNET,
                                             CLONE_NEWCGROUP};

class Context {
 public:
  Context() : ctx_(seccomp_init(SCMP_ACT_ALLOW)) {
    if (ctx_ == nullptr) fail("seccomp_init", ENOMEM);
  }
  ~Context() { seccomp_release(ctx_); }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  scmp_filter_ctx get() const { return ctx_; }

  [[noreturn]] static void fail(const std::string& what, int err) {
    throw Error(ErrorKind::kSandboxSetup, "sandbox_unavailable",
                "seccomp filter: " + what + ": " + std::string(strerrordesc_np(err)));
  }
  static void check(int rc, const std::string& what) {
    if (rc < 0) fail(what, -rc);
  }

 private:
  scmp_filter_ctx ctx_;
};

std::shared_ptr<const SeccompProgram> build(const SeccompOptions& options) {
  Context ctx;
  // Syscalls of another ABI (i386 via int 0x80, x32) are not covered by rules written for
  // the native one: kill the whole process instead of letting them through.
  Context::check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
                 "bad-arch action");
  // A binary search over syscall numbers instead of a linear chain: shorter for every call
  // of the task, and for the kernel, which runs the filter once per syscall number when it
  // is installed (to cache what is always allowed), a third of the install's cost here.
  Context::check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2), "binary tree");
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not a system call on this architecture
    Context::check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), nr, 0), name);
  }
  for (unsigned long flag : kNamespaceFlags) {
    Context::check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                    SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)),
                   "clone flags");
  }
  if (options.deny_io_uring) {
    for (const char* name : {"io_uring_setup", "io_uring_enter", "io_uring_register"}) {
      int nr = seccomp_syscall_resolve_name(name);
      if (nr == __NR_SCMP_ERROR) continue;
      Context::check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), nr, 0), name);
    }
  }
  if (options.deny_inet) {
    // EACCES, as a firewall would answer: tools then report "permission denied", not a bug.
    for (int family : {AF_INET, AF_INET6, AF_PACKET}) {
      Context::check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1,
                                      SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(family))),
                     "socket family");
    }
  }
  // clone3 passes its flags in memory that a filter cannot read; ENOSYS makes glibc and
  // other runtimes fall back to clone(2), whose flags are checked above.
  Context::check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0),
                 "clone3");

  // libseccomp 2.5 exports only to a file descriptor.
  UniqueFd memfd(::memfd_create("tamma-seccomp", MFD_CLOEXEC));
  if (!memfd) throw_errno("memfd_create for the seccomp filter");
  Context::check(seccomp_export_bpf(ctx.get(), memfd.get()), "export");
  off_t size = ::lseek(memfd.get(), 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0) {
    Context::fail("exported program has an odd size", EINVAL);
  }
  auto program = std::make_shared<SeccompProgram>();
  program->instructions.resize(static_cast<std::size_t>(size) / sizeof(sock_filter));
  if (::pread(memfd.get(), program->instructions.data(), static_cast<std::size_t>(size), 0) !=
      size) {
    throw_errno("read back the seccomp filter");
  }
  program->program.len = static_cast<unsigned short>(program->instructions.size());
  program->program.filter = program->instructions.data();
  return program;
}

}  // namespace

std::shared_ptr<const SeccompProgram> task_seccomp_program(const SeccompOptions& options) {
  static std::mutex mutex;
  static std::shared_ptr<const SeccompProgram> cached[4];
  const int index = (options.deny_io_uring ? 1 : 0) | (options.deny_inet ? 2 : 0);
  std::lock_guard lock(mutex);
  if (!cached[index]) cached[index] = build(options);
  return cached[index];
}

bool seccomp_available() {
  // EINVAL: the kernel has no seccomp; otherwise it reports the calling thread's mode.
  if (::prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0) return false;
  std::uint32_t action = SECCOMP_RET_ERRNO;
  return ::syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
}

int install_seccomp(const sock_fprog& program) {
  return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) == 0 ? 0 : errno;
}

}  // namespace tamma::sandbox
