// Hostile tasks: each tries to exhaust, escape or reach the worker. Every test checks the
// classification from the exit status and the kernel's accounting, that the worker is
// unharmed, and that no process, cgroup or mount is left behind.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <set>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "common/error.h"
#include "sandbox/host.h"
#include "sandbox/run_helpers.h"
#include "sandbox/sandbox.h"
#include "sandbox/tier.h"
#include "support/test_support.h"

namespace tamma::sandbox {
namespace {

using namespace std::chrono_literals;
using testing::NoLeaks;
using testing::run;
using testing::RunOptions;
using testing::RunResult;
namespace fs = std::filesystem;

// Processes anywhere on the host whose command line contains `marker`.
int processes_with(const std::string& marker) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = testing::slurp(entry.path() / "cmdline");
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    if (cmdline.find(marker) != std::string::npos && name != std::to_string(::getpid())) ++count;
  }
  return count;
}

// The tier these tests run in: full on this machine as root; unprivileged under the container
// imitation (ctest sandbox_unprivileged_*), where TAMMA_SANDBOX_MINIMUM_TIER=unprivileged
// lets tasks run at all. Each test either passes there with the tier's own expectation, or
// checks that the task is refused naming what is missing.
Tier host_tier() {
  static const Tier tier = choose_tier(probe_host());
  return tier;
}
bool unprivileged_tier() { return host_tier() == Tier::kUnprivileged; }

Policy tier_policy() {
  Policy policy;
  if (const char* min = std::getenv("TAMMA_SANDBOX_MINIMUM_TIER")) {
    if (auto tier = parse_tier(min)) policy.minimum_tier = *tier;
  }
  return policy;
}

// In the unprivileged tier, `policy` must be refused as sandbox_unavailable naming `what`
// (which the CLI maps to exit 6): returns true there, after checking it.
bool refused_in_unprivileged_tier(const Policy& policy, const std::string& what) {
  if (!unprivileged_tier()) return false;
  try {
    Sandbox::create(policy);
    ADD_FAILURE() << "not refused in the unprivileged tier: " << what;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kSandboxSetup);
    EXPECT_EQ(e.code(), "sandbox_unavailable");
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
  return true;
}

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The helper must be inside the jail to run: the build tree is not bound in.
    fs::copy_file(TAMMA_SANDBOX_HELPER, dir_.path() / "hostile");
    fs::permissions(dir_.path() / "hostile", fs::perms::owner_all | fs::perms::group_exec |
                                                 fs::perms::others_exec | fs::perms::others_read);
  }
  void TearDown() override {
    leaks_.check();
    // The worker still works: it can run a task after the hostile one.
    auto sandbox = Sandbox::create(tier_policy());
    auto r = run(*sandbox, command({"/bin/echo", "alive"}));
    ASSERT_TRUE(r.exit);
    EXPECT_EQ(r.out, "alive\n");
  }

  Command command(std::vector<std::string> argv) {
    Command c;
    c.argv = std::move(argv);
    c.env = {"PATH=/usr/bin:/bin"};
    c.workspace = dir_.path();
    return c;
  }
  // Where the task finds its workspace: /workspace in a mount namespace, else the host path.
  std::string ws() const { return unprivileged_tier() ? dir_.path().string() : "/workspace"; }
  RunResult sh(const std::string& script, const Policy& policy = tier_policy(),
               RunOptions options = {}) {
    auto sandbox = Sandbox::create(policy);
    return run(*sandbox, command({"/bin/sh", "-c", script}), options);
  }

  tamma::testing::TempDir dir_;
  NoLeaks leaks_;
};

TEST_F(HostileTest, ForkBombIsStoppedByThePidsLimit) {
  Policy policy = tier_policy();
  policy.limits.pids = 64;
  if (refused_in_unprivileged_tier(policy, "process limit")) return;
  // bash and dash retry failed forks, so the bomb stalls instead of dying: the wall-time
  // limit (here the test's deadline) ends it.
  auto r = sh("bomb() { bomb | bomb & }; bomb; sleep 30", policy, {.timeout = 3s});
  ASSERT_TRUE(r.exit);
  EXPECT_GT(r.usage.pids_limit_hits, 0u) << "the pids limit was never reached";
  EXPECT_TRUE(r.usage.exact);
}

