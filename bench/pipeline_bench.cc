// The whole pipeline as users see it, through the real programs: `tamma-orchestrator serve` on
// one SQLite file (synchronous=FULL) and `tamma-worker start` daemons on loopback, every task
// sandboxed. Prints, with the anchor measured in the same run:
//   - pickup latency: from just before the submit is sent to the moment the task's first
//     instruction runs, read off the task itself (`date +%s%N` inside the sandbox, CLOCK_REALTIME),
//     with an idle daemon whose poll is parked. Beside it Celery+Redis for the same workload
//     (bench/celery_pickup.py), when `python3-celery` and `redis-server` are installed;
//   - where the pickup time goes: the daemon's own phase timings (its debug log), medians;
//   - throughput: trivial sandboxed tasks (`true`) per second through 2 daemons x 1, 2 and 4
//     slots, tasks queued first, and the CPU each party spent per task;
//   - the machine's floor under both: `date` spawned alone (no queue, no sandbox), and how many
//     /usr/bin/true and `bash -c true` two threads spawn per second with nothing else running.
// The goals of the issue are printed next to the figures, never asserted (machines are noisy).
//
//   pipeline_bench [--tasks N] [--warmup N] [--throughput-tasks N] [--slots 1,2,4]
//                  [--orchestrator-threads N] [--sqlite-checkpoint-pages N] [--no-celery] [--keep]
//
//   --tasks             measured pickups (default 200), after --warmup unmeasured ones (20)
//   --throughput-tasks  tasks per throughput configuration (default 1000)
//   --orchestrator-threads  the orchestrator's --threads (default: its own default)
//   --sqlite-checkpoint-pages  the orchestrator's --sqlite-checkpoint-pages (0: checkpoints
//                       inside the commits, as SQLite does by default; ADR 0040)
//   --keep              keep the scratch directory (logs, database) and print where it is
//
// TAMMA_BENCH_WORKER and TAMMA_BENCH_ORCHESTRATOR name other binaries than this build's (an
// older build, for a before/after comparison in one run).
//
// Needs root (the sandbox's cgroups and namespaces). Leaves nothing behind: the programs are
// stopped (and die with this one, PR_SET_PDEATHSIG) and the scratch directory is removed.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "orchestrator/http_client.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
namespace orch = tamma::orchestrator;

constexpr const char* kAdmin = "bench-admin-token-0123456789";
constexpr const char* kRegistration = "bench-registration-token-0123456789";

std::atomic<bool> g_interrupted{false};

// This build's programs, unless the environment names others.
std::string binary(const char* variable, const char* built) {
  const char* other = std::getenv(variable);
  return other != nullptr && *other != '\0' ? other : built;
}
std::string worker_binary() { return binary("TAMMA_BENCH_WORKER", TAMMA_WORKER_BINARY); }
std::string orchestrator_binary() {
  return binary("TAMMA_BENCH_ORCHESTRATOR", TAMMA_ORCHESTRATOR_BINARY);
}
void on_signal(int) { g_interrupted = true; }
void check_interrupted() {
  if (g_interrupted) throw std::runtime_error("interrupted");
}

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Nearest rank: the smallest sample at or above the fraction p of them.
double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

struct Spread {
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
};

Spread spread(const std::vector<double>& ms) {
  return {percentile(ms, 0.50), percentile(ms, 0.90), percentile(ms, 0.99), percentile(ms, 1.0)};
}

