// probe_userns: each step of entering a user namespace, as the sandbox takes them.

#include "sandbox/userns_probe.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"

namespace tamma::sandbox {
namespace {

// The child's steps, in the order the sandbox's child takes them (spawn.cc, mount.cc).
enum Step : int {
  kNone = 0,
  kMakePrivate,
  kTmpfs,
  kHostname,
  kSetIds,
  kProc,
};

const char* step_name(int step) {
  switch (step) {
    case kMakePrivate:
      return "making / private (mount MS_PRIVATE)";
    case kTmpfs:
      return "mounting a tmpfs";
    case kHostname:
      return "sethostname";
    case kSetIds:
      return "setresuid/setresgid";
    case kProc:
      return "mounting proc";
    default:
      return "?";
  }
}

struct Report {
  int step = kNone;
  int err = 0;
};

// Child side, after clone: async-signal-safe calls only (the worker may have threads).
[[noreturn]] void child_steps(int release_fd, int report_fd) {
  char byte = 0;
  Report report;
  if (::read(release_fd, &byte, 1) != 1) ::_exit(1);  // the parent gave up
  auto fail = [&](int step) {
    report = {step, errno};
    (void)!::write(report_fd, &report, sizeof report);
    ::_exit(0);
  };
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail(kMakePrivate);
  if (::mount("tamma-probe", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") != 0) {
    fail(kTmpfs);
  }
  if (::sethostname("tamma-probe", 11) != 0) fail(kHostname);
  if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) fail(kSetIds);
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    fail(kProc);
  }
  (void)!::write(report_fd, &report, sizeof report);
  ::_exit(0);
}

// Returns 0 or errno.
int write_proc(pid_t pid, const char* name, const std::string& value) {
  const std::string path = "/proc/" + std::to_string(pid) + "/" + name;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno;
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return errno != 0 ? errno : EIO;
  }
  return 0;
}

bool apparmor_restricts_userns() {
  UniqueFd fd(
      ::open("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", O_RDONLY | O_CLOEXEC));
  char value = 0;
  return fd && ::read(fd.get(), &value, 1) == 1 && value == '1';
}

}  // namespace

UsernsProbe probe_userns() {
  UsernsProbe probe;
  probe.apparmor_restricted = apparmor_restricts_userns();
  std::array<int, 2> release{-1, -1};
  std::array<int, 2> report{-1, -1};
  if (::pipe2(release.data(), O_CLOEXEC) != 0) {
    probe.failed_step = "pipe";
    probe.err = errno;
    return probe;
  }
  UniqueFd release_read(release[0]), release_write(release[1]);
  if (::pipe2(report.data(), O_CLOEXEC) != 0) {
    probe.failed_step = "pipe";
    probe.err = errno;
    return probe;
  }
  UniqueFd report_read(report[0]), report_write(report[1]);

  // clone(2), not clone3: a container's seccomp profile may answer clone3 with ENOSYS while
  // the namespaces themselves are allowed. With no stack given it forks.
  constexpr unsigned long kFlags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET |
                                   CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
  const long pid = ::syscall(SYS_clone, kFlags, nullptr, nullptr, nullptr, 0);
  if (pid == 0) child_steps(release_read.get(), report_write.get());
  if (pid < 0) {
    probe.failed_step = "clone";
    probe.err = errno;
    return probe;
  }
  probe.created = true;
  release_read.reset();
  report_write.reset();

  const auto child = static_cast<pid_t>(pid);
  const std::string uid_map = "0 " + std::to_string(::geteuid()) + " 1\n";
  const std::string gid_map = "0 " + std::to_string(::getegid()) + " 1\n";
  if (int err = write_proc(child, "uid_map", uid_map); err != 0) {
    probe.failed_step = "writing uid_map";
    probe.err = err;
  } else if (err = write_proc(child, "setgroups", "deny"); err != 0) {
    probe.failed_step = "writing setgroups";
    probe.err = err;
  } else if (err = write_proc(child, "gid_map", gid_map); err != 0) {
    probe.failed_step = "writing gid_map";
    probe.err = err;
  }
  if (probe.failed_step.empty()) {
    const char go = 1;
    if (::write(release_write.get(), &go, 1) == 1) {
      Report got;
      ssize_t n = 0;
      while ((n = ::read(report_read.get(), &got, sizeof got)) < 0 && errno == EINTR) {
      }
      if (n != static_cast<ssize_t>(sizeof got)) {
        probe.failed_step = "the probe's child ended without a report";
        probe.err = 0;
      } else if (got.step != kNone) {
        probe.failed_step = step_name(got.step);
        probe.err = got.err;
      }
    }
  }
  release_write.reset();  // a child still waiting to be released exits on EOF
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return probe;
}

std::string UsernsProbe::problem() const {
  if (usable()) return {};
  std::string text;
  if (!created) {
    text = "user namespace cannot be created";
  } else {
    text = "user namespace created, but " + failed_step + " in it failed";
  }
  if (err != 0) {
    text += " (";
    text += ::strerrorname_np(err) != nullptr ? ::strerrorname_np(err) : std::strerror(err);
    text += ")";
  }
  if (created && apparmor_restricted) {
    text += ": AppArmor kernel.apparmor_restrict_unprivileged_userns=1 (Ubuntu 23.10+)";
  }
  return text;
}

std::string UsernsProbe::fix() const {
  if (usable()) return {};
  if (created && apparmor_restricted) {
    return "copy the profile the package ships, "
           "/usr/share/doc/tamma-worker/examples/apparmor.d/tamma-worker ('userns,' for "
           "/usr/bin/tamma-worker only), to /etc/apparmor.d/ and load it with apparmor_parser "
           "-r; or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (kept in "
           "/etc/sysctl.d/), which allows it to every program";
  }
  if (!created && (err == EPERM || err == ENOSPC)) {
    return "allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0, "
           "kernel.unprivileged_userns_clone=1 where it exists; a container needs a seccomp "
           "profile allowing CLONE_NEWUSER), or run the worker as root";
  }
  return {};
}

}  // namespace tamma::sandbox