TEST_F(HostileTest, MemoryHogIsOomKilled) {
  Policy policy = tier_policy();
  policy.limits.memory_bytes = 64ull << 20;
  if (refused_in_unprivileged_tier(policy, "memory limit")) return;
  auto sandbox = Sandbox::create(policy);
  auto r = run(*sandbox, command({ws() + "/hostile", "hog", "512"}));
  ASSERT_TRUE(r.exit);
  EXPECT_FALSE(r.killed_by_test);
  EXPECT_TRUE(r.exit->signaled);
  EXPECT_EQ(r.exit->signal, SIGKILL);
  EXPECT_GE(r.usage.oom_kills, 1u);
  EXPECT_LE(r.usage.peak_memory_bytes, (64ull << 20) + (1ull << 20));
  EXPECT_GT(r.usage.peak_memory_bytes, 32ull << 20);
}

// The OOM killer picks the group's largest process and kills every process that shares its
// memory. A PID 1 sharing the worker's memory (or a copy of a large worker) must therefore
// never be in the task's group: here the worker is far larger than any task process, and
// must come out alive from an OOM among many mid-sized processes, in both kinds of PID 1.
TEST_F(HostileTest, OomAmongManyProcessesNeverPicksTheWorker) {
  std::vector<char> worker_memory(256ull << 20);
  std::memset(worker_memory.data(), 1, worker_memory.size());
  for (bool shared : {true, false}) {
    SCOPED_TRACE(shared ? "PID 1 shares the worker's memory" : "PID 1 is a copy");
    Policy policy = tier_policy();
    policy.limits.memory_bytes = 64ull << 20;
    policy.share_worker_memory = shared;
    if (refused_in_unprivileged_tier(policy, "memory limit")) return;
    auto r =
        sh("for i in 1 2 3 4 5 6 7 8; do " + ws() + "/hostile hold 12 2 & done; wait; echo done",
           policy, {.timeout = 30s});
    ASSERT_TRUE(r.exit);
    EXPECT_FALSE(r.killed_by_test);
    EXPECT_FALSE(r.exit->signaled) << "PID 1 or the shell was chosen";
    EXPECT_EQ(r.out, "done\n");
    EXPECT_GE(r.usage.oom_kills, 1u);
  }
  EXPECT_EQ(worker_memory[12345], 1);
}

TEST_F(HostileTest, CpuSpinnerGetsHalfACore) {
  Policy policy = tier_policy();
  policy.limits.cpus = 0.5;
  if (refused_in_unprivileged_tier(policy, "CPU limit")) return;
  auto r = sh("while :; do :; done", policy, {.timeout = 3s});
  ASSERT_TRUE(r.killed_by_test);
  const double cpu_s = static_cast<double>(r.usage.cpu_user_us + r.usage.cpu_system_us) / 1e6;
  const double wall_s = static_cast<double>(r.wall.count()) / 1e3;
  EXPECT_GT(r.usage.cpu_throttled_periods, 0u);
  // The quota is a ceiling; the floor depends on how busy this machine is.
  EXPECT_LE(cpu_s, 0.5 * wall_s + 0.15) << cpu_s << " s CPU in " << wall_s << " s";
  EXPECT_GE(cpu_s, 0.25 * wall_s) << cpu_s << " s CPU in " << wall_s << " s (machine busy?)";
}

TEST_F(HostileTest, StdoutFloodIsReadAndKilled) {
  auto r = sh("cat /dev/zero", tier_policy(), {.timeout = 2s, .keep_bytes = 4096});
  ASSERT_TRUE(r.killed_by_test);
  ASSERT_TRUE(r.exit);
  EXPECT_TRUE(r.exit->signaled);
  EXPECT_EQ(r.exit->signal, SIGKILL);
  EXPECT_GT(r.out_bytes, 10u << 20);
}

