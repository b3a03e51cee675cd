// The unprivileged tier (ADR 0030 item 3): hosts where no namespace can be made, tested under
// an imitation of a default container (tests/sandbox/helpers/container_imitation.cc), since
// no container engine runs on this machine.

#include <errno.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "sandbox/run_helpers.h"

namespace tamma::sandbox {
namespace {

namespace fs = std::filesystem;

// The variant of the imitation this process runs under, or "" on the host.
std::string imitation() {
  const char* v = std::getenv("TAMMA_CONTAINER_IMITATION");
  return v == nullptr ? "" : v;
}

std::string status_field(const std::string& name) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + ":", 0) == 0) {
      const auto value = line.find_first_not_of(" \t", name.size() + 1);
      return value == std::string::npos ? "" : line.substr(value);
    }
  }
  return "";
}

std::string errno_of(long rc) { return rc >= 0 ? "ok" : strerrorname_np(errno); }

// Runs this test binary, filtered to `filter`, under the imitation; returns its exit status.
int run_under_imitation(const std::string& variant, const std::string& filter) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string flag = "--gtest_filter=" + filter;
    ::execl(TAMMA_CONTAINER_IMITATION, TAMMA_CONTAINER_IMITATION, variant.c_str(), "--",
            self.c_str(), flag.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The imitation is only a test if it took: what a default container denies is denied here.
// On the host, the test runs itself under both variants.
TEST(UnprivilegedTier, ImitationIsFaithful) {
  const std::string variant = imitation();
  if (variant.empty()) {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "the container imitation needs root, as a container engine does";
    }
    for (const char* v : {"docker-root", "restricted"}) {
      SCOPED_TRACE(v);
      EXPECT_EQ(run_under_imitation(v, "UnprivilegedTier.ImitationIsFaithful"), 0);
    }
    return;
  }
  EXPECT_EQ(errno_of(::unshare(CLONE_NEWUSER)), "EPERM");
  EXPECT_EQ(errno_of(::unshare(CLONE_NEWNS)), "EPERM");
  EXPECT_EQ(errno_of(::syscall(SYS_clone3, nullptr, std::size_t{0})), "ENOSYS");
  const long child =
      ::syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (child == 0) ::_exit(0);
  EXPECT_EQ(errno_of(child), "EPERM");
  EXPECT_EQ(errno_of(::mkdir("/sys/fs/cgroup/tamma-imitation-probe", 0755)), "EROFS");
  if (fs::exists("/sys/fs/cgroup/unified")) {
    EXPECT_EQ(errno_of(::mkdir("/sys/fs/cgroup/unified/tamma-imitation-probe", 0755)), "EROFS");
  }
  EXPECT_FALSE(fs::exists("/dev/loop-control"));
  EXPECT_TRUE(fs::exists("/dev/null"));
  EXPECT_EQ(status_field("Seccomp"), "2");
  if (variant == "docker-root") {
    EXPECT_EQ(::geteuid(), 0u);
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
    // SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP: Docker's default set.
    EXPECT_EQ(status_field("CapEff"), "00000000a80425fb");
    EXPECT_EQ(status_field("CapBnd"), "00000000a80425fb");
    EXPECT_EQ(status_field("NoNewPrivs"), "0");
  } else {
    EXPECT_EQ(::geteuid(), 65534u);
    EXPECT_EQ(status_field("CapEff"), "0000000000000000");
    EXPECT_EQ(status_field("CapBnd"), "0000000000000000");
    EXPECT_EQ(status_field("NoNewPrivs"), "1");
  }
}

}  // namespace
}  // namespace tamma::sandbox