// CPU seconds (user + system) of a process and of its children it has reaped.
double cpu_seconds(pid_t pid) {
  const std::string text = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(text.substr(close + 2));
  std::vector<std::string> f;
  std::string field;
  while (in >> field) f.push_back(field);
  if (f.size() < 15) return 0;
  const long ticks = std::stol(f[11]) + std::stol(f[12]) + std::stol(f[13]) + std::stol(f[14]);
  return static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Context switches (voluntary and not) of all of a process's threads so far.
long long context_switches(pid_t pid) {
  long long total = 0;
  std::error_code ec;
  for (const auto& thread : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::istringstream in(read_text(thread.path() / "status"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
          line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        total += std::stoll(line.substr(line.find(':') + 1));
      }
    }
  }
  return total;
}

// Busy CPU seconds of the whole machine (all but idle and iowait), from /proc/stat.
double machine_busy_seconds() {
  std::istringstream in(read_text("/proc/stat"));
  std::string cpu;
  long long user, nice, system, idle, iowait, irq, softirq, steal;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  return static_cast<double>(user + nice + system + irq + softirq + steal) /
         static_cast<double>(::sysconf(_SC_CLK_TCK));
}

class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "tamma-pipeline-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() {
    if (keep) {
      std::fprintf(stderr, "pipeline_bench: kept %s\n", path_.c_str());
      return;
    }
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }
  bool keep = false;

 private:
  fs::path path_;
};

// A program in a child process writing its output to a log file, dying with this one.
class Program {
 public:
  Program(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
          fs::path log)
      : log_(std::move(log)) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "TAMMA_", 6) != 0) env.emplace_back(*e);  // not the caller's
    }
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    std::vector<char*> cenv;
    for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
    cenv.push_back(nullptr);
    const int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log_fd < 0 || null_fd < 0) throw std::runtime_error("cannot open " + log_.string());
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(null_fd, 0);
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execve(cargv[0], cargv.data(), cenv.data());
      ::_exit(127);
    }
    ::close(log_fd);
    ::close(null_fd);
  }
  ~Program() { stop(); }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string log() const { return read_text(log_); }

  // Throws with the log when the program has exited.
  void check_alive(const std::string& name) {
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error(name + " exited early; its log:\n" + log());
    }
  }

  // SIGTERM (a drain or graceful shutdown), SIGKILL when that takes more than 30 s.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto until = Clock::now() + 30s;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (Clock::now() >= until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    pid_ = -1;
  }

 private:
  fs::path log_;
  pid_t pid_ = -1;
};

// --orchestrator-threads, --sqlite-checkpoint-pages: empty for the orchestrator's own default.
std::string g_orchestrator_threads;
std::string g_checkpoint_pages;

class Orchestrator {
 public:
  explicit Orchestrator(const fs::path& dir) {
    fs::create_directories(dir);
    std::vector<std::string> argv{orchestrator_binary(),
                                  "serve",
                                  "--listen",
                                  "127.0.0.1:0",
                                  "--db",
                                  "sqlite:" + (dir / "db.sqlite").string(),
                                  "--data-dir",
                                  (dir / "data").string(),
                                  "--sqlite-synchronous",
                                  "full"};
    if (!g_orchestrator_threads.empty()) {
      argv.insert(argv.end(), {"--threads", g_orchestrator_threads});
    }
    if (!g_checkpoint_pages.empty()) {
      argv.insert(argv.end(), {"--sqlite-checkpoint-pages", g_checkpoint_pages});
    }
    program_ = std::make_unique<Program>(
        argv,
        std::vector<std::string>{std::string("TAMMA_ADMIN_TOKEN=") + kAdmin,
                                 std::string("TAMMA_REGISTRATION_TOKEN=") + kRegistration},
        dir / "orchestrator.log");
    const auto until = Clock::now() + 60s;
    constexpr std::string_view kAnnounce = "listening on http://127.0.0.1:";
    for (;;) {
      check_interrupted();
      program_->check_alive("tamma-orchestrator");
      const std::string log = program_->log();
      if (auto at = log.find(kAnnounce); at != std::string::npos) {
        url_ = "http://127.0.0.1:" + std::to_string(std::stoi(log.substr(at + kAnnounce.size())));
        break;
      }
      if (Clock::now() >= until)
        throw std::runtime_error("the orchestrator did not start:\n" + log);
      std::this_thread::sleep_for(10ms);
    }
    admin_ = std::make_unique<orch::HttpClient>(url_, kAdmin);
  }

