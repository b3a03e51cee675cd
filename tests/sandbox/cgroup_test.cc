// Real cgroups, real processes: the v1 tests run on the host's v1 hierarchies, the v2 tests on
// whichever cgroup2 mount exists (/sys/fs/cgroup or, on hybrid hosts, /sys/fs/cgroup/unified)
// and skip, naming them, the parts whose controllers that mount does not offer.

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/unique_fd.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

namespace tamma::sandbox {
namespace {

using namespace cgroup_internal;
using namespace std::chrono_literals;

constexpr std::uint64_t kMiB = 1ull << 20;

// ---------------------------------------------------------------------------------------------
// Process helpers. Children only run code up to _exit; the test binary is single-threaded, so
// allocating in a forked child is safe.

struct Pipe {
  UniqueFd read_end, write_end;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
  }
};

[[noreturn]] void block_forever() {
  for (;;) ::pause();
}

void spin_cpu(std::chrono::nanoseconds amount) {
  auto now = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
  };
  const auto end = now() + amount;
  volatile std::uint64_t sink = 0;
  while (now() < end) {
    for (int i = 0; i < 200'000; ++i) sink = sink + static_cast<std::uint64_t>(i);
  }
}

// Faults in every page with non-zero bytes, so none is the shared zero page.
// Uninstrumented, with the raw system call and one store per page: under AddressSanitizer the
// mmap/memset interceptors and the checked stores fault in the region's shadow (one byte per
// eight), and the group would be charged an eighth more than the test means to allocate.
__attribute__((no_sanitize("address", "undefined"))) void touch_alloc(std::size_t bytes) {
  if (bytes == 0) return;
  void* memory = reinterpret_cast<void*>(::syscall(SYS_mmap, nullptr, bytes, PROT_READ | PROT_WRITE,
                                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (memory == MAP_FAILED) ::_exit(120);
  auto* page = static_cast<volatile char*>(memory);
  for (std::size_t offset = 0; offset < bytes; offset += 4096) page[offset] = 0x5a;
}

void write_pid(int fd, pid_t pid) {
  if (::write(fd, &pid, sizeof pid) != sizeof pid) ::_exit(121);
}

pid_t read_pid(int fd) {
  pid_t pid = 0;
  if (::read(fd, &pid, sizeof pid) != sizeof pid) throw_errno("read pid from child");
  return pid;
}

// Forks a child that waits until the parent has put it in `group` (before it does anything
// that could allocate or fork), then runs `body` and exits with its result.
pid_t spawn_in(Cgroup& group, const std::function<int()>& body) {
  Pipe go;
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    go.write_end.reset();
    char byte = 0;
    if (::read(go.read_end.get(), &byte, 1) != 1) ::_exit(126);
    go.read_end.reset();
    ::_exit(body());
  }
  go.read_end.reset();
  try {
    group.add_process(pid);
  } catch (...) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw;
  }
  if (::write(go.write_end.get(), "g", 1) != 1) throw_errno("release child");
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) throw_errno("waitpid " + std::to_string(pid));
  return status;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// /proc/<pid>/stat, or nothing once the process is gone: the open answers ENOENT, or ESRCH
// when the process exits between the directory's listing and the open (any process of the
// machine: the walk below reads all of /proc while other tests run).
std::optional<std::string> read_stat(const fs::path& file) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd && (errno == ENOENT || errno == ESRCH)) return std::nullopt;
  if (!fd) throw std::runtime_error("open " + file.string() + ": " + std::strerror(errno));
  char buffer[4096];  // a stat line is a few hundred bytes
  const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
  if (n < 0 && errno == ESRCH) return std::nullopt;
  if (n < 0) throw std::runtime_error("read " + file.string() + ": " + std::strerror(errno));
  return std::string(buffer, static_cast<std::size_t>(n));
}

// 'Z' for a zombie, '\0' when the process is gone.
char process_state(pid_t pid) {
  auto stat = read_stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return '\0';
  const auto paren = stat->rfind(')');
  return paren + 2 < stat->size() ? (*stat)[paren + 2] : '?';
}

std::vector<pid_t> children_of_self() {
  std::vector<pid_t> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto stat = read_stat(entry.path() / "stat");
    if (!stat) continue;
    const auto paren = stat->rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat->substr(paren + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == ::getpid()) pids.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return pids;
}

