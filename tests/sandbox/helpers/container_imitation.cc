// container_imitation VARIANT -- PROGRAM ARGS...
//
// Runs PROGRAM as a process of a default Docker/Kubernetes container would run, on a host
// where no container engine runs (this machine has neither dockerd nor podman). It must be
// started as root, and does what an engine does to its container's first process:
//
//   1. its own mount and pid namespaces, with a minimal init as PID 1 (`docker run --init`),
//      which reaps orphans and passes the program's exit status on;
//   2. cgroupfs and /sys read-only, a fresh /proc with /proc/sys read-only, and a tmpfs /dev
//      with null, zero, full, random, urandom, tty, pts, ptmx and shm, and no loop-control;
//   3. a seccomp filter imitating Docker's default profile for a container without
//      CAP_SYS_ADMIN (moby profiles/seccomp/default_linux.go): namespace flags of clone
//      EPERM, clone3 ENOSYS, unshare/setns/mount and the new mount API, bpf, perf_event_open,
//      keyrings, modules, kexec, reboot, swap, clocks, userfaultfd, open_by_handle_at,
//      io_uring EPERM; chroot EPERM without CAP_SYS_CHROOT. The rule list is written by hand
//      from that profile: it denies what the profile leaves out of its allowlist that
//      matters to a sandbox, and lets the rest through (the real profile denies by default).
//   4. privileges, in one of two variants:
//        docker-root  uid 0 with Docker's 14 default capabilities, no_new_privs unset;
//        restricted   uid/gid 65534, no capabilities at all, no_new_privs set (Kubernetes
//                     Pod Security "restricted": runAsNonRoot, drop ALL,
//                     allowPrivilegeEscalation false).
//
// TAMMA_CONTAINER_IMITATION=VARIANT is set for the program, so that tests know where they
// run. Exits with the program's status (128+signal when killed), 125 when setup fails.

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "container_imitation: %s: %s\n", what.c_str(), strerror(errno));
  std::exit(125);
}

void check(bool ok, const std::string& what) {
  if (!ok) die(what);
}

// Every mount point below /sys/fs/cgroup, deepest last, from our own mountinfo.
std::vector<std::string> cgroup_mounts() {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, device, root, mount_point;
    fields >> id >> parent >> device >> root >> mount_point;
    if (mount_point == "/sys/fs/cgroup" || mount_point.rfind("/sys/fs/cgroup/", 0) == 0) {
      out.push_back(mount_point);
    }
  }
  return out;
}

// A bind remount keeps the mount's other flags only if they are passed again.
void remount_readonly(const std::string& path) {
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  if (::mount(nullptr, path.c_str(), nullptr, flags, nullptr) != 0) {
    // /sys on some hosts is not noexec: try again without it.
    flags &= ~static_cast<unsigned long>(MS_NOEXEC);
    check(::mount(nullptr, path.c_str(), nullptr, flags, nullptr) == 0,
          "remount read-only " + path);
  }
}

void make_dev() {
  check(::mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k") == 0,
        "tmpfs on /dev");
  struct Node {
    const char* name;
    unsigned major, minor;
  };
  for (const Node& n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7},
                        Node{"random", 1, 8}, Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    const std::string path = std::string("/dev/") + n.name;
    check(::mknod(path.c_str(), S_IFCHR | 0666, makedev(n.major, n.minor)) == 0, "mknod " + path);
    check(::chmod(path.c_str(), 0666) == 0, "chmod " + path);  // the umask took some bits
  }
  check(::mkdir("/dev/pts", 0755) == 0 && ::mkdir("/dev/shm", 01777) == 0, "mkdir in /dev");
  check(::mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620") == 0,
        "devpts");
  check(::mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=1777,size=65536k") == 0,
        "/dev/shm");
  check(::symlink("pts/ptmx", "/dev/ptmx") == 0 && ::symlink("/proc/self/fd", "/dev/fd") == 0 &&
            ::symlink("/proc/self/fd/0", "/dev/stdin") == 0 &&
            ::symlink("/proc/self/fd/1", "/dev/stdout") == 0 &&
            ::symlink("/proc/self/fd/2", "/dev/stderr") == 0,
        "symlinks in /dev");
}

void filesystems() {
  check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, "make / rprivate");
  // A remount changes one mount only: /sys read-only leaves the cgroup mounts below it as
  // they were, so each is remounted too.
  for (const auto& path : cgroup_mounts()) remount_readonly(path);
  remount_readonly("/sys");
  check(::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0,
        "fresh /proc");
  check(::mount("/proc/sys", "/proc/sys", nullptr, MS_BIND, nullptr) == 0, "bind /proc/sys");
  remount_readonly("/proc/sys");
  make_dev();
}