  [[nodiscard]] const std::string& url() const { return url_; }
  [[nodiscard]] pid_t pid() const { return program_->pid(); }
  orch::HttpClient& admin() { return *admin_; }

  double metric(const std::string& name) {
    auto r = admin_->get("/metrics");
    if (r.status != 200) throw std::runtime_error("GET /metrics: " + std::to_string(r.status));
    auto at = r.body.find("\n" + name + " ");
    if (at == std::string::npos) return 0;
    return std::stod(r.body.substr(at + name.size() + 2));
  }

  std::string submit(orch::HttpClient& client, const std::string& run) {
    json body = {
        {"task", {{"type", "command"}, {"steps", json::array({{{"name", "t"}, {"run", run}}})}}}};
    auto r = client.post_json("/api/v1/tasks", body);
    if (r.status != 201) throw std::runtime_error("submit: " + std::to_string(r.status) + r.body);
    return r.json().at("id");
  }

 private:
  std::unique_ptr<Program> program_;
  std::string url_;
  std::unique_ptr<orch::HttpClient> admin_;
};

std::unique_ptr<Program> start_daemon(const Orchestrator& orchestrator, const fs::path& dir,
                                      int slots, const std::string& log_level) {
  fs::create_directories(dir / "workspaces");
  return std::make_unique<Program>(
      std::vector<std::string>{worker_binary(), "start", "--orchestrator", orchestrator.url(),
                               "--workspace-root", (dir / "workspaces").string(), "--slots",
                               std::to_string(slots), "--log-level", log_level},
      std::vector<std::string>{std::string("TAMMA_TOKEN=") + kRegistration}, dir / "worker.log");
}

// Until `polls` worker polls are parked at the orchestrator (the daemons are idle and ready).
void wait_for_parked_polls(Orchestrator& orchestrator, double polls,
                           const std::vector<Program*>& daemons) {
  const auto until = Clock::now() + 60s;
  while (orchestrator.metric("tamma_waiting_polls") < polls) {
    check_interrupted();
    for (auto* d : daemons) d->check_alive("tamma-worker start");
    if (Clock::now() >= until) throw std::runtime_error("the daemons did not start polling");
    std::this_thread::sleep_for(2ms);
  }
}

json wait_until_finished(orch::HttpClient& admin, const std::string& id) {
  const auto until = Clock::now() + 60s;
  for (;;) {
    check_interrupted();
    auto r = admin.get("/api/v1/tasks/" + id);
    if (r.status != 200) throw std::runtime_error("GET task: " + r.body);
    auto task = r.json();
    const std::string state = task.value("state", "");
    if (state == "succeeded") return task;
    if (state == "failed" || state == "dead" || state == "cancelled") {
      throw std::runtime_error("task " + id + " ended " + state + ": " + r.body);
    }
    if (Clock::now() >= until) throw std::runtime_error("task " + id + " did not finish");
    std::this_thread::sleep_for(1ms);
  }
}

// The first run of digits at least 18 long in the task's log: what `date +%s%N` printed.
std::int64_t printed_time(orch::HttpClient& admin, const std::string& id) {
  auto r = admin.get("/api/v1/tasks/" + id + "/logs");
  static const std::regex digits("[0-9]{18,}");
  std::smatch m;
  if (r.status != 200 || !std::regex_search(r.body, m, digits)) {
    throw std::runtime_error("no timestamp in the log of " + id + ": " + r.body.substr(0, 400));
  }
  return std::stoll(m.str());
}

// Median of each "task <id>: <phase> in <ms> ms" line in a daemon's debug log.
std::vector<std::pair<std::string, double>> phase_medians(const std::string& log) {
  static const std::regex line(R"(task [^ :]+: ([a-z][a-z ]+) in ([0-9.]+) ms)");
  std::map<std::string, std::vector<double>> by_phase;
  std::vector<std::string> order;
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it) {
    const std::string phase = (*it)[1];
    if (!by_phase.count(phase)) order.push_back(phase);
    by_phase[phase].push_back(std::stod((*it)[2]));
  }
  std::vector<std::pair<std::string, double>> out;
  for (const auto& phase : order) out.emplace_back(phase, percentile(by_phase[phase], 0.5));
  return out;
}

