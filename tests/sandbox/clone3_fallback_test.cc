// Spawning where clone3 is filtered: Docker's and podman's default seccomp profiles answer
// clone3 with ENOSYS (a filter cannot read its flags), which used to make every spawn fail,
// isolate=false included. A forked child of the test installs such a filter and runs real
// sandboxes; it reports over a pipe, the test process asserts.

#include <errno.h>
#include <gtest/gtest.h>
#include <seccomp.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <sstream>
#include <string>

#include "common/error.h"
#include "sandbox/host.h"
#include "sandbox/run_helpers.h"
#include "sandbox/sandbox.h"
#include "sandbox/spawn.h"
#include "support/test_support.h"

namespace tamma::sandbox {
namespace {

namespace fs = std::filesystem;
using testing::NoLeaks;
using testing::run;

// Child side: clone3 → ENOSYS for this process and everything it starts, as in a container.
bool filter_clone3() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return false;
  const bool ok = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) == 0 &&
                  seccomp_load(ctx) == 0;
  seccomp_release(ctx);
  return ok;
}

std::string own_pid_ns() {
  char link[64] = {};
  return ::readlink("/proc/self/ns/pid", link, sizeof link - 1) > 0 ? link : "?";
}

// Runs `body` in a forked child and returns what it wrote to the pipe as key=value lines.
template <typename Body>
std::map<std::string, std::string> in_child(Body body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::ostringstream out;
    try {
      body(out);
    } catch (const std::exception& e) {
      out << "exception=" << e.what() << "\n";
    }
    const std::string text = out.str();
    ssize_t ignored = ::write(fds[1], text.data(), text.size());
    (void)ignored;
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::map<std::string, std::string> report;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) report[line.substr(0, eq)] = line.substr(eq + 1);
  }
  report["child_exit"] = WIFEXITED(status) ? std::to_string(WEXITSTATUS(status)) : "signaled";
  return report;
}

TEST(Clone3Fallback, SpawnsWorkWhenClone3IsFiltered) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root: the isolated spawns below need namespaces without a user "
                    "namespace, and the filter is loaded without no_new_privs";
  }
  NoLeaks leaks;
  tamma::testing::TempDir dir;
  const std::string host_ns = own_pid_ns();
  // The worker's cgroup subtree is made here, not in the child: a child that made it would
  // _exit without removing it.
  shared_cgroup_manager();
  auto report = in_child([&](std::ostringstream& out) {
    out << "filter=" << (filter_clone3() ? "ok" : "failed") << "\n";
    const long rc = ::syscall(SYS_clone3, nullptr, std::size_t{0});
    out << "clone3=" << (rc < 0 ? strerrorname_np(errno) : "ok") << "\n";
    const HostCapabilities caps = probe_host();  // not the cached one: after the filter
    out << "probe_filtered=" << caps.clone3_filtered << "\n";
    out << "probe_pid_ns=" << caps.pid_ns << "\n";
    struct Variant {
      const char* name;
      bool isolate;
      bool share;
    };
    for (const Variant v :
         {Variant{"isolated_shared", true, true}, Variant{"isolated_copy", true, false},
          Variant{"plain_shared", false, true}, Variant{"plain_copy", false, false}}) {
      Policy policy;
      policy.isolate = v.isolate;
      policy.allow_degraded = !v.isolate;
      policy.share_worker_memory = v.share;
      try {
        auto sandbox = Sandbox::create(policy);
        Command c;
        c.argv = {"/bin/sh", "-c", "echo ran; readlink /proc/self/ns/pid"};
        c.env = {"PATH=/usr/bin:/bin"};
        c.workspace = dir.path();
        auto r = run(*sandbox, c);
        std::string ns = r.out.substr(r.out.find('\n') + 1);
        if (!ns.empty() && ns.back() == '\n') ns.pop_back();
        out << v.name << "="
            << (r.exit && !r.exit->signaled ? std::to_string(r.exit->code) : "signaled") << ","
            << r.out.substr(0, r.out.find('\n')) << ","
            << (ns == host_ns ? "host_pid_ns" : "own_pid_ns") << "\n";
      } catch (const std::exception& e) {
        out << v.name << "=" << e.what() << "\n";
      }
    }
    out << "seen_filtered=" << clone3_seen_filtered() << "\n";
  });
  EXPECT_EQ(report["child_exit"], "0");
  ASSERT_EQ(report["filter"], "ok");
  // The filter took: the imitation of a container's profile is what is under test.
  EXPECT_EQ(report["clone3"], "ENOSYS");
  EXPECT_EQ(report["probe_filtered"], "1");
  EXPECT_EQ(report["probe_pid_ns"], "1") << "namespaces were asked of clone3 only";
  EXPECT_EQ(report["isolated_shared"], "0,ran,own_pid_ns");
  EXPECT_EQ(report["isolated_copy"], "0,ran,own_pid_ns");
  EXPECT_EQ(report["plain_shared"], "0,ran,host_pid_ns");
  EXPECT_EQ(report["plain_copy"], "0,ran,host_pid_ns");
  EXPECT_EQ(report["seen_filtered"], "1");
  EXPECT_EQ(report.count("exception"), 0u) << report["exception"];
  leaks.check();
}

// Without the filter the same process spawns through clone3, so the fallback stays a
// fallback (and the worker keeps sharing its memory with the sandbox's first process).
TEST(Clone3Fallback, UnfilteredProcessesDoNotFallBack) {
  auto report = in_child([&](std::ostringstream& out) {
    const long rc = ::syscall(SYS_clone3, nullptr, std::size_t{0});
    out << "clone3=" << (rc < 0 ? strerrorname_np(errno) : "ok") << "\n";
    out << "probe_filtered=" << probe_host().clone3_filtered << "\n";
  });
  EXPECT_EQ(report["clone3"], "EINVAL");
  EXPECT_EQ(report["probe_filtered"], "0");
}

}  // namespace
}  // namespace tamma::sandbox