TEST_F(HostileTest, SigtermIgnorerIsKilled) {
  bool alive_after_term = false;
  // SIGTERM goes once the trap is set: a fixed wait was a guess on a slow machine (a VM
  // under emulation), where the shell might not have reached its `trap` yet.
  auto r = sh(
      "trap '' TERM INT HUP; : > " + ws() + "/ready; while :; do sleep 0.05; done", tier_policy(),
      {.timeout = 20s, .started = [&](Process& p) {
         const auto deadline = std::chrono::steady_clock::now() + 15s;
         while (!fs::exists(dir_.path() / "ready") && std::chrono::steady_clock::now() < deadline) {
           std::this_thread::sleep_for(10ms);
         }
         p.signal_all(SIGTERM);
         std::this_thread::sleep_for(300ms);
         alive_after_term = !p.poll_exit().has_value();
         p.kill_all();
       }});
  EXPECT_TRUE(alive_after_term) << "the task was expected to ignore SIGTERM";
  EXPECT_FALSE(r.killed_by_test);
  ASSERT_TRUE(r.exit);
  EXPECT_TRUE(r.exit->signaled);
  EXPECT_EQ(r.exit->signal, SIGKILL);
}

TEST_F(HostileTest, SigtermReachesEveryProcessOfTheNamespace) {
  // A setsid'd grandchild traps TERM and writes a file: forwarding reached it. SIGTERM goes
  // once both traps are set (a slow machine, such as a VM under emulation, takes longer
  // than any fixed wait to start them).
  auto r = sh("setsid sh -c 'trap \"echo got > " + ws() + "/got; exit 0\" TERM; : > " + ws() +
                  "/child-ready; while :; do sleep 0.05; done' & trap 'wait; exit 3' TERM; "
                  "while [ ! -e " +
                  ws() + "/child-ready ]; do sleep 0.05; done; : > " + ws() +
                  "/ready; "
                  "while :; do sleep 0.05; done",
              tier_policy(), {.timeout = 20s, .started = [&](Process& p) {
                                const auto deadline = std::chrono::steady_clock::now() + 15s;
                                while (!fs::exists(dir_.path() / "ready") &&
                                       std::chrono::steady_clock::now() < deadline) {
                                  std::this_thread::sleep_for(10ms);
                                }
                                p.signal_all(SIGTERM);
                              }});
  ASSERT_TRUE(r.exit);
  EXPECT_FALSE(r.killed_by_test);
  EXPECT_FALSE(r.exit->signaled);
  EXPECT_EQ(r.exit->code, 3);
  EXPECT_EQ(testing::slurp(dir_.path() / "got"), "got\n");
}