// One measured pickup, on the submitter's clock (CLOCK_REALTIME, ns).
struct PickupSample {
  std::string id;
  std::int64_t sent = 0;  // just before the submit
  std::int64_t ran = 0;   // the task's first instruction (what `date` printed)
};

// From the daemon's debug log, the wall-clock "timeline" lines of each task (microseconds):
// "task <id>: timeline: assigned at <us> us", "task <id>: timeline: step '<s>' exec'd at <us> us"
// (the first step's only).
std::map<std::string, std::map<std::string, std::int64_t>> timelines(const std::string& log) {
  static const std::regex line(
      R"(task ([^ :]+): timeline: (assigned|step '[^']*' exec'd) at ([0-9]+) us)");
  std::map<std::string, std::map<std::string, std::int64_t>> out;
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it) {
    const std::string what = (*it)[2].str().rfind("step", 0) == 0 ? "exec" : "assigned";
    out[(*it)[1]].emplace(what, std::stoll((*it)[3]));
  }
  return out;
}

struct Options {
  int tasks = 200;
  int warmup = 20;
  int throughput_tasks = 1000;
  std::vector<int> slots = {1, 2, 4};
  bool celery = true;
  bool keep = false;
};

// ---- pickup ----------------------------------------------------------------------------------

struct PickupFigures {
  Spread pickup;
  Spread submit;  // the submit's own round trip, until its 201
  std::vector<std::pair<std::string, double>> phases;
  // End to end, each from the submit: the assignment at the daemon, the step's execve in the
  // sandbox (empty when the daemon's log had no timeline).
  Spread assigned;
  Spread exec;
};

PickupFigures measure_pickup(const fs::path& dir, const Options& options) {
  Orchestrator orchestrator(dir / "orchestrator");
  auto daemon = start_daemon(orchestrator, dir / "worker", 1, "debug");
  orch::HttpClient client(orchestrator.url(), kAdmin);
  std::vector<double> pickup, submit;
  std::vector<PickupSample> samples;
  for (int i = 0; i < options.warmup + options.tasks; ++i) {
    wait_for_parked_polls(orchestrator, 1, {daemon.get()});
    std::this_thread::sleep_for(10ms);  // idle: nothing of the last task still running
    const std::int64_t sent = realtime_ns();
    const std::string id = orchestrator.submit(client, "date +%s%N");
    const std::int64_t answered = realtime_ns();
    wait_until_finished(orchestrator.admin(), id);
    const std::int64_t ran = printed_time(orchestrator.admin(), id);
    if (i < options.warmup) continue;
    samples.push_back({id, sent, ran});
    pickup.push_back(static_cast<double>(ran - sent) / 1e6);
    submit.push_back(static_cast<double>(answered - sent) / 1e6);
  }
  PickupFigures figures{spread(pickup), spread(submit), {}, {}, {}};
  daemon->stop();
  const std::string log = daemon->log();
  figures.phases = phase_medians(log);
  const auto lines = timelines(log);
  std::vector<double> assigned, exec;
  for (const auto& s : samples) {
    auto it = lines.find(s.id);
    if (it == lines.end()) continue;
    const auto& t = it->second;
    if (t.count("assigned"))
      assigned.push_back(static_cast<double>(t.at("assigned") * 1000 - s.sent) / 1e6);
    if (t.count("exec")) exec.push_back(static_cast<double>(t.at("exec") * 1000 - s.sent) / 1e6);
  }
  if (!assigned.empty()) figures.assigned = spread(assigned);
  if (!exec.empty()) figures.exec = spread(exec);
  return figures;
}

