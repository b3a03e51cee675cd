// Start-to-exit cost of running /bin/true: plain posix_spawn, our full sandbox (namespaces,
// mount jail, cgroup with limits, seccomp, privilege drop) and, when installed, the usual
// command-line sandboxes. Two tables: each case alternating with a baseline of its own
// (paired), then all cases interleaved in one loop. Interleaving makes machine noise hit the
// cases alike; pairing also keeps one sandbox's leftovers out of another's time.
//
// The kernel finishes part of a namespace's teardown in its own workers after the process
// is gone (a network namespace's cleanup above all). Back to back, that work of one case
// lands in the next case's time; a CI worker's tasks are seconds apart. TAMMA_BENCH_SETTLE_MS
// (default 0: back to back) pauses, untimed, after each run, so each case is timed without
// the others' leftovers. Both figures are worth reporting.
//
//   sandbox_spawn_bench [runs]      (default 300; needs root for the cgroup and namespaces)
//   TAMMA_BENCH_ONLY=bwrap sandbox_spawn_bench 100   (one case against the baseline)
//   TAMMA_BENCH_SETTLE_MS=5 sandbox_spawn_bench      (5 ms pause after every run)

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
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
  double cpu_ms = 0;  // user+system of this process and its reaped children, summed
  bool failed = false;
};

