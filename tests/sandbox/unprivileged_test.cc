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

#include "common/error.h"
#include "sandbox/host.h"
#include "sandbox/landlock.h"
#include "sandbox/run_helpers.h"
#include "sandbox/sandbox.h"
#include "support/test_support.h"

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
// The unprivileged tier is what it runs in there (TAMMA_SANDBOX_MINIMUM_TIER).
int run_under_imitation(const std::string& variant, const std::string& filter) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("TAMMA_SANDBOX_MINIMUM_TIER", "unprivileged", 1);
    // LeakSanitizer stops the world with ptrace, which the imitation's seccomp profile denies,
    // as a container's does; under the sanitizer build the inner run checks everything else.
    const char* asan = ::getenv("ASAN_OPTIONS");
    const std::string options =
        (asan != nullptr && *asan != '\0' ? std::string(asan) + ":" : std::string()) +
        "detect_leaks=0";
    ::setenv("ASAN_OPTIONS", options.c_str(), 1);
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

// On the host (as root): runs the current test under both variants of the imitation and
// returns true; under the imitation, false (the test goes on with its checks).
bool ran_under_imitation() {
  if (!imitation().empty()) return false;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = std::string(info->test_suite_name()) + "." + info->name();
  for (const char* v : {"docker-root", "restricted"}) {
    SCOPED_TRACE(v);
    EXPECT_EQ(run_under_imitation(v, name), 0) << name << " failed under the imitation";
  }
  return true;
}

Command command(const fs::path& workspace, std::vector<std::string> argv) {
  Command c;
  c.argv = std::move(argv);
  c.env = {"PATH=/usr/bin:/bin"};
  c.workspace = workspace;
  return c;
}

Policy unprivileged_policy() {
  Policy policy;
  policy.minimum_tier = Tier::kUnprivileged;
  return policy;
}

// What a ruleset handles must be exactly what the kernel's ABI knows: a right the kernel
// does not know makes landlock_create_ruleset fail (EINVAL) on an older kernel, such as
// Debian 12's 6.1 (ABI 2), and a right left out would not be denied.
TEST(UnprivilegedTier, LandlockRightsFollowTheAbi) {
  EXPECT_EQ(landlock_fs_rights(0), 0u);
  EXPECT_EQ(landlock_fs_rights(1), 0x1fffu);  // EXECUTE .. MAKE_SYM
  EXPECT_EQ(landlock_fs_rights(2), 0x3fffu);  // + REFER: Debian 12
  EXPECT_EQ(landlock_fs_rights(3), 0x7fffu);  // + TRUNCATE
  EXPECT_EQ(landlock_fs_rights(4), 0x7fffu);  // network rights only: Ubuntu 24.04
  EXPECT_EQ(landlock_fs_rights(5), 0xffffu);  // + IOCTL_DEV
  EXPECT_EQ(landlock_fs_rights(7), 0xffffu);  // this machine
  const LandlockSupport here = probe_landlock();
  if (here.abi > 0) {
    // The kernel accepts a ruleset of every right of its own ABI and of each older one.
    for (int abi = 1; abi <= here.abi; ++abi) {
      SCOPED_TRACE(abi);
      LandlockPlan plan;
      plan.abi = abi;
      plan.read_exec = {"/usr"};
      plan.writable = {"/tmp"};
      EXPECT_NO_THROW(build_landlock_ruleset(plan));
    }
  }
}

TEST(UnprivilegedTier, BelowTheMinimumTierEveryTaskIsRefusedNamingWhatIsMissing) {
  if (::geteuid() != 0 && imitation().empty()) {
    GTEST_SKIP() << "the container imitation needs root, as a container engine does";
  }
  if (ran_under_imitation()) return;
  Policy policy;  // the default minimum: rootless
  try {
    Sandbox::create(policy);
    ADD_FAILURE() << "a host without namespaces met the rootless tier";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "sandbox_unavailable");
    const std::string message = e.what();
    EXPECT_NE(message.find("pid and mount namespaces"), std::string::npos) << message;
    EXPECT_NE(message.find("\"unprivileged\""), std::string::npos) << message;
  }
  // In the tier, a limit it cannot enforce is refused by name, or run without and listed.
  policy = unprivileged_policy();
  policy.limits.memory_bytes = 64ull << 20;
  EXPECT_THROW(Sandbox::create(policy), Error);
  policy.allow_degraded = true;
  tamma::testing::TempDir dir;
  auto sandbox = Sandbox::create(policy);
  auto r = testing::run(*sandbox, command(dir.path(), {"/bin/true"}));
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit->code, 0);
  bool listed = false;
  for (const auto& d : r.degradations) listed |= d.rfind("memory limit", 0) == 0;
  EXPECT_TRUE(listed) << "the unenforced memory limit is not in the result's degradations";
}