// Every test becomes the subreaper of what it forks, so orphans come back to it and are
// reaped; a test that leaves a live process behind fails, and the process is killed.
class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0); }

  void TearDown() override {
    const bool clean = wait_until(
        [] {
          while (::waitpid(-1, nullptr, WNOHANG) > 0) {
          }
          return children_of_self().empty();
        },
        5s);
    if (!clean) {
      for (pid_t pid : children_of_self()) {
        ADD_FAILURE() << "test left process " << pid << " running";
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  }
};

bool has_controller(const CgroupManager& manager, const std::string& name) {
  const auto all = manager.controllers();
  return std::find(all.begin(), all.end(), name) != all.end();
}

std::string missing_of(const CgroupManager& manager, const std::vector<std::string>& needed) {
  std::string missing;
  for (const auto& name : needed) {
    if (!has_controller(manager, name)) missing += (missing.empty() ? "" : ", ") + name;
  }
  return missing;
}

// ---------------------------------------------------------------------------------------------
// Scenarios shared by v1 and v2.

// `workers` processes each hold `bytes` at the same time; returns the group's peak.
std::uint64_t peak_of_concurrent(CgroupManager& manager, const std::string& name,
                                 std::size_t workers, std::size_t bytes) {
  auto group = manager.create_group(name, {});
  Pipe ready, release;
  const pid_t pid = spawn_in(*group, [&]() -> int {
    ready.read_end.reset();
    std::vector<pid_t> kids;
    for (std::size_t i = 0; i < workers; ++i) {
      const pid_t kid = ::fork();
      if (kid < 0) return 10;
      if (kid == 0) {
        release.write_end.reset();
        touch_alloc(bytes);
        if (::write(ready.write_end.get(), "r", 1) != 1) ::_exit(11);
        char byte = 0;
        (void)!::read(release.read_end.get(), &byte, 1);  // EOF: the test has measured
        ::_exit(0);
      }
      kids.push_back(kid);
    }
    release.write_end.reset();
    ready.write_end.reset();
    int failed = 0;
    for (pid_t kid : kids) {
      int status = 0;
      ::waitpid(kid, &status, 0);
      failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return failed;
  });
  ready.write_end.reset();
  release.read_end.reset();
  for (std::size_t i = 0; i < workers; ++i) {
    char byte = 0;
    EXPECT_EQ(::read(ready.read_end.get(), &byte, 1), 1) << "worker " << i << " died";
  }
  release.write_end.reset();
  const int status = wait_status(pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  return group->usage().peak_memory_bytes;
}

void check_peak_memory(CgroupManager& manager) {
  // The baseline is the same process tree without the allocations (forked copies of this
  // binary write a little: stacks, page tables).
  const std::uint64_t baseline = peak_of_concurrent(manager, "peak-baseline", 4, 0);
  const std::uint64_t peak = peak_of_concurrent(manager, "peak", 4, 50 * kMiB);
  const double expected = static_cast<double>(baseline + 200 * kMiB);
  std::printf("peak memory: baseline %.2f MiB, 4 x 50 MiB -> %.2f MiB (expected %.2f)\n",
              static_cast<double>(baseline) / kMiB, static_cast<double>(peak) / kMiB,
              expected / kMiB);
  EXPECT_NEAR(static_cast<double>(peak), expected, 0.02 * 200 * kMiB);
}

void check_cpu_of_orphan(CgroupManager& manager) {
  auto group = manager.create_group("cpu-orphan", {});
  const pid_t pid = spawn_in(*group, [] {
    const pid_t orphan = ::fork();
    if (orphan == 0) {
      spin_cpu(1s);
      ::_exit(0);
    }
    return orphan > 0 ? 0 : 1;  // exits at once: the spinner is orphaned
  });
  ASSERT_EQ(wait_status(pid), 0);
  ASSERT_TRUE(wait_until([&] { return group->processes().empty(); }, 10s))
      << "the orphan did not finish";
  const Usage usage = group->usage();
  const auto total = std::chrono::microseconds(usage.cpu_user_us + usage.cpu_system_us);
  std::printf("orphan CPU: user %llu us, system %llu us\n",
              static_cast<unsigned long long>(usage.cpu_user_us),
              static_cast<unsigned long long>(usage.cpu_system_us));
  EXPECT_GE(total, 980ms);
  EXPECT_LE(total, 1100ms);
  EXPECT_GT(usage.cpu_user_us, usage.cpu_system_us);
}

void check_oom(CgroupManager& manager) {
  Limits limits;
  limits.memory_bytes = 32 * kMiB;
  auto group = manager.create_group("oom", limits);
  const pid_t pid = spawn_in(*group, [] {
    touch_alloc(256 * kMiB);
    return 0;
  });
  const int status = wait_status(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  const Usage usage = group->usage();
  EXPECT_GE(usage.oom_kills, 1u);
  EXPECT_LE(usage.peak_memory_bytes, 32 * kMiB);
}

void check_fork_bomb(CgroupManager& manager) {
  Limits limits;
  limits.pids = 20;
  auto group = manager.create_group("bomb", limits);
  // Bounded by construction (at most 1+4+16+64 = 85 processes) should the limit not hold.
  const pid_t pid = spawn_in(*group, []() -> int {
    int depth = 0;
    for (int i = 0; i < 4; ++i) {
      const pid_t kid = ::fork();
      if (kid == 0 && ++depth < 4) i = -1;  // the child starts its own round of forks
      if (kid == 0 && depth >= 4) break;
    }
    block_forever();
  });
  ASSERT_TRUE(wait_until([&] { return group->usage().pids_limit_hits >= 1; }, 10s))
      << "no fork was refused";
  // Give the bomb time to use what is left before counting.
  std::this_thread::sleep_for(200ms);
  const auto running = group->processes().size();
  EXPECT_LE(running, 20u);
  EXPECT_GE(running, 15u) << "the bomb should fill most of the limit";
  group->kill_all();
  EXPECT_TRUE(group->processes().empty());
  const int status = wait_status(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

void check_kill_all(CgroupManager& manager) {
  auto group = manager.create_group("kill", {});
  Pipe report;
  const pid_t pid = spawn_in(*group, [&]() -> int {
    report.read_end.reset();
    const pid_t session = ::fork();
    if (session == 0) {
      ::setsid();  // out of the task's process group: kill(-pgid) would miss it
      block_forever();
    }
    const pid_t middle = ::fork();
    if (middle == 0) {
      const pid_t orphan = ::fork();
      if (orphan == 0) block_forever();
      write_pid(report.write_end.get(), orphan);
      ::_exit(0);  // orphans it: a tree walk from the task would miss it
    }
    write_pid(report.write_end.get(), session);
    ::waitpid(middle, nullptr, 0);
    block_forever();
  });
  report.write_end.reset();
  const pid_t first = read_pid(report.read_end.get());
  const pid_t second = read_pid(report.read_end.get());
  ASSERT_TRUE(wait_until([&] { return group->processes().size() == 3; }, 5s))
      << group->processes().size() << " processes in the group";

  group->kill_all();
  EXPECT_TRUE(group->processes().empty());
  for (pid_t victim : {pid, first, second}) {
    const char state = process_state(victim);
    EXPECT_TRUE(state == 'Z' || state == '\0') << victim << " is in state " << state;
    int status = 0;
    // The orphans were re-parented to this test (subreaper), so it reaps all three.
    ASSERT_TRUE(wait_until([&] { return ::waitpid(victim, &status, WNOHANG) == victim; }, 5s))
        << "could not reap " << victim;
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << victim;
  }
}

// ---------------------------------------------------------------------------------------------
// Parsing.

TEST(CgroupParse, ProcCgroupHybrid) {
  const auto entries =
      parse_proc_cgroup("12:cpu,cpuacct:/a/b\n4:memory:/process_api/x\n1:name=systemd:/\n0::/\n");
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0].hierarchy_id, 12);
  EXPECT_EQ(entries[0].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
  EXPECT_EQ(entries[0].path, "/a/b");
  EXPECT_EQ(entries[1].path, "/process_api/x");
  EXPECT_TRUE(entries[3].controllers.empty());
  EXPECT_EQ(entries[3].path, "/");
  EXPECT_THROW(parse_proc_cgroup("garbage\n"), Error);
}

TEST(CgroupParse, MountinfoWithEscapesAndOptionalFields) {
  const auto mounts = parse_mountinfo(
      "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup "
      "rw,cpu,cpuacct\n"
      "40 30 0:37 /docker/abc /with\\040space rw - cgroup2 cgroup2 rw,nsdelegate\n");
  ASSERT_EQ(mounts.size(), 2u);
  EXPECT_EQ(mounts[0].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(mounts[0].fstype, "cgroup");
  EXPECT_EQ(mounts[0].super_options, (std::vector<std::string>{"rw", "cpu", "cpuacct"}));
  EXPECT_EQ(mounts[1].mount_point, "/with space");
  EXPECT_EQ(mounts[1].root, "/docker/abc");
  EXPECT_EQ(mounts[1].fstype, "cgroup2");
}

TEST(CgroupParse, OwnGroupIsResolvedAgainstTheMountRoot) {
  MountInfo plain{"/", "/sys/fs/cgroup/memory", "cgroup", {"rw", "memory"}};
  EXPECT_EQ(resolve_own(plain, "/a/b"), fs::path("/sys/fs/cgroup/memory/a/b"));
  EXPECT_EQ(resolve_own(plain, "/"), fs::path("/sys/fs/cgroup/memory"));
  // A container that sees only its own sub-hierarchy at the mount point.
  MountInfo bound{"/docker/abc", "/sys/fs/cgroup/memory", "cgroup", {"rw", "memory"}};
  EXPECT_EQ(resolve_own(bound, "/docker/abc"), fs::path("/sys/fs/cgroup/memory"));
  EXPECT_EQ(resolve_own(bound, "/docker/abc/w"), fs::path("/sys/fs/cgroup/memory/w"));
  EXPECT_THROW(resolve_own(bound, "/docker/abcd"), Error);
}

TEST(CgroupParse, CoMountedCpuAndCpuacctAreOneHierarchy) {
  const auto mounts = parse_mountinfo(
      "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
      "34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
      "35 30 0:32 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n"
      "36 30 0:33 / /elsewhere/freezer rw - cgroup cgroup rw,freezer\n");
  const auto own = parse_proc_cgroup("3:cpu,cpuacct:/w\n2:memory:/m\n1:devices:/\n");
  const auto hierarchies = find_v1_hierarchies(mounts, own, "/sys/fs/cgroup");
  ASSERT_EQ(hierarchies.size(), 2u);
  EXPECT_EQ(hierarchies[0].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
  EXPECT_EQ(hierarchies[0].own, fs::path("/sys/fs/cgroup/cpu,cpuacct/w"));
  EXPECT_EQ(hierarchies[1].own, fs::path("/sys/fs/cgroup/memory/m"));
}

TEST(CgroupParse, SubtreeNames) {
  EXPECT_EQ(subtree_name({123, 456}), "tamma-worker-123-456");
  auto owner = parse_subtree_name("tamma-worker-123-456");
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->pid, 123);
  EXPECT_EQ(owner->start_time, 456u);
  EXPECT_FALSE(parse_subtree_name("tamma-worker-123"));
  EXPECT_FALSE(parse_subtree_name("tamma-worker-x-1"));
  EXPECT_FALSE(parse_subtree_name("tamma-leaf"));
  EXPECT_TRUE(owner_alive(self_owner()));
  EXPECT_FALSE(owner_alive({self_owner().pid, self_owner().start_time + 1}));
}

TEST(CgroupParse, FlatKeyed) {
  const auto values = parse_flat_keyed("usage_usec 1500\nuser_usec 1000\nbad line\nnr 7\n");
  EXPECT_EQ(values.at("usage_usec"), 1500u);
  EXPECT_EQ(values.at("nr"), 7u);
  EXPECT_EQ(values.count("bad"), 0u);
}

// ---------------------------------------------------------------------------------------------
// v1.

class CgroupV1Test : public ProcessTest {
 protected:
  void SetUp() override {
    ProcessTest::SetUp();
    manager_ = CgroupManager::create();
    if (manager_->version() != CgroupVersion::kV1) {
      GTEST_SKIP() << "host limits with cgroup v2: v1 implementation not exercised";
    }
  }
  void TearDown() override {
    manager_.reset();
    ProcessTest::TearDown();
  }

  // The group's directory in the hierarchy carrying `controller`.
  static fs::path dir_in(const std::string& controller, const std::string& group) {
    const auto hierarchies =
        find_v1_hierarchies(parse_mountinfo(read_file("/proc/self/mountinfo")),
                            parse_proc_cgroup(read_file("/proc/self/cgroup")), "/sys/fs/cgroup");
    for (const auto& h : hierarchies) {
      if (std::find(h.controllers.begin(), h.controllers.end(), controller) !=
          h.controllers.end()) {
        return h.own / subtree_name(self_owner()) / group;
      }
    }
    throw std::runtime_error("no v1 hierarchy for " + controller);
  }

  std::unique_ptr<CgroupManager> manager_;
};

TEST_F(CgroupV1Test, DetectsTheHierarchiesAndRemovesItsSubtree) {
  EXPECT_EQ(manager_->controllers(),
            (std::vector<std::string>{"cpu", "cpuacct", "freezer", "memory", "pids"}));
  const fs::path subtree = manager_->subtree();
  EXPECT_EQ(subtree.filename(), subtree_name(self_owner()));
  // Our memory group is not the root here; the subtree must sit under it.
  const auto own = parse_proc_cgroup(read_file("/proc/self/cgroup"));
  for (const auto& entry : own) {
    if (entry.controllers == std::vector<std::string>{"memory"}) {
      EXPECT_EQ(subtree.parent_path(),
                (fs::path("/sys/fs/cgroup/memory") / fs::path(entry.path).relative_path())
                    .lexically_normal());
    }
  }
  EXPECT_TRUE(fs::is_directory(subtree));
  EXPECT_TRUE(fs::is_directory(dir_in("cpu", "").parent_path()));
  manager_.reset();
  EXPECT_FALSE(fs::exists(subtree));
  EXPECT_FALSE(fs::exists(dir_in("pids", "").parent_path()));
}

TEST_F(CgroupV1Test, LimitsAreWrittenToEveryHierarchy) {
  Limits limits;
  limits.memory_bytes = 64 * kMiB;
  limits.cpus = 0.5;
  limits.pids = 20;
  std::vector<fs::path> dirs;
  {
    auto group = manager_->create_group("limits", limits);
    for (const char* controller : {"memory", "pids", "cpu", "cpuacct", "freezer"}) {
      dirs.push_back(dir_in(controller, "limits"));
      EXPECT_TRUE(fs::is_directory(dirs.back())) << dirs.back();
    }
    EXPECT_EQ(group->path(), dir_in("memory", "limits").string());
    EXPECT_EQ(group->clone_into_fd(), -1);
    EXPECT_EQ(trim(read_file(dir_in("memory", "limits") / "memory.limit_in_bytes")),
              std::to_string(64 * kMiB));
    if (fs::exists(dir_in("memory", "limits") / "memory.memsw.limit_in_bytes")) {
      EXPECT_EQ(trim(read_file(dir_in("memory", "limits") / "memory.memsw.limit_in_bytes")),
                std::to_string(64 * kMiB));
    }
    EXPECT_EQ(trim(read_file(dir_in("memory", "limits") / "memory.swappiness")), "0");
    EXPECT_EQ(trim(read_file(dir_in("pids", "limits") / "pids.max")), "20");
    EXPECT_EQ(trim(read_file(dir_in("cpu", "limits") / "cpu.cfs_period_us")), "100000");
    EXPECT_EQ(trim(read_file(dir_in("cpu", "limits") / "cpu.cfs_quota_us")), "50000");
    EXPECT_THROW(manager_->create_group("limits", {}), Error) << "same name twice";
  }
  for (const auto& dir : dirs) EXPECT_FALSE(fs::exists(dir)) << dir;
}

// A task in its own pid namespace is killed by its PID 1's death, so no freezer group is made
// for it; every other hierarchy still has its group.
TEST_F(CgroupV1Test, NoFreezerGroupWhenAPidNamespaceKillsTheTree) {
  {
    auto group = manager_->create_group("in-namespace", {}, TreeKill::kByPidNamespace);
    EXPECT_TRUE(fs::is_directory(dir_in("memory", "in-namespace")));
    EXPECT_TRUE(fs::is_directory(dir_in("pids", "in-namespace")));
    EXPECT_FALSE(fs::exists(dir_in("freezer", "in-namespace")));
    auto plain = manager_->create_group("plain", {});
    EXPECT_TRUE(fs::is_directory(dir_in("freezer", "plain")));
  }
  EXPECT_FALSE(fs::exists(dir_in("memory", "in-namespace")));
  EXPECT_FALSE(fs::exists(dir_in("freezer", "plain")));
}

TEST_F(CgroupV1Test, MissingControllerIsNamed) {
  // A manager that only has the cpu hierarchy, as on a host without the memory controller.
  auto hierarchies =
      find_v1_hierarchies(parse_mountinfo(read_file("/proc/self/mountinfo")),
                          parse_proc_cgroup(read_file("/proc/self/cgroup")), "/sys/fs/cgroup");
  std::erase_if(hierarchies, [](const V1Hierarchy& h) {
    return std::find(h.controllers.begin(), h.controllers.end(), "cpu") == h.controllers.end();
  });
  ASSERT_FALSE(hierarchies.empty());
  manager_.reset();  // the same subtree name: one manager at a time
  auto cpu_only = make_v1_manager(hierarchies);
  Limits limits;
  limits.memory_bytes = 64 * kMiB;
  try {
    auto group = cpu_only->create_group("no-memory", limits);
    FAIL() << "a memory limit was accepted without a memory hierarchy";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kSandboxSetup);
    EXPECT_NE(std::string(e.what()).find("memory controller not available"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("resources.memory"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::path(cpu_only->subtree()) / "no-memory"));
  auto plain = cpu_only->create_group("cpu-only", {});
  EXPECT_FALSE(plain->usage().exact) << "no memory accounting, so not exact";
}

TEST_F(CgroupV1Test, PeakMemoryCountsAllProcessesTogether) { check_peak_memory(*manager_); }
TEST_F(CgroupV1Test, CpuOfAnOrphanedGrandchildIsCounted) { check_cpu_of_orphan(*manager_); }
TEST_F(CgroupV1Test, MemoryHogIsOomKilled) { check_oom(*manager_); }
TEST_F(CgroupV1Test, ForkBombIsStoppedByPidsLimit) { check_fork_bomb(*manager_); }
TEST_F(CgroupV1Test, KillAllLeavesNoEscapee) { check_kill_all(*manager_); }

TEST_F(CgroupV1Test, CpuQuotaThrottles) {
  Limits limits;
  limits.cpus = 0.2;
  auto group = manager_->create_group("throttle", limits);
  const pid_t pid = spawn_in(*group, [] {
    spin_cpu(100ms);  // 0.5 s of wall time at 20 %
    return 0;
  });
  ASSERT_EQ(wait_status(pid), 0);
  const Usage usage = group->usage();
  EXPECT_GE(usage.cpu_throttled_periods, 2u);
  EXPECT_GT(usage.cpu_throttled_us, 100'000u);
}

TEST_F(CgroupV1Test, DestructionKillsWhatIsLeft) {
  pid_t pid = 0;
  fs::path dir;
  {
    auto group = manager_->create_group("leftover", {});
    dir = group->path();
    pid = spawn_in(*group, []() -> int { block_forever(); });
  }
  EXPECT_FALSE(fs::exists(dir));
  const int status = wait_status(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

// Creates `<own>/<name>/task` in every hierarchy with `victim` in it, as a dead worker leaves.
std::vector<fs::path> plant_v1_subtree(const std::string& name, pid_t victim) {
  std::vector<fs::path> roots;
  for (const auto& h :
       find_v1_hierarchies(parse_mountinfo(read_file("/proc/self/mountinfo")),
                           parse_proc_cgroup(read_file("/proc/self/cgroup")), "/sys/fs/cgroup")) {
    roots.push_back(h.own / name);
    ensure_dir(roots.back());
    ensure_dir(roots.back() / "task");
    if (victim > 0) write_file(roots.back() / "task" / "cgroup.procs", std::to_string(victim));
  }
  return roots;
}

std::uint64_t pid_max() { return parse_u64(read_file("/proc/sys/kernel/pid_max"), "pid_max"); }

TEST_F(CgroupV1Test, RemoveStaleRemovesDeadOwnersOnly) {
  const pid_t victim = ::fork();
  if (victim == 0) block_forever();
  const pid_t live_owner = ::fork();
  if (live_owner == 0) block_forever();

  // pid_max + 1 can never be a live pid; our own pid with another start time is a reused pid.
  const std::string dead = subtree_name({static_cast<pid_t>(pid_max() + 1), 12345});
  const std::string reused = subtree_name({::getpid(), self_owner().start_time + 1});
  const std::string live = subtree_name({live_owner, *process_start_time(live_owner)});
  const auto dead_roots = plant_v1_subtree(dead, victim);
  const auto reused_roots = plant_v1_subtree(reused, 0);
  const auto live_roots = plant_v1_subtree(live, 0);

  EXPECT_GE(manager_->remove_stale(), 2u);
  for (const auto& root : dead_roots) EXPECT_FALSE(fs::exists(root)) << root;
  for (const auto& root : reused_roots) EXPECT_FALSE(fs::exists(root)) << root;
  for (const auto& root : live_roots) EXPECT_TRUE(fs::exists(root / "task")) << root;
  EXPECT_TRUE(fs::exists(manager_->subtree())) << "its own subtree is alive";
  const int status = wait_status(victim);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the leftover was killed";

  ::kill(live_owner, SIGKILL);
  wait_status(live_owner);
  for (const auto& root : live_roots) {
    for (const auto& dir : subtree_bottom_up(root)) EXPECT_EQ(rmdir_retry(dir), 0) << dir;
  }
}

// ---------------------------------------------------------------------------------------------
// v2.

std::optional<fs::path> cgroup2_mount() {
  for (const char* candidate : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
    struct statfs st {};
    if (::statfs(candidate, &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC) return candidate;
  }
  return std::nullopt;
}

class CgroupV2Test : public ProcessTest {
 protected:
  void SetUp() override {
    ProcessTest::SetUp();
    mount_ = cgroup2_mount();
    if (!mount_) GTEST_SKIP() << "no cgroup2 mount: v2 implementation not exercised";
    manager_ = CgroupManager::create(mount_->string());
  }
  void TearDown() override {
    manager_.reset();
    ProcessTest::TearDown();
  }
  // Skips, naming what is missing, unless every one of `needed` is enabled for task groups.
  bool require(const std::vector<std::string>& needed, const char* what) {
    const auto missing = missing_of(*manager_, needed);
    if (missing.empty()) return true;
    std::printf("SKIPPED on v2: %s needs controller(s) %s, not offered at %s\n", what,
                missing.c_str(), mount_->c_str());
    return false;
  }

  std::optional<fs::path> mount_;
  std::unique_ptr<CgroupManager> manager_;
};

#define REQUIRE_V2(needed, what)                                                \
  if (!require(needed, what)) {                                                 \
    GTEST_SKIP() << what << " not exercised on v2: controller(s) "              \
                 << missing_of(*manager_, needed) << " missing at " << *mount_; \
  }

TEST_F(CgroupV2Test, CreatesItsSubtreeAndRemovesIt) {
  EXPECT_EQ(manager_->version(), CgroupVersion::kV2);
  const fs::path subtree = manager_->subtree();
  EXPECT_EQ(subtree.filename(), subtree_name(self_owner()));
  EXPECT_TRUE(fs::is_directory(subtree));
  for (const auto& name : manager_->controllers()) {
    EXPECT_TRUE(name == "memory" || name == "pids" || name == "cpu") << name;
  }
  fs::path group_dir;
  {
    auto group = manager_->create_group("plain", {});
    group_dir = group->path();
    EXPECT_EQ(fs::path(group_dir).parent_path(), subtree);
    EXPECT_TRUE(fs::exists(group_dir / "cgroup.procs"));
  }
  EXPECT_FALSE(fs::exists(group_dir));
  manager_.reset();
  EXPECT_FALSE(fs::exists(subtree));
}

TEST_F(CgroupV2Test, CloneIntoCgroupAndCpuStat) {
  auto group = manager_->create_group("clone3", {});
  const int dir_fd = group->clone_into_fd();
  ASSERT_GE(dir_fd, 0);
  struct stat fd_stat {
  }, dir_stat{};
  ASSERT_EQ(::fstat(dir_fd, &fd_stat), 0);
  ASSERT_EQ(::stat(group->path().c_str(), &dir_stat), 0);
  EXPECT_EQ(fd_stat.st_ino, dir_stat.st_ino);

  const std::string expected =
      "0::/" + fs::path(group->path()).lexically_relative(*mount_).string() + "\n";
  clone_args args{};
  args.flags = CLONE_INTO_CGROUP;
  args.exit_signal = SIGCHLD;
  args.cgroup = static_cast<std::uint64_t>(dir_fd);
  const long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0 && errno == ENOSYS) GTEST_SKIP() << "no clone3: CLONE_INTO_CGROUP not exercised";
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    // Born in the group: /proc/self/cgroup names it before the child did anything.
    const auto mine = try_read_file("/proc/self/cgroup").value_or("");
    const bool inside = mine.find(expected) != std::string::npos;
    spin_cpu(200ms);
    ::_exit(inside ? 0 : 3);
  }
  int status = 0;
  rusage child{};
  ASSERT_EQ(::wait4(static_cast<pid_t>(pid), &status, 0, &child), pid) << std::strerror(errno);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child was not in " << expected << " (status " << status << ")";
  const Usage usage = group->usage();
  const auto total = std::chrono::microseconds(usage.cpu_user_us + usage.cpu_system_us);
  EXPECT_GE(total, 196ms);
  // The group counts all of the child's CPU and nothing else: what the kernel accounted to
  // the child itself, its start and exit included (a few ms here, tens of ms in a VM under
  // emulation), within 10 ms or 5%, whichever is more: rusage derives user and system time
  // from ticks, the group from exact run time, and under emulation they part further (a VM
  // under TCG once measured 240.0 ms against 229.8 ms).
  const auto own = std::chrono::seconds(child.ru_utime.tv_sec + child.ru_stime.tv_sec) +
                   std::chrono::microseconds(child.ru_utime.tv_usec + child.ru_stime.tv_usec);
  const auto slack = std::max<std::chrono::microseconds>(10ms, own / 20);
  EXPECT_LE(total, own + slack) << "the child itself used " << own.count() << " us";
  EXPECT_GE(total, own - slack) << "the child itself used " << own.count() << " us";
}

TEST_F(CgroupV2Test, CpuOfAnOrphanedGrandchildIsCounted) { check_cpu_of_orphan(*manager_); }
TEST_F(CgroupV2Test, KillAllLeavesNoEscapee) { check_kill_all(*manager_); }

TEST_F(CgroupV2Test, MissingControllersAreRefusedByName) {
  std::size_t refused = 0;
  for (const auto& [name, limit] : std::vector<std::pair<std::string, std::string>>{
           {"memory", "resources.memory"}, {"pids", "resources.pids"}, {"cpu", "resources.cpus"}}) {
    if (has_controller(*manager_, name)) continue;
    Limits limits;
    if (name == "memory") limits.memory_bytes = 64 * kMiB;
    if (name == "pids") limits.pids = 10;
    if (name == "cpu") limits.cpus = 1;
    try {
      auto group = manager_->create_group("refused", limits);
      ADD_FAILURE() << "a " << limit << " limit was accepted without the " << name << " controller";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kSandboxSetup);
      EXPECT_NE(std::string(e.what()).find(name + " controller not available"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(limit), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(fs::path(manager_->subtree()) / "refused"));
    ++refused;
  }
  if (refused == 0) GTEST_SKIP() << "every controller is available: refusal not exercised";
}

TEST_F(CgroupV2Test, LimitsAreWritten) {
  REQUIRE_V2((std::vector<std::string>{"memory", "pids", "cpu"}), "writing v2 limits");
  Limits limits;
  limits.memory_bytes = 64 * kMiB;
  limits.cpus = 1.5;
  limits.pids = 20;
  auto group = manager_->create_group("limits", limits);
  const fs::path dir = group->path();
  EXPECT_EQ(trim(read_file(dir / "memory.max")), std::to_string(64 * kMiB));
  if (fs::exists(dir / "memory.swap.max")) {
    EXPECT_EQ(trim(read_file(dir / "memory.swap.max")), "0");
  }
  EXPECT_EQ(trim(read_file(dir / "pids.max")), "20");
  EXPECT_EQ(trim(read_file(dir / "cpu.max")), "150000 100000");
}

TEST_F(CgroupV2Test, PeakMemoryCountsAllProcessesTogether) {
  REQUIRE_V2(std::vector<std::string>{"memory"}, "v2 peak memory");
  check_peak_memory(*manager_);
}
TEST_F(CgroupV2Test, MemoryHogIsOomKilled) {
  REQUIRE_V2(std::vector<std::string>{"memory"}, "v2 OOM kill");
  check_oom(*manager_);
}
TEST_F(CgroupV2Test, ForkBombIsStoppedByPidsLimit) {
  REQUIRE_V2(std::vector<std::string>{"pids"}, "v2 pids limit");
  check_fork_bomb(*manager_);
}

TEST_F(CgroupV2Test, RemoveStaleRemovesDeadOwnersOnly) {
  const fs::path own = fs::path(manager_->subtree()).parent_path();
  const pid_t victim = ::fork();
  if (victim == 0) block_forever();
  const pid_t live_owner = ::fork();
  if (live_owner == 0) block_forever();
  const fs::path dead = own / subtree_name({static_cast<pid_t>(pid_max() + 1), 777});
  const fs::path live = own / subtree_name({live_owner, *process_start_time(live_owner)});
  ensure_dir(dead);
  ensure_dir(dead / "task");
  write_file(dead / "task" / "cgroup.procs", std::to_string(victim));
  ensure_dir(live);

  EXPECT_GE(manager_->remove_stale(), 1u);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  const int status = wait_status(victim);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the leftover was killed";
  ::kill(live_owner, SIGKILL);
  wait_status(live_owner);
  EXPECT_EQ(rmdir_retry(live), 0);
}

// The no-internal-process rule: a non-root group holding processes cannot enable a controller
// for its children. The worker must first move its group's processes into a leaf. Exercised
// with whichever domain controller the mount offers (hugetlb on hybrid hosts), in a fake
// "own" group holding a child of this test that plays the worker, and one more process.
TEST_F(CgroupV2Test, WorkerMovesIntoLeafToEnableControllers) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root (it makes groups at the hierarchy's root); a worker that is not "
                    "root moves itself into a leaf of its delegated group at its first task, "
                    "which every other test run this way exercises";
  }
  const fs::path root = *mount_;
  if (fs::exists(root / "cgroup.type")) GTEST_SKIP() << *mount_ << " is not a hierarchy root";
  const auto offered = read_file(root / "cgroup.controllers");
  std::string controller;
  for (const char* candidate : {"memory", "pids", "hugetlb", "io"}) {
    if (offered.find(candidate) != std::string::npos) {
      controller = candidate;
      break;
    }
  }
  if (controller.empty()) {
    GTEST_SKIP() << "no domain controller offered at " << root
                 << ": the leaf move for the no-internal-process rule not exercised";
  }
  const bool was_enabled =
      read_file(root / "cgroup.subtree_control").find(controller) != std::string::npos;
  if (!was_enabled) write_file(root / "cgroup.subtree_control", "+" + controller);
  const fs::path own = root / ("tamma-test-own-" + std::to_string(::getpid()));
  ensure_dir(own);
  pid_t bystander = -1;
  // Undone even when an assertion ends the test early.
  struct Cleanup {
    const fs::path& root;
    const fs::path& own;
    const std::string& controller;
    bool was_enabled;
    const pid_t& bystander;
    ~Cleanup() {
      if (bystander > 0) {
        ::kill(bystander, SIGKILL);
        ::waitpid(bystander, nullptr, 0);
      }
      for (const auto& dir : subtree_bottom_up(own)) EXPECT_EQ(rmdir_retry(dir), 0) << dir;
      // Busy when another test process enabled it below meanwhile; the last one disables it.
      if (!was_enabled) try_write_file(root / "cgroup.subtree_control", "-" + controller);
    }
  } cleanup{root, own, controller, was_enabled, bystander};

  bystander = ::fork();
  if (bystander == 0) block_forever();
  write_file(own / "cgroup.procs", std::to_string(bystander));
  // Show the rule holds here, so the test below proves something.
  EXPECT_EQ(try_write_file(own / "cgroup.subtree_control", "+" + controller), EBUSY);

  Pipe go;
  const pid_t worker = ::fork();
  if (worker == 0) {
    go.write_end.reset();
    char byte = 0;
    if (::read(go.read_end.get(), &byte, 1) != 1) ::_exit(126);
    int failures = 0;
    try {
      V2Options options;
      options.mount = root;
      options.own = own;
      options.wanted = {controller};
      auto manager = make_v2_manager(options);
      failures += manager->controllers() != std::vector<std::string>{controller};
      const auto mine = read_file("/proc/self/cgroup");
      failures += mine.find("0::/" + own.filename().string() + "/" + kV2LeafName + "\n") ==
                          std::string::npos
                      ? 2
                      : 0;
      auto group = manager->create_group("task", {});
      failures += read_file(fs::path(group->path()) / "cgroup.controllers").find(controller) ==
                          std::string::npos
                      ? 4
                      : 0;
      // A second manager in the same process finds its own group through the leaf.
      group.reset();
      manager.reset();
      V2Options again = options;
      again.own = own / kV2LeafName;
      auto second = make_v2_manager(again);
      failures += fs::path(second->subtree()).parent_path() != own ? 8 : 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "worker: %s\n", e.what());
      ::_exit(100);
    }
    ::_exit(failures);
  }
  go.read_end.reset();
  write_file(own / "cgroup.procs", std::to_string(worker));
  ASSERT_EQ(::write(go.write_end.get(), "g", 1), 1);
  const int status = wait_status(worker);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "worker status " << status;

  const auto leaf_pids = read_pids(own / kV2LeafName / "cgroup.procs");
  EXPECT_NE(std::find(leaf_pids.begin(), leaf_pids.end(), bystander), leaf_pids.end())
      << "the other process of the group was moved into the leaf as well";
  EXPECT_TRUE(read_pids(own / "cgroup.procs").empty());
  EXPECT_NE(read_file(own / "cgroup.subtree_control").find(controller), std::string::npos);
}

}  // namespace
}  // namespace tamma::sandbox
