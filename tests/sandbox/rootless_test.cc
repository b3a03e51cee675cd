// A worker that is not root (issue 12, ADR 0030): its cgroup is the one delegated to it, as
// systemd's Delegate=yes does (a directory and its cgroup.procs, cgroup.subtree_control and
// cgroup.threads chowned to the worker), and its namespaces come from a user namespace that
// must be usable step by step, not just creatable.
//
// Each test prepares the delegation as root, the way systemd does, and runs its other half
// as uid kWorkerUid in a process of its own (exec'd, so the half starts with none of the
// root process's cached host facts). On a hybrid host (this machine) the unified hierarchy has
// no controllers: the delegated group there gives tree kill and membership but no limits;
// on a pure v2 host (the VM) it gives the limits too. The VM's rootless job also runs the
// whole sandbox suite as a non-root user in a delegated group (scripts/vm/run-v2-tests.sh).

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <optional>
#include <string>

#include "common/error.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"
#include "sandbox/host.h"
#include "sandbox/run_helpers.h"
#include "sandbox/sandbox.h"
#include "sandbox/tier.h"
#include "sandbox/userns_probe.h"
#include "sandbox/workspace.h"
#include "support/test_support.h"

namespace tamma::sandbox {
namespace {

namespace fs = std::filesystem;
namespace ci = cgroup_internal;
using testing::run;

// Not 65534 (the task's default uid) and not any uid a test elsewhere uses.
constexpr uid_t kWorkerUid = 4242;

bool is_cgroup2(const fs::path& path) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC;
}

// Where a root test can make groups in the cgroup2 hierarchy: /sys/fs/cgroup on a pure v2
// host, /sys/fs/cgroup/unified on a hybrid one.
std::optional<fs::path> cgroup2_mount() {
  for (const char* path : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
    if (is_cgroup2(path)) return fs::path(path);
  }
  return std::nullopt;
}

// The root test process's own cgroup2 group: new groups go below it, so that they are inside
// whatever delegation the test itself runs in (the VM's guest runs it in the root).
fs::path own_cgroup2(const fs::path& mount) {
  const auto own = ci::parse_proc_cgroup(ci::read_file("/proc/self/cgroup"));
  for (const auto& entry : own) {
    if (entry.hierarchy_id == 0 && entry.controllers.empty()) {
      const auto mounts = ci::parse_mountinfo(ci::read_file("/proc/self/mountinfo"));
      for (const auto& m : mounts) {
        if (m.fstype == "cgroup2" && fs::path(m.mount_point) == mount) {
          return ci::resolve_own(m, entry.path);
        }
      }
    }
  }
  return mount;
}

// A group made for the test and delegated to kWorkerUid as systemd does (or only its
// directory, when `fully` is false); removed with everything below it at the end.
class DelegatedGroup {
 public:
  DelegatedGroup(const fs::path& parent, bool fully)
      : path_(parent / ("tamma-deleg-test-" + std::to_string(::getpid()))) {
    if (::mkdir(path_.c_str(), 0755) != 0) {
      throw std::runtime_error("mkdir " + path_.string() + ": " + std::strerror(errno));
    }
    chown(path_);
    if (fully) {
      for (const char* file : {"cgroup.procs", "cgroup.subtree_control", "cgroup.threads"}) {
        chown(path_ / file);
      }
    }
  }
  ~DelegatedGroup() {
    // Whatever the half left (it should leave nothing): killed, then removed bottom-up.
    for (const auto& group : ci::subtree_bottom_up(path_)) {
      if (fs::exists(group / "cgroup.kill")) (void)ci::try_write_file(group / "cgroup.kill", "1");
      (void)ci::rmdir_retry(group, std::chrono::milliseconds(2'000));
    }
  }
  DelegatedGroup(const DelegatedGroup&) = delete;
  DelegatedGroup& operator=(const DelegatedGroup&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  static void chown(const fs::path& path) {
    if (::chown(path.c_str(), kWorkerUid, kWorkerUid) != 0) {
      throw std::runtime_error("chown " + path.string() + ": " + std::strerror(errno));
    }
  }
  fs::path path_;
};

// Runs the DISABLED_ test `half` of this binary as kWorkerUid, in `group` when given (moved
// there by root before dropping, as systemd starts a service in its delegated group), with
// `env` set. Returns its exit status (0: the half passed).
int run_half_as_worker(const std::string& half, const std::optional<fs::path>& group,
                       const std::vector<std::pair<std::string, std::string>>& env) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (group && ci::try_write_file(*group / "cgroup.procs", "0") != 0) ::_exit(89);
    for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
    // Run sharded, the child would take its own shard of the one test its filter names.
    for (const char* name :
         {"GTEST_TOTAL_SHARDS", "GTEST_SHARD_INDEX", "GTEST_SHARD_STATUS_FILE"}) {
      ::unsetenv(name);
    }
    if (::setgroups(0, nullptr) != 0 || ::setresgid(kWorkerUid, kWorkerUid, kWorkerUid) != 0 ||
        ::setresuid(kWorkerUid, kWorkerUid, kWorkerUid) != 0) {
      ::_exit(90);
    }
    const std::string filter = "--gtest_filter=" + half;
    ::execl(self.c_str(), self.c_str(), filter.c_str(), "--gtest_also_run_disabled_tests",
            static_cast<char*>(nullptr));
    ::_exit(91);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string env_or_fail(const char* name) {
  const char* value = ::getenv(name);
  if (value == nullptr) throw std::runtime_error(std::string(name) + " is not set");
  return value;
}

// ---- the cgroup delegation check --------------------------------------------------------

TEST(CgroupDelegation, DISABLED_NonRootHalfManagerOutsideTheGroup) {
  ASSERT_NE(::geteuid(), 0u);
  ci::V2Options options;
  options.mount = env_or_fail("TAMMA_TEST_MOUNT");
  options.own = env_or_fail("TAMMA_TEST_GROUP");
  const std::string expect = env_or_fail("TAMMA_TEST_EXPECT");
  if (expect == "refused") {
    try {
      ci::make_v2_manager(options);
      FAIL() << "a group whose cgroup.procs is root's was taken as delegated";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), "cgroup_not_delegated") << e.what();
      const std::string what = e.what();
      EXPECT_NE(what.find(options.own.string() + "/cgroup.procs"), std::string::npos) << what;
      EXPECT_NE(what.find("owned by uid 0"), std::string::npos) << what;
      EXPECT_NE(what.find("uid " + std::to_string(kWorkerUid)), std::string::npos) << what;
      EXPECT_NE(what.find("Delegate=yes"), std::string::npos) << what;
    }
    // Nothing was made on the way to the refusal.
    EXPECT_TRUE(fs::is_empty(options.own) ||
                std::none_of(fs::directory_iterator(options.own), fs::directory_iterator(),
                             [](const auto& e) { return e.is_directory(); }));
    return;
  }
  auto manager = ci::make_v2_manager(options);
  EXPECT_EQ(fs::path(manager->subtree()).parent_path(), options.own);
  auto group = manager->create_group("task-1", Limits{}, TreeKill::kByGroup);
  EXPECT_TRUE(fs::is_directory(group->path()));
  struct stat st {};
  ASSERT_EQ(::stat(group->path().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kWorkerUid);
}

class CgroupDelegationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root to delegate a group as systemd does; the non-root half is "
                      "what this machine's CI and the VM's rootless job run as";
    }
    mount_ = cgroup2_mount();
    if (!mount_) GTEST_SKIP() << "NO CGROUP2 HIERARCHY MOUNTED HERE: delegation not exercised";
  }
  std::optional<fs::path> mount_;
};