// The keeper, not a pid namespace, ends the tree: a kill_all while the task runs reaches
// its setsid'd and double-forked descendants, and the task cannot kill the keeper.
TEST(UnprivilegedTier, KillAllReachesEveryDescendantAndTheKeeperSurvivesTheTask) {
  if (::geteuid() != 0 && imitation().empty()) {
    GTEST_SKIP() << "the container imitation needs root, as a container engine does";
  }
  if (ran_under_imitation()) return;
  const HostCapabilities caps = probe_host();
  if (!caps.landlock_scopes && !caps.can_switch_ids) {
    // Before Linux 6.12 (Landlock ABI < 6), with no CAP_SETUID to give the task a uid of its
    // own (the restricted variant), nothing keeps the task from signalling its keeper or the
    // worker: the tier refuses, naming it (the VM's 6.1 kernel is such a host).
    try {
      Sandbox::create(unprivileged_policy());
      ADD_FAILURE() << "a task that could signal the worker was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), "sandbox_unavailable");
      EXPECT_NE(std::string(e.what()).find("signal scoping"), std::string::npos) << e.what();
    }
    return;
  }
  tamma::testing::TempDir dir;
  testing::NoLeaks leaks;
  const std::string marker = "tamma-keeper-" + std::to_string(::getpid());
  auto sandbox = Sandbox::create(unprivileged_policy());
  // The task tries to kill its keeper (its parent) first: another uid, or Landlock's scope.
  auto r = testing::run(
      *sandbox,
      command(dir.path(),
              {"/bin/sh", "-c",
               "kill -9 $PPID 2>/dev/null && echo killed-keeper; setsid sh -c 'sleep 1000; : " +
                   marker + "' & (sh -c 'sleep 1000; : " + marker + "' &); : > " +
                   dir.path().string() + "/ready; sleep 1000"}),
      {.timeout = std::chrono::seconds(60), .started = [&](Process& p) {
         while (!fs::exists(dir.path() / "ready")) {
           ASSERT_FALSE(p.poll_exit()) << "the task ended early";
           ::usleep(10'000);
         }
         p.kill_all();
       }});
  ASSERT_TRUE(r.exit);
  EXPECT_FALSE(r.killed_by_test);
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(r.exit->signaled);
  EXPECT_EQ(r.exit->signal, SIGKILL);
  int left = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string cmdline = testing::slurp(entry.path() / "cmdline");
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    left += cmdline.find(marker) != std::string::npos ? 1 : 0;
  }
  EXPECT_EQ(left, 0) << "kill_all missed a descendant";
  leaks.check();
}

// The CLI maps a refusal to exit 6, and `isolation: unprivileged` runs the task; doctor
// names the tier.
TEST(UnprivilegedTier, TheCliRefusesWithExit6AndDoctorNamesTheTier) {
  if (::geteuid() != 0 && imitation().empty()) {
    GTEST_SKIP() << "the container imitation needs root, as a container engine does";
  }
  if (ran_under_imitation()) return;
  tamma::testing::TempDir root;
  // Without a mount namespace the task (uid 65534 under a root worker) reaches its workspace
  // through the host's directories: the workspace root must be searchable by it.
  fs::permissions(root.path(), fs::perms::owner_all | fs::perms::group_exec |
                                   fs::perms::group_read | fs::perms::others_exec |
                                   fs::perms::others_read);
  const std::vector<std::string> run{
      TAMMA_WORKER_BINARY, "run", "--json",  "--workspace-root", root.path().string(), "--",
      "/bin/sh",           "-c",  "echo ran"};
  auto refused = tamma::testing::run_process(run, {"TAMMA_ISOLATION=rootless"});
  EXPECT_EQ(refused.exit_code, 6) << refused.err;
  EXPECT_NE(refused.out.find("sandbox_unavailable"), std::string::npos) << refused.out;
  // The default task limits (memory, pids) cannot be enforced here: allowDegraded runs it.
  auto ran = tamma::testing::run_process(
      run, {"TAMMA_ISOLATION=unprivileged", "TAMMA_ALLOW_DEGRADED=true"});
  EXPECT_EQ(ran.exit_code, 0) << ran.out << ran.err;
  EXPECT_NE(ran.out.find("ran\\n"), std::string::npos) << ran.out;

  // A disk limit cannot be enforced either (no loop mount): with allowDegraded the task runs
  // and its result says the limit was not there.
  std::vector<std::string> with_disk = run;
  with_disk.insert(with_disk.begin() + 2, {"--disk", "50M"});
  auto disk = tamma::testing::run_process(
      with_disk, {"TAMMA_ISOLATION=unprivileged", "TAMMA_ALLOW_DEGRADED=true"});
  EXPECT_EQ(disk.exit_code, 0) << disk.out << disk.err;
  EXPECT_NE(disk.out.find("disk limit not enforced"), std::string::npos) << disk.out;
  // A background child holding the output pipe does not keep the task (nor the worker) alive:
  // the tree is killed when the main process ends.
  const std::string sleeper = "sleep 600." + std::to_string(::getpid());
  std::vector<std::string> held = run;
  held.back() = sleeper + " & echo started";
  auto pipe = tamma::testing::run_process(
      held, {"TAMMA_ISOLATION=unprivileged", "TAMMA_ALLOW_DEGRADED=true"},
      std::chrono::seconds(60));
  EXPECT_FALSE(pipe.timed_out) << "a held pipe hung the worker";
  EXPECT_EQ(pipe.exit_code, 0) << pipe.out << pipe.err;
  EXPECT_TRUE(tamma::testing::processes_with(sleeper).empty()) << "the background child lived on";

  auto doctor = tamma::testing::run_process(
      {TAMMA_WORKER_BINARY, "doctor", "--json", "--workspace-root", root.path().string()},
      {"TAMMA_ISOLATION=unprivileged"});
  EXPECT_EQ(doctor.exit_code, 0) << doctor.out << doctor.err;
  EXPECT_NE(doctor.out.find("\"tier\": \"unprivileged\""), std::string::npos) << doctor.out;
  EXPECT_NE(doctor.out.find("\"meetsMinimum\": true"), std::string::npos) << doctor.out;
  auto below = tamma::testing::run_process(
      {TAMMA_WORKER_BINARY, "doctor", "--json", "--workspace-root", root.path().string()},
      {"TAMMA_ISOLATION=rootless"});
  EXPECT_EQ(below.exit_code, 6);
  EXPECT_NE(below.out.find("\"meetsMinimum\": false"), std::string::npos) << below.out;
}

}  // namespace
}  // namespace tamma::sandbox
