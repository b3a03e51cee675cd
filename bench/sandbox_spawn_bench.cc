// Start-to-exit cost of running /bin/true: plain posix_spawn, our full sandbox (namespaces,
// mount jail, cgroup with limits, seccomp, privilege drop) and, when installed, the usual
// command-line sandboxes. Runs are interleaved so that machine noise hits all alike.
//
//   sandbox_spawn_bench [runs]      (default 300; needs root for the cgroup and namespaces)

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "sandbox/sandbox.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
namespace sb = tamma::sandbox;

std::string find_program(const std::string& name) {
  for (const char* dir : {"/usr/local/bin/", "/usr/bin/", "/bin/", "/usr/sbin/"}) {
    std::string path = std::string(dir) + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

// posix_spawn + waitpid, output to /dev/null; false when the program did not exit 0.
bool spawn_and_wait(const std::vector<std::string>& args, int null_fd) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, null_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, null_fd, 2);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return false;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

struct Case {
  std::string name;
  std::function<bool()> run;
  std::vector<double> ms;
  bool failed = false;
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 300;
  const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  char workspace_template[] = "/tmp/tamma-bench-XXXXXX";
  if (::mkdtemp(workspace_template) == nullptr) return 1;
  const std::string workspace = workspace_template;

  sb::Policy policy;  // everything on: namespaces, jail, seccomp, cgroup limits
  policy.limits.memory_bytes = 512ull << 20;
  policy.limits.pids = 256;
  policy.limits.cpus = 1.0;
  std::unique_ptr<sb::Sandbox> sandbox;
  try {
    sandbox = sb::Sandbox::create(policy);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sandbox unavailable: %s\n", e.what());
    return 1;
  }
  sb::Command command;
  command.argv = {"/bin/true"};
  command.env = {"PATH=/usr/bin:/bin"};
  command.workspace = workspace;
  command.stdout_fd = null_fd;
  command.stderr_fd = null_fd;

  std::vector<Case> cases;
  cases.push_back(
      {"posix_spawn /bin/true", [&] { return spawn_and_wait({"/bin/true"}, null_fd); }});
  cases.push_back({"tamma sandbox /bin/true", [&] {
                     auto process = sandbox->spawn(command);
                     pollfd pfd{process->exit_fd(), POLLIN, 0};
                     while (::poll(&pfd, 1, -1) < 0) {
                     }
                     auto status = process->poll_exit();
                     // Teardown (cgroup removal) is part of the cost of a task.
                     process.reset();
                     return status && !status->signaled && status->code == 0;
                   }});
  if (std::string unshare = find_program("unshare"); !unshare.empty()) {
    cases.push_back(
        {"unshare -Umpnf --mount-proc", [unshare, null_fd] {
           return spawn_and_wait({unshare, "-Umpnf", "--mount-proc", "/bin/true"}, null_fd);
         }});
  } else {
    std::printf("unshare: not installed, skipped\n");
  }
  if (std::string bwrap = find_program("bwrap"); !bwrap.empty()) {
    cases.push_back({"bwrap --unshare-all", [bwrap, null_fd] {
                       return spawn_and_wait({bwrap, "--ro-bind", "/", "/", "--unshare-all",
                                              "--die-with-parent", "/bin/true"},
                                             null_fd);
                     }});
  } else {
    std::printf("bwrap: not installed, skipped (apt-get install bubblewrap to compare)\n");
  }

  for (auto& c : cases) c.run();  // warm caches and the sandbox's one-time setup
  for (int i = 0; i < runs; ++i) {
    for (auto& c : cases) {
      auto start = Clock::now();
      bool ok = c.run();
      c.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      c.failed |= !ok;
    }
  }

  const double base = percentile(cases.front().ms, 0.5);
  std::printf("%d runs each, interleaved\n", runs);
  std::printf("%-30s %10s %10s %10s %14s\n", "command", "median ms", "p90 ms", "min ms",
              "over spawn ms");
  for (const auto& c : cases) {
    double median = percentile(c.ms, 0.5);
    std::printf("%-30s %10.3f %10.3f %10.3f %14.3f%s\n", c.name.c_str(), median,
                percentile(c.ms, 0.9), percentile(c.ms, 0.0), median - base,
                c.failed ? "  (some runs FAILED)" : "");
  }
  std::filesystem::remove_all(workspace);
  return 0;
}