TEST_F(CgroupDelegationTest, AGroupWhoseProcsFileIsNotTheWorkersIsRefusedNamingIt) {
  DelegatedGroup group(own_cgroup2(*mount_), /*fully=*/false);
  EXPECT_EQ(run_half_as_worker("CgroupDelegation.DISABLED_NonRootHalfManagerOutsideTheGroup", {},
                               {{"TAMMA_TEST_MOUNT", mount_->string()},
                                {"TAMMA_TEST_GROUP", group.path().string()},
                                {"TAMMA_TEST_EXPECT", "refused"}}),
            0)
      << "the non-root half failed (its output is above)";
}

TEST_F(CgroupDelegationTest, AGroupDelegatedAsSystemdDoesIsUsedWithoutRoot) {
  DelegatedGroup group(own_cgroup2(*mount_), /*fully=*/true);
  EXPECT_EQ(run_half_as_worker("CgroupDelegation.DISABLED_NonRootHalfManagerOutsideTheGroup", {},
                               {{"TAMMA_TEST_MOUNT", mount_->string()},
                                {"TAMMA_TEST_GROUP", group.path().string()},
                                {"TAMMA_TEST_EXPECT", "used"}}),
            0)
      << "the non-root half failed (its output is above)";
}

// ---- a non-root worker started in its delegated group -----------------------------------