// CPU time is far less disturbed than wall time when the machine is shared: on a busy
// host it tells the cost of each case better than the medians do.
double cpu_ms_now() {
  double total = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    struct rusage ru {};
    ::getrusage(who, &ru);
    total += static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
             static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  }
  return total;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 300;
  const char* settle_env = std::getenv("TAMMA_BENCH_SETTLE_MS");
  const int settle_ms = settle_env != nullptr ? std::atoi(settle_env) : 0;
  const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  char workspace_template[] = "/tmp/tamma-bench-XXXXXX";
  if (::mkdtemp(workspace_template) == nullptr) return 1;
  const std::string workspace = workspace_template;

  sb::Policy policy;  // everything on: namespaces, jail, seccomp, cgroup limits
  policy.limits.memory_bytes = 512ull << 20;
  policy.limits.pids = 256;
  policy.limits.cpus = 1.0;
  sb::Policy cgroup_only = policy;  // the same limits, no namespaces: the cgroup's share
  cgroup_only.isolate = false;
  sb::Policy copied = policy;  // PID 1 a copy of this process, as after fork
  copied.share_worker_memory = false;
  sb::Policy fresh_net = policy;  // a new network namespace for every run
  fresh_net.reuse_network_namespaces = false;
  sb::Policy built_jail = policy;  // the whole mount jail built for every run
  built_jail.reuse_mount_templates = false;
  std::unique_ptr<sb::Sandbox> sandbox, plain, copy, fresh, built;
  try {
    sandbox = sb::Sandbox::create(policy);
    plain = sb::Sandbox::create(cgroup_only);
    copy = sb::Sandbox::create(copied);
    fresh = sb::Sandbox::create(fresh_net);
    built = sb::Sandbox::create(built_jail);
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

  auto run_in = [&](sb::Sandbox& box) {
    auto process = box.spawn(command);
    pollfd pfd{process->exit_fd(), POLLIN, 0};
    while (::poll(&pfd, 1, -1) < 0) {
    }
    auto status = process->poll_exit();
    // Teardown (cgroup removal) is part of the cost of a task.
    process.reset();
    return status && !status->signaled && status->code == 0;
  };
  std::vector<Case> cases;
  cases.push_back(
      {"posix_spawn /bin/true", [&] { return spawn_and_wait({"/bin/true"}, null_fd); }});
  cases.push_back({"tamma sandbox /bin/true", [&] { return run_in(*sandbox); }});
  cases.push_back({"tamma sandbox, PID 1 a copy", [&] { return run_in(*copy); }});
  cases.push_back({"tamma sandbox, fresh netns", [&] { return run_in(*fresh); }});
  cases.push_back({"tamma sandbox, jail per run", [&] { return run_in(*built); }});
  cases.push_back({"tamma cgroup only (no isolate)", [&] { return run_in(*plain); }});
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

  // TAMMA_BENCH_ONLY=text keeps the cases whose name contains it (and the baseline), so that
  // `perf stat` or `perf record` can look at one of them alone.
  if (const char* only = std::getenv("TAMMA_BENCH_ONLY"); only != nullptr && *only != '\0') {
    std::erase_if(cases, [&](const Case& c) {
      return &c != &cases.front() && c.name.find(only) == std::string::npos;
    });
  }
  for (auto& c : cases) c.run();  // warm caches and the sandbox's one-time setup

  // Runs the cases of `group` in turn, `runs` times, recording into each.
  auto measure = [&](std::vector<Case*> group) {
    for (int i = 0; i < runs; ++i) {
      for (Case* c : group) {
        const double cpu_start = cpu_ms_now();
        auto start = Clock::now();
        bool ok = c->run();
        c->ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        c->cpu_ms += cpu_ms_now() - cpu_start;
        c->failed |= !ok;
        if (settle_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(settle_ms));
      }
    }
  };
  auto print = [&](const std::vector<const Case*>& rows, const std::vector<double>& bases) {
    std::printf("%-30s %10s %10s %10s %14s %12s\n", "command", "median ms", "p90 ms", "min ms",
                "over spawn ms", "cpu ms/run");
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Case& c = *rows[i];
      const double median = percentile(c.ms, 0.5);
      std::printf("%-30s %10.3f %10.3f %10.3f %14.3f %12.3f%s\n", c.name.c_str(), median,
                  percentile(c.ms, 0.9), percentile(c.ms, 0.0), median - bases[i],
                  c.cpu_ms / static_cast<double>(runs), c.failed ? "  (some runs FAILED)" : "");
    }
  };
  const std::string pacing = settle_ms > 0
                                 ? "pause of " + std::to_string(settle_ms) + " ms after each run"
                                 : "back to back";
  double load[3] = {};

  // Paired: each case alternates with a baseline of its own, so that what one sandbox leaves
  // the kernel to finish (a network namespace's cleanup, above all) does not land in another
  // one's time. Each row's overhead is over the baseline runs of its own pair.
  std::vector<Case> baselines;
  baselines.reserve(cases.size());
  std::vector<const Case*> paired_rows;
  std::vector<double> paired_bases;
  for (std::size_t i = 1; i < cases.size(); ++i) {
    baselines.push_back(Case{cases.front().name, cases.front().run, {}, 0, false});
    measure({&baselines.back(), &cases[i]});
    paired_rows.push_back(&cases[i]);
    paired_bases.push_back(percentile(baselines.back().ms, 0.5));
  }
  if (!paired_rows.empty()) {
    std::printf("paired with %s: %d runs of each pair, alternating, %s\n",
                cases.front().name.c_str(), runs, pacing.c_str());
    if (::getloadavg(load, 3) > 0) std::printf("load average during the runs: %.2f\n", load[0]);
    print(paired_rows, paired_bases);
    std::printf("\n");
  }

  // All together: every case in turn, as a stress of the machine as a whole.
  for (auto& c : cases) {
    c.ms.clear();
    c.cpu_ms = 0;
  }
  std::vector<Case*> all;
  for (auto& c : cases) all.push_back(&c);
  measure(all);
  std::printf("all cases: %d runs each, interleaved, %s\n", runs, pacing.c_str());
  if (::getloadavg(load, 3) > 0) std::printf("load average during the runs: %.2f\n", load[0]);
  std::vector<const Case*> rows(all.begin(), all.end());
  print(rows, std::vector<double>(rows.size(), percentile(cases.front().ms, 0.5)));
  std::filesystem::remove_all(workspace);
  return 0;
}
