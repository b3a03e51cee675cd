// Overhead of `tamma-worker run -- /bin/true` against a plain fork+exec of /bin/true, bwrap
// (when installed) and `unshare -Umpnf --mount-proc`, measured side by side in one run, and the
// worker's start alone (--version) and resident memory. Prints its figures; no assertions
// (the machines are noisy).
//
//   worker_run_bench [RUNS]      (default 200; needs root for the sandbox)
//
// TAMMA_BENCH_WORKER names another tamma-worker than this build's; TAMMA_BENCH_WORKER_BEFORE
// names a second one (an older build) whose lines are measured too, marked "before:", for a
// before/after in one run. The cases take turns, one run of each per round, so that load
// from elsewhere on a shared machine falls on all of them alike rather than on whichever
// case was being measured when it came.

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern char** environ;

namespace {

struct Sample {
  double ms;
  long maxrss_kib;
};

Sample spawn_and_wait(const std::vector<std::string>& argv) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = 0;
  if (posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ) != 0) {
    std::perror("posix_spawn");
    std::exit(1);
  }
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  const auto end = std::chrono::steady_clock::now();
  posix_spawn_file_actions_destroy(&actions);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "%s exited with status %d\n", argv[0].c_str(), status);
    std::exit(1);
  }
  return {std::chrono::duration<double, std::milli>(end - start).count(), usage.ru_maxrss};
}

struct Figures {
  double median, p90, p99;
  long maxrss_kib;
};

Figures summarize(std::vector<double> times, long rss) {
  std::sort(times.begin(), times.end());
  auto at = [&](double q) { return times[static_cast<std::size_t>(q * (times.size() - 1))]; };
  return {at(0.5), at(0.9), at(0.99), rss};
}

std::string binary(const char* variable, const char* fallback) {
  const char* other = std::getenv(variable);
  return other != nullptr && *other != '\0' ? other : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 200;
  const std::string worker = binary("TAMMA_BENCH_WORKER", TAMMA_WORKER_BINARY);
  const std::string before = binary("TAMMA_BENCH_WORKER_BEFORE", "");
  char root_template[] = "/tmp/tamma-bench-XXXXXX";
  const std::string root = mkdtemp(root_template);

  struct Case {
    std::string name;
    std::vector<std::string> argv;
  };
  std::vector<Case> cases = {{"fork+exec /bin/true", {"/bin/true"}}};
  auto add_worker_cases = [&](const std::string& binary, const std::string& prefix) {
    cases.push_back({prefix + "tamma-worker --version (start, no task)", {binary, "--version"}});
    cases.push_back({prefix + "tamma-worker run (full sandbox)",
                     {binary, "run", "--quiet", "--log-level", "warn", "--workspace-root", root,
                      "--", "/bin/true"}});
    cases.push_back({prefix + "tamma-worker run --no-isolate (cgroup only)",
                     {binary, "run", "--quiet", "--log-level", "warn", "--no-isolate",
                      "--workspace-root", root, "--", "/bin/true"}});
  };
  if (!before.empty()) add_worker_cases(before, "before: ");
  add_worker_cases(worker, "");
  // The anchors (docs: ../shared/reference/anchors.md), where this machine has them: a
  // namespace sandbox without cgroups, workspace or result, and util-linux's unshare.
  for (const char* dir : {"/usr/bin/", "/bin/"}) {
    const std::string bwrap = std::string(dir) + "bwrap";
    if (::access(bwrap.c_str(), X_OK) == 0) {
      cases.push_back(
          {"bwrap --unshare-all --die-with-parent",
           {bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "/bin/true"}});
      break;
    }
  }
  cases.push_back(
      {"unshare -Umpnf --mount-proc", {"/usr/bin/unshare", "-Umpnf", "--mount-proc", "/bin/true"}});

  std::printf("%d runs each, wall time from spawn to exit\n\n", runs);
  std::printf("%-52s %9s %9s %9s %12s %11s\n", "case", "median ms", "p90 ms", "p99 ms",
              "over true ms", "maxrss KiB");
  for (int i = 0; i < 5; ++i) {  // warm the page cache
    for (const auto& c : cases) spawn_and_wait(c.argv);
  }
  std::vector<std::vector<double>> times(cases.size());
  std::vector<long> rss(cases.size(), 0);
  for (int i = 0; i < runs; ++i) {
    for (std::size_t k = 0; k < cases.size(); ++k) {
      const Sample s = spawn_and_wait(cases[k].argv);
      times[k].push_back(s.ms);
      rss[k] = std::max(rss[k], s.maxrss_kib);
    }
  }
  double baseline = 0;
  for (std::size_t k = 0; k < cases.size(); ++k) {
    const Figures f = summarize(std::move(times[k]), rss[k]);
    if (k == 0) baseline = f.median;
    std::printf("%-52s %9.3f %9.3f %9.3f %12.3f %11ld\n", cases[k].name.c_str(), f.median, f.p90,
                f.p99, f.median - baseline, f.maxrss_kib);
  }

  std::printf(
      "\nworker resident memory: idle is the --version line's maxrss; peak while "
      "running one task: the run lines'\n");
  if (std::none_of(cases.begin(), cases.end(),
                   [](const Case& c) { return c.name.starts_with("bwrap"); })) {
    std::printf("bwrap is not installed (apt-get install bubblewrap): its line is missing\n");
  }
  rmdir(root.c_str());
  return 0;
}