// As a service started with Delegate=yes: in its delegated group, not root, user namespaces.
TEST(RootlessWorker, DISABLED_NonRootHalf) {
  ASSERT_NE(::geteuid(), 0u);
  const fs::path group = env_or_fail("TAMMA_TEST_GROUP");
  const fs::path workspace = env_or_fail("TAMMA_TEST_WORKSPACE");
  const bool pure_v2 = env_or_fail("TAMMA_TEST_PURE_V2") == "1";

  std::string why;
  CgroupManager* manager = shared_cgroup_manager(&why);
  ASSERT_NE(manager, nullptr) << why;
  EXPECT_EQ(manager->version(), CgroupVersion::kV2);
  EXPECT_EQ(fs::path(manager->subtree()).parent_path(), group);
  // On a pure v2 host the worker left its delegated group for a leaf, so that controllers
  // can be enabled there; the unified hierarchy of a hybrid host has none to enable.
  const auto self = ci::read_file("/proc/self/cgroup");
  const std::string expected = "/" + group.filename().string() + (pure_v2 ? "/tamma-leaf\n" : "\n");
  EXPECT_NE(self.find(expected), std::string::npos) << self;

  const HostCapabilities caps = probe_host();
  EXPECT_TRUE(caps.user_ns) << caps.userns_problem;
  EXPECT_EQ(caps.disk_limit_method, "none");
  // What doctor names this host: the rootless tier, and it meets the default minimum.
  EXPECT_EQ(choose_tier(caps), Tier::kRootless) << missing_for(Tier::kRootless, caps);

  Command c;
  c.env = {"PATH=/usr/bin:/bin"};
  c.workspace = workspace;
  Policy policy;
  policy.limits.memory_bytes = 48ull << 20;
  policy.limits.pids = 64;
  if (pure_v2) {
    // The full sandbox, limits included, without root.
    auto sandbox = Sandbox::create(policy);
    c.argv = {"/bin/sh", "-c",
              "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; "
              "touch /workspace/made && echo wrote; head -c 200000000 /dev/zero | "
              "tail -c 150000000 >/dev/null; echo survived"};
    auto r = run(*sandbox, c);
    ASSERT_TRUE(r.exit);
    EXPECT_TRUE(r.degradations.empty());
    EXPECT_EQ(r.out.substr(0, r.out.find("wrote\n") + 6),
              "65534\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nwrote\n");
    EXPECT_GE(r.usage.oom_kills, 1u) << "tail buffering 200 MB under a 48 MiB limit was not "
                                        "OOM-killed: "
                                     << r.out << r.err;
    EXPECT_TRUE(fs::exists(workspace / "made"));
  } else {
    // Hybrid: the unified hierarchy has none of the controllers. Limits are refused by name,
    // and a task without limits runs in a group of the delegated subtree.
    try {
      Sandbox::create(policy);
      ADD_FAILURE() << "a memory limit was accepted without a memory controller";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), "sandbox_unavailable");
      EXPECT_NE(std::string(e.what()).find("memory cgroup controller"), std::string::npos)
          << e.what();
    }
    auto sandbox = Sandbox::create(Policy{});
    c.argv = {"/bin/sh", "-c", "id -u; (sleep 600 &); echo started"};
    auto r = run(*sandbox, c);
    ASSERT_TRUE(r.exit);
    EXPECT_EQ(r.exit->code, 0) << r.err;
    EXPECT_EQ(r.out, "65534\nstarted\n");
    EXPECT_TRUE(r.degradations.empty());
  }
  // Nothing of the tasks is left in the worker's subtree: every task group is gone.
  for (const auto& entry : fs::directory_iterator(manager->subtree())) {
    EXPECT_FALSE(entry.is_directory()) << entry.path() << " was left behind";
  }

  // The disk limit needs root (a loop-mounted image): refused, and said.
  try {
    Workspace::create(workspace.parent_path() / "ws", "t1", 50ull << 20);
    ADD_FAILURE() << "a disk limit was accepted by a worker that is not root";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "disk_limit_needs_root") << e.what();
  }
}