// Escapees of the process tree die with the main process (pid namespace) even before the
// worker's kill_all.
TEST_F(HostileTest, SetsidAndDoubleForkEscapeesDieWithTheTask) {
  const std::string marker = "tamma-escapee-" + std::to_string(::getpid());
  auto sandbox = Sandbox::create(tier_policy());
  auto process = sandbox->spawn(
      command({"/bin/sh", "-c",
               "setsid sh -c 'sleep 1000; : " + marker + "' & (sh -c 'sleep 1000; : " + marker +
                   "' &); sleep 0.3; exit 0"}));
  pollfd pfd{process->exit_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 10'000), 1);
  auto status = process->poll_exit();
  ASSERT_TRUE(status);
  EXPECT_EQ(status->code, 0);
  EXPECT_EQ(processes_with(marker), 0) << "escapees outlived the task's main process";
  process->kill_all();
  EXPECT_EQ(processes_with(marker), 0);
}

// Without a pid namespace only the cgroup holds escapees: kill_all must still get them all.
TEST_F(HostileTest, EscapeesWithoutIsolationDieOnKillAll) {
  const std::string marker = "tamma-escapee-noiso-" + std::to_string(::getpid());
  Policy policy = tier_policy();
  policy.isolate = false;
  // Without namespaces and without cgroups nothing would hold them: refused (the
  // unprivileged tier's own tree kill is for isolated tasks, SetsidAndDoubleFork... above).
  if (refused_in_unprivileged_tier(policy, "cgroups")) return;
  auto sandbox = Sandbox::create(policy);
  // Each escapee writes its pid before the main process exits, and the test follows those
  // two pids: counting command lines alone also counted forks that had not exec'd yet (they
  // show their parent's command line, which names the marker too) on a slow host.
  const std::string pid_file = (dir_.path() / "escapee-").string();
  const auto escapee = [&](const std::string& n) {
    return "sh -c 'echo $$ > " + pid_file + n + ".tmp && mv " + pid_file + n + ".tmp " + pid_file +
           n + "; sleep 1000; : " + marker + "'";
  };
  auto process = sandbox->spawn(
      command({"/bin/sh", "-c",
               "setsid " + escapee("1") + " & (" + escapee("2") + " &); until [ -e " + pid_file +
                   "1 ] && [ -e " + pid_file + "2 ]; do sleep 0.05; done; exit 0"}));
  pollfd pfd{process->exit_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 10'000), 1);
  ASSERT_TRUE(process->poll_exit());
  const auto escapees_alive = [&] {
    int alive = 0;
    for (const char* n : {"1", "2"}) {
      const std::string pid = testing::slurp(pid_file + n);
      if (pid.empty()) continue;
      const std::string cmdline =
          testing::slurp("/proc/" + pid.substr(0, pid.find('\n')) + "/cmdline");
      if (cmdline.find(marker) != std::string::npos) ++alive;  // a zombie's is empty
    }
    return alive;
  };
  EXPECT_EQ(escapees_alive(), 2) << "the escapees were expected to survive the exit";
  process->kill_all();
  EXPECT_EQ(escapees_alive(), 0) << "kill_all missed an escapee";
  EXPECT_EQ(processes_with(marker), 0) << "kill_all missed a process of the task";
}

TEST_F(HostileTest, WritesOutsideTheWorkspaceFail) {
  auto r =
      sh("for f in /etc/passwd /etc/tamma /usr/tamma /tamma /root/tamma /tmp/../etc/x "
         "/proc/sys/kernel/hostname /dev/tamma " +
         ws() +
         "/../escape; do "
         "  (echo x > $f) 2>/dev/null && echo wrote $f; done; "
         "mkdir /tamma-dir 2>/dev/null && echo mkdir; rm -f /etc/hostname 2>/dev/null; "
         "test -e /etc/hostname || echo removed; chmod 777 /etc 2>/dev/null && echo chmod; "
         "echo done");
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.out, "done\n");
  EXPECT_FALSE(fs::exists("/etc/tamma"));
  EXPECT_FALSE(fs::exists("/tamma"));
  EXPECT_FALSE(fs::exists(dir_.path().parent_path() / "escape"));
}

TEST_F(HostileTest, HostFilesNotBoundInAreInvisible) {
  const std::string test_dir = fs::canonical("/proc/self/exe").parent_path().string();
  if (unprivileged_tier()) {
    // No mount namespace: the names are there, Landlock keeps their contents out of reach
    // (listing and reading), while the system directories stay readable.
    const std::string source = std::string(TAMMA_SOURCE_DIR);
    auto r = sh("for p in /root /work /boot " + test_dir + " " + source +
                "; do ls $p >/dev/null 2>&1 && echo listed $p; done; "
                "cat " +
                source +
                "/CMakeLists.txt >/dev/null 2>&1 && echo read-source; "
                "cat /proc/self/exe > /dev/null 2>&1 || echo no-self; "
                "ls /usr/bin >/dev/null && echo usr-listed; head -c1 /etc/passwd");
    ASSERT_TRUE(r.exit);
    EXPECT_EQ(r.out, "usr-listed\nr") << r.err;
    return;
  }
  auto r = sh("for p in /root /work /sys /boot " + test_dir + " " + std::string(TAMMA_SOURCE_DIR) +
              "; do test -e $p && echo visible $p; done; " +
              "ls -A /home /var | tr '\\n' ' '; echo; ls / | tr '\\n' ' '");
  ASSERT_TRUE(r.exit);
  // The root holds the policy's binds that exist on this host and the sandbox's own mounts;
  // /home and /var hold only the task's HOME and /var/tmp, none of the host's.
  std::set<std::string> expected{"dev", "home", "proc", "tmp", "var", "workspace"};
  for (const auto& bind : Policy{}.readonly_binds) {
    if (fs::exists(fs::symlink_status(bind))) expected.insert(bind.substr(1));
  }
  std::string listing;
  for (const auto& name : expected) listing += name + " ";
  EXPECT_EQ(r.out, "/home: tamma  /var: tmp \n" + listing);
}

TEST_F(HostileTest, TheWorkersEnvironmentAndProcessesAreUnreachable) {
  ASSERT_EQ(::setenv("TAMMA_HOSTILE_SECRET", "s3cr3t-value", 1), 0);
  const std::string worker = std::to_string(::getpid());
  auto r = sh("test -e /proc/" + worker + " && echo worker-visible; " +
              "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c s3cr3t; "
              "test -r /proc/1/environ && echo init-readable; "
              "ls /proc | grep -E '^[0-9]+$' | grep -qx 1 && echo init-listed; "
              "kill -9 1 2>/dev/null && echo killed-init; "
              "kill -TERM " +
              worker +
              " 2>/dev/null && echo signalled-worker; "
              "kill -9 -1 2>/dev/null; echo after");
  ::unsetenv("TAMMA_HOSTILE_SECRET");
  ASSERT_TRUE(r.exit);
  if (unprivileged_tier()) {
    // No pid namespace: the worker and the container's init are listed, but their
    // environments are unreadable and they cannot be signalled (another uid, or Landlock's
    // signal scope), and kill -1 reaches only the task's own processes.
    EXPECT_EQ(r.out, "worker-visible\n0\ninit-listed\nafter\n") << r.err;
    EXPECT_FALSE(r.exit->signaled);
    EXPECT_EQ(r.exit->code, 0);
    return;
  }
  // kill -9 -1 reaches the task's own processes (the kernel spares the caller) and nothing
  // else: the worker and PID 1 live on. A worker that is not root maps one uid into the
  // task's user namespace, which PID 1 shares: kill -9 1 then returns 0, but the kernel drops
  // SIGKILL sent to a pid namespace's init from inside it, so PID 1 lives on all the same
  // (the task's exit below is its shell's, not a torn-down namespace's).
  EXPECT_EQ(r.out, ::geteuid() == 0 ? "0\nafter\n" : "0\nkilled-init\nafter\n") << r.err;
  EXPECT_FALSE(r.exit->signaled);
  EXPECT_EQ(r.exit->code, 0);
}

TEST_F(HostileTest, SignallingTheWorkerByPidFails) {
  auto sandbox = Sandbox::create(tier_policy());
  auto r = run(*sandbox, command({ws() + "/hostile", "kill", std::to_string(::getpid()),
                                  std::to_string(SIGKILL)}));
  ASSERT_TRUE(r.exit);
  // Outside the task's pid namespace the worker does not exist; without one, it cannot be
  // signalled.
  EXPECT_EQ(r.out, unprivileged_tier() ? "kill=EPERM\n" : "kill=ESRCH\n");
}

TEST_F(HostileTest, NoNetworkWhenDenied) {
  // A server in the worker's namespace, on the loopback the task must not reach.
  int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(server, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(server, 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);

  auto sandbox = Sandbox::create(tier_policy());
  auto r = run(*sandbox, command({ws() + "/hostile", "connect", std::to_string(port)}));
  ASSERT_TRUE(r.exit);
  // No network namespace in the unprivileged tier: no socket at all, not even loopback.
  EXPECT_EQ(r.out, unprivileged_tier() ? "socket=EACCES\n" : "connect=ECONNREFUSED\n");
  pollfd pfd{server, POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0) << "a connection reached the worker's server";

  // The same program with the host network reaches it: the check above is meaningful.
  Policy host_net = tier_policy();
  host_net.network = Network::kHost;
  auto open = Sandbox::create(host_net);
  auto r2 = run(*open, command({ws() + "/hostile", "connect", std::to_string(port)}));
  EXPECT_EQ(r2.out, "connect=ok\n");
  ::close(server);
}

// What a task without network tried to reach outside (Usage::network_unreachable, the hint a
// failed `npm install` gets): each attempt counted, in a pooled namespace and in one made for
// the task, and a reused namespace does not pass one task's attempts on to the next.
TEST_F(HostileTest, AttemptsToLeaveWithoutNetworkAreCounted) {
  const std::string attempts =
      "for a in 10.1.2.3 192.0.2.1 2001:db8::1; do (echo > /dev/tcp/$a/80) 2>/dev/null; done; "
      "(echo query > /dev/udp/127.0.0.53/53) 2>/dev/null; true";
  if (unprivileged_tier()) {
    // No namespace to count in: every attempt fails at socket(), loopback included, and
    // nothing is counted.
    auto sandbox = Sandbox::create(tier_policy());
    auto tried =
        run(*sandbox, command({"/bin/bash", "-c", attempts + "; echo > /dev/tcp/127.0.0.1/1"}));
    ASSERT_TRUE(tried.exit);
    EXPECT_EQ(tried.exit->code, 1);
    EXPECT_NE(tried.err.find("Permission denied"), std::string::npos) << tried.err;
    EXPECT_EQ(tried.usage.network_unreachable, 0U);
    EXPECT_FALSE(tried.usage.exact);
    return;
  }
  for (bool pooled : {true, false}) {
    SCOPED_TRACE(pooled ? "pooled namespace" : "a namespace made for the task");
    Policy policy = tier_policy();
    policy.reuse_network_namespaces = pooled;
    auto sandbox = Sandbox::create(policy);
    auto tried = run(*sandbox, command({"/bin/bash", "-c", attempts}));
    ASSERT_TRUE(tried.exit);
    EXPECT_EQ(tried.exit->code, 0) << tried.err;
    // Two IPv4 and one IPv6 connect() with no route, one datagram to a closed loopback port.
    EXPECT_EQ(tried.usage.network_unreachable, 4U);

    // Loopback traffic is the network a task has: not counted. Nor the previous task's.
    auto local = run(*sandbox, command({"/bin/bash", "-c",
                                        "exec 3<>/dev/tcp/127.0.0.1/1 2>/dev/null; "
                                        "python3 -c 'import socket; s=socket.socket(); "
                                        "s.bind((\"127.0.0.1\", 0)); s.listen(); "
                                        "c=socket.create_connection(s.getsockname()); "
                                        "c.sendall(b\"x\"); print(s.accept()[0].recv(1))'"}));
    ASSERT_TRUE(local.exit);
    EXPECT_EQ(local.out, "b'x'\n") << local.err;
    EXPECT_EQ(local.usage.network_unreachable, 0U);
  }
  // The host's network has routes: nothing to count there.
  Policy host_net = tier_policy();
  host_net.network = Network::kHost;
  auto open = Sandbox::create(host_net);
  auto r = run(*open, command({"/bin/true"}));
  EXPECT_EQ(r.usage.network_unreachable, 0U);
}

// Network namespaces are reused from task to task (ADR 0018): a later task must find
// nothing of an earlier one, and two tasks at once never share one.
TEST_F(HostileTest, ReusedNetworkNamespacesKeepNothingOfThePreviousTask) {
  if (unprivileged_tier()) {
    // No namespace is made or reused: a task without network cannot even bind loopback,
    // so nothing of it can be left for the next.
    auto r = sh(ws() + "/hostile bind 0");
    ASSERT_TRUE(r.exit);
    EXPECT_EQ(r.out, "bind=EACCES\n");
    return;
  }
  // What reuse must hide: a server that closed a connection first holds its port in
  // TIME_WAIT, and binding it again without SO_REUSEADDR fails (shown in the host's network).
  Policy host_net = tier_policy();
  host_net.network = Network::kHost;
  auto on_host = sh(ws() + "/hostile timewait 0", host_net);
  ASSERT_TRUE(on_host.exit);
  EXPECT_NE(on_host.out.find("rebind=EADDRINUSE"), std::string::npos) << on_host.out;

  // A worker that is not root makes a fresh namespace per task, in the task's user
  // namespace (ADR 0030): nothing to reuse, and TIME_WAIT as on the host.
  const bool pooled = ::geteuid() == 0;
  auto sandbox = Sandbox::create(tier_policy());
  auto first =
      run(*sandbox,
          command({"/bin/sh", "-c", "readlink /proc/self/ns/net; /workspace/hostile timewait 0"}));
  ASSERT_TRUE(first.exit);
  EXPECT_EQ(first.exit->code, 0) << first.err;
  std::istringstream lines(first.out);
  std::string first_ns, port_line, rebind;
  std::getline(lines, first_ns);
  std::getline(lines, port_line);
  std::getline(lines, rebind);
  EXPECT_EQ(rebind, pooled ? "rebind=ok" : "rebind=EADDRINUSE");
  ASSERT_EQ(port_line.rfind("port=", 0), 0u) << first.out;
  const std::string port = port_line.substr(5);
  char host_ns[64] = {};
  ASSERT_GT(::readlink("/proc/self/ns/net", host_ns, sizeof host_ns - 1), 0);
  EXPECT_NE(first_ns, host_ns);

  auto second =
      run(*sandbox, command({"/bin/sh", "-c",
                             "readlink /proc/self/ns/net; /workspace/hostile bind " + port +
                                 "; cat /proc/net/tcp | tail -n +2 | wc -l; "
                                 "cat /proc/sys/net/ipv4/tcp_max_tw_buckets"}));
  ASSERT_TRUE(second.exit);
  if (pooled) {
    // The pool's namespace again (its TIME_WAIT setting tells it from a fresh one, whose
    // number could be the first one's, recycled), the port free, no socket of the first task.
    EXPECT_EQ(second.out, first_ns + "\nbind=ok\n0\n0\n") << second.err;
  } else {
    // A fresh namespace: the port free, no socket of the first task.
    EXPECT_NE(second.out.substr(0, second.out.find('\n')), first_ns);
    EXPECT_NE(second.out.find("\nbind=ok\n0\n"), std::string::npos) << second.out;
  }

  // Two tasks at once get two namespaces.
  std::string during;
  auto outer = run(*sandbox, command({"/bin/sh", "-c", "readlink /proc/self/ns/net; sleep 1"}),
                   {.started = [&](Process&) {
                     during = run(*sandbox, command({"readlink", "/proc/self/ns/net"})).out;
                   }});
  ASSERT_TRUE(outer.exit);
  EXPECT_NE(outer.out, during);
  if (pooled) {
    EXPECT_TRUE(outer.out == first_ns + "\n" || during == first_ns + "\n")
        << "the idle namespace was not reused: " << outer.out << during;
  }
}

TEST_F(HostileTest, KernelEscapesAreDenied) {
  auto sandbox = Sandbox::create(tier_policy());
  auto r = run(*sandbox, command({ws() + "/hostile", "escapes"}));
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit->code, 0) << r.err;
  EXPECT_EQ(r.out,
            "mount=EPERM\numount=EPERM\nunshare_user=EPERM\nunshare_net=EPERM\nsetns=EPERM\n"
            "ptrace_traceme=EPERM\nptrace_attach_init=EPERM\nbpf=EPERM\nkeyctl=EPERM\n"
            "perf_event_open=EPERM\npivot_root=EPERM\nchroot=EPERM\nsethostname=EPERM\n"
            "clone_newuser=EPERM\nclone3=ENOSYS\nfork=ok\n");
}

// Whether a system call through `abi` reaches the kernel's syscall entry (and so seccomp):
// outside the sandbox the helper prints a result instead of dying. Without ia32 emulation
// int 0x80 is a SIGSEGV before any filter runs; x32 calls always pass the filter first (a
// kernel without x32 then answers -ENOSYS), so they are always checked.
bool reaches_syscall_entry(const std::string& abi) {
  FILE* pipe =
      ::popen((std::string(TAMMA_SANDBOX_HELPER) + " abi " + abi + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) return false;
  char line[128] = {};
  const bool printed = std::fgets(line, sizeof line, pipe) != nullptr;
  const int status = ::pclose(pipe);
  if (!printed || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return false;
  return printed;
}

void expect_killed_by_seccomp(Sandbox& sandbox, Command command) {
  auto r = run(sandbox, std::move(command));
  ASSERT_TRUE(r.exit);
  EXPECT_TRUE(r.exit->signaled) << "the foreign system call went through: " << r.out;
  EXPECT_EQ(r.exit->signal, SIGSYS);
}

TEST_F(HostileTest, X32SyscallsKillTheTask) {
  ASSERT_TRUE(reaches_syscall_entry("x32"));
  auto sandbox = Sandbox::create(tier_policy());
  expect_killed_by_seccomp(*sandbox, command({ws() + "/hostile", "abi", "x32"}));
}

TEST_F(HostileTest, I386SyscallsKillTheTask) {
  if (!reaches_syscall_entry("i386")) {
    GTEST_SKIP() << "this kernel has no ia32 emulation (int 0x80 faults before any filter "
                    "runs), so the seccomp bad-arch kill of i386 calls was not exercised";
  }
  auto sandbox = Sandbox::create(tier_policy());
  expect_killed_by_seccomp(*sandbox, command({ws() + "/hostile", "abi", "i386"}));
}

}  // namespace
}  // namespace tamma::sandbox