// The anchor: bench/celery_pickup.py; nullopt (and why) when it cannot run here.
std::optional<json> measure_celery(const Options& options, std::string& why) {
  const std::string command =
      fmt::format("/usr/bin/python3 {}/bench/celery_pickup.py --json --tasks {} --warmup {} 2>&1",
                  TAMMA_SOURCE_DIR, options.tasks, options.warmup);
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    why = "cannot start python3";
    return std::nullopt;
  }
  std::string out;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  const int status = ::pclose(pipe);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  if (code != 0) {
    why = (code == 2 ? "not installed: " : "failed: ") + out.substr(0, 400);
    while (!why.empty() && why.back() == '\n') why.pop_back();
    return std::nullopt;
  }
  const auto brace = out.rfind("\n{");
  try {
    return json::parse(brace == std::string::npos ? out : out.substr(brace + 1));
  } catch (const std::exception&) {
    why = "unreadable output: " + out.substr(0, 400);
    return std::nullopt;
  }
}

// ---- the machine's floor ---------------------------------------------------------------------
// What the step's command costs with no queue, no daemon and no sandbox: what no worker can go
// below on this machine. Printed next to the figures so that a goal is read against it.

extern "C" char** environ;

// posix_spawn(argv) with stdout into `out_fd` (-1: /dev/null), waited for.
void spawn_and_wait(const std::vector<std::string>& argv, int out_fd) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (out_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  } else {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(argv[0] + " failed in the floor measurement");
  }
}

// From before posix_spawn of `date +%s%N` to the time it prints, as the pickup is measured.
Spread date_floor(int runs) {
  std::vector<double> ms;
  for (int i = 0; i < runs + 5; ++i) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    const std::int64_t sent = realtime_ns();
    spawn_and_wait({"/usr/bin/date", "+%s%N"}, fds[1]);
    ::close(fds[1]);
    char buf[64] = {};
    const ssize_t n = ::read(fds[0], buf, sizeof buf - 1);
    ::close(fds[0]);
    if (n <= 0) throw std::runtime_error("date printed nothing");
    if (i >= 5) ms.push_back(static_cast<double>(std::stoll(buf) - sent) / 1e6);
  }
  return spread(ms);
}