TEST(RootlessWorker, RunsTasksInItsDelegatedGroupWithUserNamespaces) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to delegate a group as systemd does; the VM's rootless job runs "
                    "the sandbox suite as a non-root worker";
  }
  const auto mount = cgroup2_mount();
  if (!mount) GTEST_SKIP() << "NO CGROUP2 HIERARCHY MOUNTED HERE: the rootless tier not exercised";
  DelegatedGroup group(own_cgroup2(*mount), /*fully=*/true);
  tamma::testing::TempDir dir;
  ASSERT_EQ(::chown(dir.path().c_str(), kWorkerUid, kWorkerUid), 0);
  const fs::path work = dir.path() / "work";
  ASSERT_EQ(::mkdir(work.c_str(), 0755), 0);
  ASSERT_EQ(::chown(work.c_str(), kWorkerUid, kWorkerUid), 0);
  ASSERT_EQ(::mkdir((dir.path() / "ws").c_str(), 0755), 0);
  ASSERT_EQ(::chown((dir.path() / "ws").c_str(), kWorkerUid, kWorkerUid), 0);
  const bool pure_v2 = *mount == "/sys/fs/cgroup";
  EXPECT_EQ(run_half_as_worker("RootlessWorker.DISABLED_NonRootHalf", group.path(),
                               {{"TAMMA_TEST_GROUP", group.path().string()},
                                {"TAMMA_TEST_WORKSPACE", work.string()},
                                {"TAMMA_TEST_PURE_V2", pure_v2 ? "1" : "0"}}),
            0)
      << "the non-root half failed (its output is above)";
  if (pure_v2) {
    EXPECT_TRUE(fs::exists(work / "made"));
  }
  // The worker's subtree went with it; only the leaf it moved itself into is left, empty.
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(group.path())) {
    if (entry.is_directory()) left.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(left, pure_v2 ? std::vector<std::string>{"tamma-leaf"} : std::vector<std::string>{});
  EXPECT_TRUE(ci::read_pids(group.path() / "cgroup.procs").empty());
  if (pure_v2) {
    EXPECT_TRUE(ci::read_pids(group.path() / "tamma-leaf" / "cgroup.procs").empty());
  }
}

// ---- the user-namespace probe -----------------------------------------------------------

TEST(UsernsProbe, EveryStepWorksOnThisHost) {
  const UsernsProbe probe = probe_userns();
  EXPECT_TRUE(probe.created);
  EXPECT_TRUE(probe.usable()) << probe.problem();
  EXPECT_EQ(probe.problem(), "");
}

// A seccomp filter answering `syscall_nr` with EACCES, as AppArmor's unprivileged_userns
// profile answers the steps after the clone: installed in a child, which reports the probe.
std::string probe_with_denied(long syscall_nr) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<__u32>(syscall_nr), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog program{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
      ::_exit(2);
    }
    const UsernsProbe probe = probe_userns();
    const std::string text = (probe.created ? "created|" : "not created|") + probe.failed_step +
                             "|" + std::to_string(probe.err);
    (void)!::write(fds[1], text.data(), text.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buffer[512];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) text.append(buffer, n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return text;
}

TEST(UsernsProbe, NamesTheStepThatFailsAfterTheCloneSucceeds) {
  EXPECT_EQ(probe_with_denied(SYS_mount),
            "created|making / private (mount MS_PRIVATE)|" + std::to_string(EACCES));
  EXPECT_EQ(probe_with_denied(SYS_sethostname), "created|sethostname|" + std::to_string(EACCES));
  EXPECT_EQ(probe_with_denied(SYS_clone), "not created|clone|" + std::to_string(EACCES));
  // What the operator reads: the step, the errno's name, and no fix invented for it.
  UsernsProbe probe;
  probe.created = true;
  probe.failed_step = "mounting proc";
  probe.err = EACCES;
  EXPECT_EQ(probe.problem(), "user namespace created, but mounting proc in it failed (EACCES)");
  probe.apparmor_restricted = true;
  EXPECT_NE(probe.problem().find("apparmor_restrict_unprivileged_userns=1"), std::string::npos);
  EXPECT_NE(probe.fix().find("apparmor_parser"), std::string::npos);
}

}  // namespace
}  // namespace tamma::sandbox