// Docker's default profile, as it applies to a container without CAP_SYS_ADMIN.
void load_profile(bool chroot_allowed) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  check(ctx != nullptr, "seccomp_init");
  // The profile covers the three x86 ABIs with the same rules.
  seccomp_arch_add(ctx, SCMP_ARCH_X86);
  seccomp_arch_add(ctx, SCMP_ARCH_X32);
  // runc sets no_new_privs only when asked (allowPrivilegeEscalation: false).
  check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) == 0, "seccomp NNP attribute");
  std::vector<const char*> denied = {
      "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "mount_setattr", "move_mount",
      "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "bpf", "perf_event_open", "keyctl",
      "add_key", "request_key", "userfaultfd", "open_by_handle_at", "kexec_load", "kexec_file_load",
      "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct",
      "syslog", "settimeofday", "clock_settime", "clock_adjtime", "iopl", "ioperm", "quotactl",
      "quotactl_fd", "lookup_dcookie", "vhangup", "uselib",
      // io_uring left moby's allowlist in 2023 (Docker 25); Debian's docker.io 20.10 still
      // allows it, which is why the sandbox's own filter denies it in any case.
      "nfsservctl", "io_uring_setup", "io_uring_enter", "io_uring_register",
      // allowed only with CAP_SYS_ADMIN, CAP_SYS_PTRACE or CAP_SYS_NICE, none of which a
      // default container has
      "fanotify_init", "kcmp", "get_mempolicy", "set_mempolicy", "mbind", "move_pages"};
  if (!chroot_allowed) denied.push_back("chroot");
  for (const char* name : denied) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;
    check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0) == 0, std::string("rule ") + name);
  }
  // clone is allowed only without namespace flags: the profile's single masked rule.
  for (scmp_datum_t flag :
       {scmp_datum_t{CLONE_NEWNS}, scmp_datum_t{CLONE_NEWUTS}, scmp_datum_t{CLONE_NEWIPC},
        scmp_datum_t{CLONE_NEWUSER}, scmp_datum_t{CLONE_NEWPID}, scmp_datum_t{CLONE_NEWNET},
        scmp_datum_t{CLONE_NEWCGROUP}}) {
    check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)) == 0,
          "rule clone");
  }
  check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) == 0, "rule clone3");
  const int rc = seccomp_load(ctx);
  seccomp_release(ctx);
  errno = -rc;
  check(rc == 0, "seccomp_load");
}

void set_caps(std::uint64_t keep) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  data[0].effective = data[0].permitted = static_cast<__u32>(keep);
  data[1].effective = data[1].permitted = static_cast<__u32>(keep >> 32);
  check(::syscall(SYS_capset, &header, data) == 0, "capset");
}

int last_cap() {
  std::ifstream in("/proc/sys/kernel/cap_last_cap");
  int n = 40;
  in >> n;
  return n;
}

void drop_privileges(const std::string& variant) {
  const int last = last_cap();
  if (variant == "docker-root") {
    const int caps[] = {CAP_CHOWN,   CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,
                        CAP_MKNOD,   CAP_NET_RAW,      CAP_SETGID,           CAP_SETUID,
                        CAP_SETFCAP, CAP_SETPCAP,      CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT,
                        CAP_KILL,    CAP_AUDIT_WRITE};
    std::uint64_t keep = 0;
    for (int cap : caps) keep |= std::uint64_t{1} << cap;
    for (int cap = 0; cap <= last; ++cap) {
      if ((keep & (std::uint64_t{1} << cap)) == 0) {
        check(::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0, "PR_CAPBSET_DROP");
      }
    }
    set_caps(keep);
    return;
  }
  for (int cap = 0; cap <= last; ++cap) {
    check(::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0, "PR_CAPBSET_DROP");
  }
  check(::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == 0, "ambient caps");
  const gid_t none[] = {65534};
  check(::setgroups(1, none) == 0, "setgroups");
  check(::setresgid(65534, 65534, 65534) == 0, "setresgid");
  check(::setresuid(65534, 65534, 65534) == 0, "setresuid");  // clears every capability
  check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
}

int wait_status_to_exit(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || std::string(argv[2]) != "--" ||
      (std::string(argv[1]) != "docker-root" && std::string(argv[1]) != "restricted")) {
    std::fprintf(stderr, "usage: container_imitation docker-root|restricted -- PROGRAM ARGS...\n");
    return 125;
  }
  const std::string variant = argv[1];
  if (::geteuid() != 0) {
    errno = EPERM;
    die("must run as root, as a container engine does");
  }
  check(::unshare(CLONE_NEWNS | CLONE_NEWPID) == 0, "unshare(NEWNS|NEWPID)");
  const pid_t init = ::fork();
  check(init >= 0, "fork");
  if (init > 0) {
    // Outside: forward the usual termination signals' effect by simply waiting.
    int status = 0;
    while (::waitpid(init, &status, 0) < 0 && errno == EINTR) {
    }
    return wait_status_to_exit(status);
  }
  // PID 1 of the container: dies with the outside process, which dies with the test.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  filesystems();
  const pid_t program = ::fork();
  check(program >= 0, "fork the program");
  if (program == 0) {
    load_profile(/*chroot_allowed=*/variant == "docker-root");
    drop_privileges(variant);
    ::setenv("TAMMA_CONTAINER_IMITATION", variant.c_str(), 1);
    ::execv(argv[3], argv + 3);
    die(std::string("exec ") + argv[3]);
  }
  // A minimal init: reap every orphan until the program exits, then its status is ours.
  // Whatever it left behind dies with this namespace when PID 1 exits.
  for (;;) {
    int status = 0;
    const pid_t reaped = ::waitpid(-1, &status, 0);
    if (reaped < 0 && errno == EINTR) continue;
    if (reaped < 0) die("waitpid");
    if (reaped == program) return wait_status_to_exit(status);
  }
}