// Commands per second that two threads spawn and wait for, nothing else running.
double spawn_rate(const std::vector<std::string>& argv, int per_thread) {
  const auto began = Clock::now();
  std::vector<std::thread> threads;
  std::string failure;
  std::mutex failure_mutex;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      try {
        for (int i = 0; i < per_thread; ++i) spawn_and_wait(argv, -1);
      } catch (const std::exception& e) {
        std::lock_guard lock(failure_mutex);
        failure = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (!failure.empty()) throw std::runtime_error(failure);
  return 2.0 * per_thread / std::chrono::duration<double>(Clock::now() - began).count();
}

// ---- throughput ------------------------------------------------------------------------------

struct ThroughputFigures {
  int slots = 0;
  int tasks = 0;
  double seconds = 0;
  double orchestrator_cpu_ms = 0;    // per task
  double orchestrator_switches = 0;  // per task, all its threads
  double daemons_cpu_ms = 0;         // per task, with the sandboxes they reaped
  double machine_cpu_ms = 0;         // per task, everything on the machine
};

ThroughputFigures measure_throughput(const fs::path& dir, int slots, int tasks) {
  Orchestrator orchestrator(dir / "orchestrator");
  // Queued first, from two clients: the figure is then the daemons' pace, not the submitters'.
  std::vector<std::thread> submitters;
  std::atomic<int> next{0};
  std::string failure;
  std::mutex failure_mutex;
  for (int t = 0; t < 2; ++t) {
    submitters.emplace_back([&] {
      try {
        orch::HttpClient client(orchestrator.url(), kAdmin);
        while (next.fetch_add(1) < tasks) orchestrator.submit(client, "true");
      } catch (const std::exception& e) {
        std::lock_guard lock(failure_mutex);
        failure = e.what();
      }
    });
  }
  for (auto& t : submitters) t.join();
  if (!failure.empty()) throw std::runtime_error(failure);

  const double orchestrator_cpu = cpu_seconds(orchestrator.pid());
  const long long orchestrator_switches = context_switches(orchestrator.pid());
  const double machine_cpu = machine_busy_seconds();
  const auto began = Clock::now();
  std::vector<std::unique_ptr<Program>> daemons;
  for (int d = 0; d < 2; ++d) {
    daemons.push_back(start_daemon(orchestrator, dir / fmt::format("worker-{}", d), slots, "warn"));
  }
  const std::string done_metric = "tamma_tasks{state=\"succeeded\"}";
  const auto until = Clock::now() + std::chrono::seconds(60 + tasks / 10);
  for (;;) {
    check_interrupted();
    for (auto& d : daemons) d->check_alive("tamma-worker start");
    const double done = orchestrator.metric(done_metric);
    if (done >= tasks) break;
    if (Clock::now() >= until) {
      throw std::runtime_error(fmt::format("only {} of {} tasks succeeded in time", done, tasks));
    }
    std::this_thread::sleep_for(5ms);
  }
  ThroughputFigures f;
  f.slots = slots;
  f.tasks = tasks;
  f.seconds = std::chrono::duration<double>(Clock::now() - began).count();
  f.orchestrator_cpu_ms = (cpu_seconds(orchestrator.pid()) - orchestrator_cpu) * 1000 / tasks;
  f.orchestrator_switches =
      static_cast<double>(context_switches(orchestrator.pid()) - orchestrator_switches) / tasks;
  double daemons_cpu = 0;
  for (auto& d : daemons) daemons_cpu += cpu_seconds(d->pid());
  f.daemons_cpu_ms = daemons_cpu * 1000 / tasks;
  f.machine_cpu_ms = (machine_busy_seconds() - machine_cpu) * 1000 / tasks;
  for (auto& d : daemons) d->stop();
  return f;
}

void print_spread(const char* label, const Spread& s) {
  std::printf("  %-44s p50 %7.2f  p90 %7.2f  p99 %7.2f  max %7.2f ms\n", label, s.p50, s.p90, s.p99,
              s.max);
}

Spread spread_from_json(const json& j) {
  return {j.at("p50"), j.at("p90"), j.at("p99"), j.at("max")};
}

int run(const Options& options) {
  ScratchDir scratch;
  scratch.keep = options.keep;
  std::printf(
      "pipeline_bench: %s, %u CPUs, orchestrator --threads %s --sqlite-checkpoint-pages %s, "
      "load %s",
      worker_binary().c_str(), std::thread::hardware_concurrency(),
      g_orchestrator_threads.empty() ? "default" : g_orchestrator_threads.c_str(),
      g_checkpoint_pages.empty() ? "default" : g_checkpoint_pages.c_str(),
      read_text("/proc/loadavg").c_str());

  std::fprintf(stderr, "pipeline_bench: pickup, %d tasks ...\n", options.tasks);
  const PickupFigures ours = measure_pickup(scratch.path() / "pickup", options);
  std::optional<json> celery;
  std::string why_not;
  if (options.celery) {
    std::fprintf(stderr, "pipeline_bench: Celery+Redis pickup ...\n");
    celery = measure_celery(options, why_not);
  } else {
    why_not = "--no-celery";
  }

  std::printf(
      "\npickup latency, submit -> the task's first instruction, idle daemon, %d tasks "
      "(goal: p50 <= 2 ms, p99 <= 5 ms, no worse than Celery+Redis):\n",
      options.tasks);
  print_spread("tamma (SQLite FULL, sandboxed `date +%s%N`)", ours.pickup);
  print_spread("  of which the submit's round trip", ours.submit);
  if (celery) {
    print_spread(fmt::format("celery {} + redis {} (unsandboxed)", celery->value("celery", "?"),
                             celery->value("redis", "?"))
                     .c_str(),
                 spread_from_json(celery->at("pickup_ms")));
    print_spread("  task function entered", spread_from_json(celery->at("entered_ms")));
    const double celery_p50 = celery->at("pickup_ms").at("p50");
    const double celery_p99 = celery->at("pickup_ms").at("p99");
    std::printf("  tamma / celery: p50 %.2fx, p99 %.2fx\n", ours.pickup.p50 / celery_p50,
                ours.pickup.p99 / celery_p99);
  } else {
    std::printf("  Celery+Redis: not measured (%s)\n", why_not.c_str());
  }
  print_spread("floor: date spawned alone, no queue/sandbox", date_floor(options.tasks));
  std::printf("where the daemon's time goes (median per task, its debug log):\n");
  for (const auto& [phase, ms] : ours.phases) std::printf("  %-44s %7.2f ms\n", phase.c_str(), ms);
  if (ours.exec.max > 0) {
    std::printf("end to end, from the submit (the daemon's wall-clock timeline, same machine):\n");
    print_spread("the assignment at the daemon", ours.assigned);
    print_spread("the step's execve in the sandbox", ours.exec);
    print_spread("the task's first instruction", ours.pickup);
  }

  std::printf(
      "\nthroughput, trivial sandboxed tasks through 2 daemons, queued first "
      "(goal: >= 500 tasks/s):\n");
  for (int slots : options.slots) {
    std::fprintf(stderr, "pipeline_bench: throughput, 2 daemons x %d slots ...\n", slots);
    const auto f = measure_throughput(scratch.path() / fmt::format("throughput-{}", slots), slots,
                                      options.throughput_tasks);
    std::printf(
        "  2 daemons x %d slot%s: %5d tasks in %6.2f s = %6.1f tasks/s; CPU per task: "
        "orchestrator %.2f ms (%.1f thread switches), daemons+sandboxes %.2f ms, machine %.2f "
        "ms\n",
        slots, slots == 1 ? " " : "s", f.tasks, f.seconds, f.tasks / f.seconds,
        f.orchestrator_cpu_ms, f.orchestrator_switches, f.daemons_cpu_ms, f.machine_cpu_ms);
  }
  const int per_thread = std::max(100, options.throughput_tasks / 2);
  std::printf(
      "  floor: 2 threads spawning the step's command, no queue/daemon/sandbox: /usr/bin/true "
      "%.1f/s, bash -c true %.1f/s\n",
      spawn_rate({"/usr/bin/true"}, per_thread),
      spawn_rate({"/bin/bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", "true"},
                 per_thread));
  return 0;
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoi(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    try {
      if (arg == "--tasks") {
        options.tasks = std::stoi(value());
      } else if (arg == "--warmup") {
        options.warmup = std::stoi(value());
      } else if (arg == "--throughput-tasks") {
        options.throughput_tasks = std::stoi(value());
      } else if (arg == "--slots") {
        options.slots = parse_list(value());
      } else if (arg == "--orchestrator-threads") {
        g_orchestrator_threads = std::to_string(std::stoi(value()));
      } else if (arg == "--sqlite-checkpoint-pages") {
        g_checkpoint_pages = std::to_string(std::stoi(value()));
      } else if (arg == "--no-celery") {
        options.celery = false;
      } else if (arg == "--keep") {
        options.keep = true;
      } else {
        std::fprintf(stderr,
                     "usage: %s [--tasks N] [--warmup N] [--throughput-tasks N] "
                     "[--slots 1,2,4] [--orchestrator-threads N] [--sqlite-checkpoint-pages N] "
                     "[--no-celery] [--keep]\n",
                     argv[0]);
        return 2;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pipeline_bench: %s: %s\n", arg.c_str(), e.what());
      return 2;
    }
  }
  if (options.tasks < 1 || options.throughput_tasks < 1) {
    std::fprintf(stderr, "pipeline_bench: --tasks and --throughput-tasks must be at least 1\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  try {
    return run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipeline_bench: %s\n", e.what());
    return 1;
  }
}
