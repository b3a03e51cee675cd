// Orchestrator replicas side by side, in one run on this machine and with one workload for
// every configuration: one SQLite node (synchronous=FULL) against 1, 2 and 3 replicas sharing
// one durable PostgreSQL cluster (fsync, synchronous_commit and full_page_writes on). Every
// orchestrator is the real tamma-orchestrator binary in a child process, so its CPU and RSS
// are its own and replicas are separate processes, as in production. Prints:
//   - claims/s, unbatched: submit -> claim (long-poll) -> complete;
//   - pickup latency with a poll parked on replica B and the task submitted to replica A
//     (LISTEN/NOTIFY), beside the same-replica and the SQLite figures;
//   - the memory 10,000 idle long-polls spread over 3 replicas hold;
// and, with the throughput figures, where the CPU went (orchestrators, PostgreSQL, this
// client, everything else on the machine): on a small box they all share the same cores.
// The goals of the issue are printed next to the figures, never asserted.
//
//   replicas_bench [--tasks N] [--warmup N] [--submits N] [--polls N]
//
//   --tasks    measured tasks per throughput configuration (default 2000)
//   --warmup   tasks run first through every throughput configuration, not measured (100)
//   --submits  measured submits per pickup-latency figure, after 20 unmeasured ones (500)
//   --polls    idle long-polls held over 3 replicas (10000)
//
// Needs the Debian package `postgresql` (as root, initdb and postgres run as the `postgres`
// user). Leaves nothing behind: replicas and the cluster are stopped and their directories
// removed, also when a step fails or on Ctrl-C.

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "orchestrator/http_client.h"
#include "support/postgres_cluster.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
namespace orch = tamma::orchestrator;

constexpr const char* kAdmin = "bench-admin-token-0123456789";
constexpr const char* kRegistration = "bench-registration-token-0123456789";
// The same client for every configuration, whatever its number of replicas: the figures then
// differ only by what serves them. Three submitters so that three replicas can each have one
// write in flight; six 1-slot pollers, spread evenly (6, 3+3, 2+2+2).
constexpr int kSubmitters = 3;
constexpr int kPollers = 6;
constexpr int kPollWaitMs = 500;
constexpr int kPickupWarmup = 20;
// A step that makes no progress for this long has failed (a lost task, a wedged replica).
constexpr auto kStallLimit = 60s;

std::atomic<bool> g_interrupted{false};

void on_signal(int) { g_interrupted = true; }

void check_interrupted() {
  if (g_interrupted) throw std::runtime_error("interrupted");
}

// The first error any thread met; the others see failed() and stop.
class Failure {
 public:
  void record(const std::string& what) {
    std::lock_guard lock(mutex_);
    if (message_.empty()) message_ = what;
    failed_ = true;
  }
  [[nodiscard]] bool failed() const { return failed_; }
  void rethrow() {
    std::lock_guard lock(mutex_);
    if (failed_) throw std::runtime_error(message_);
  }

 private:
  std::mutex mutex_;
  std::string message_;
  std::atomic<bool> failed_{false};
};

// A directory under /tmp for the SQLite database, the replicas' data dirs and their logs.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "tamma-replicas-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The fields of /proc/.../stat after the command name, which may itself hold spaces and
// parentheses: [0] is the state (field 3 in proc(5)), [11] utime, [12] stime, [13] cutime,
// [14] cstime, [1] the parent pid.
std::vector<std::string> stat_fields(const fs::path& file) {
  const std::string text = read_text(file);
  const auto close = text.rfind(')');
  std::vector<std::string> fields;
  if (close == std::string::npos) return fields;
  std::istringstream in(text.substr(close + 1));
  std::string field;
  while (in >> field) fields.push_back(field);
  return fields;
}

long cpu_ticks(const std::vector<std::string>& f, bool with_children = false) {
  if (f.size() < 15) return 0;
  long ticks = std::stol(f[11]) + std::stol(f[12]);
  if (with_children) ticks += std::stol(f[13]) + std::stol(f[14]);
  return ticks;
}

double ticks_to_seconds(long ticks) {
  static const long per_second = ::sysconf(_SC_CLK_TCK);
  return static_cast<double>(ticks) / static_cast<double>(per_second);
}

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

std::string load_average() {
  std::string text = read_text("/proc/loadavg");
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

double metric(orch::HttpClient& admin, const std::string& name) {
  auto r = admin.get("/metrics");
  if (r.status != 200) throw std::runtime_error("GET /metrics: " + std::to_string(r.status));
  auto at = r.body.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stod(r.body.substr(at + name.size() + 2));
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

// ---- one orchestrator process ----------------------------------------------------------------

struct LogSummary {
  int warnings = 0;
  int errors = 0;
  std::vector<std::string> samples;  // the first few distinct ones, timestamps cut off
  std::string exit;                  // how the process ended, when not by our SIGTERM cleanly
};

// The real tamma-orchestrator binary, `serve`, in a child process that dies with this one
// (PR_SET_PDEATHSIG): a benchmark killed hard leaves no server behind.
class Replica {
 public:
  Replica(std::string name, const std::string& db, const fs::path& dir,
          const std::vector<std::string>& flags)
      : name_(std::move(name)), log_(dir / "orchestrator.log") {
    fs::create_directories(dir);
    // Port 0 and the port read back from the announce line: no window in which another
    // process on this shared machine could take a port picked in advance.
    std::vector<std::string> argv = {
        TAMMA_ORCHESTRATOR_BINARY, "serve", "--listen", "127.0.0.1:0", "--db", db, "--data-dir",
        (dir / "data").string()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    // The caller's TAMMA_* settings (a TAMMA_DB_URL, say) must not leak into the replicas.
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "TAMMA_", 6) != 0) env.emplace_back(*e);
    }
    env.push_back(std::string("TAMMA_ADMIN_TOKEN=") + kAdmin);
    env.push_back(std::string("TAMMA_REGISTRATION_TOKEN=") + kRegistration);
    spawn(argv, env);
    try {
      wait_until_ready();
    } catch (...) {
      stop();
      throw;
    }
  }
  ~Replica() { stop(); }
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] const std::string& url() const { return url_; }
  [[nodiscard]] std::uint16_t port() const { return port_; }

  [[nodiscard]] long rss_kib() const {
    std::istringstream status(read_text("/proc/" + std::to_string(pid_) + "/status"));
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
  }

  // CPU ticks of each thread, by thread id (ids grow in creation order).
  [[nodiscard]] std::map<int, long> thread_ticks() const {
    std::map<int, long> out;
    std::error_code ec;
    const fs::path tasks = "/proc/" + std::to_string(pid_) + "/task";
    for (fs::directory_iterator it(tasks, ec), end; !ec && it != end; it.increment(ec)) {
      out[std::stoi(it->path().filename().string())] = cpu_ticks(stat_fields(it->path() / "stat"));
    }
    return out;
  }

  // SIGTERM (a graceful shutdown), SIGKILL when that takes longer than 20 s.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    const auto until = Clock::now() + 20s;
    bool reaped = false;
    while (Clock::now() < until) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped = true;
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    if (!reaped) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      exit_ = "did not stop within 20 s of SIGTERM; killed";
    } else if (WIFSIGNALED(status)) {
      exit_ = fmt::format("ended by signal {}", WTERMSIG(status));
    } else if (WEXITSTATUS(status) != 0) {
      exit_ = fmt::format("exit code {}", WEXITSTATUS(status));
    }
    pid_ = -1;
  }

  [[nodiscard]] LogSummary log_summary() const {
    LogSummary s;
    s.exit = exit_;
    std::istringstream in(read_text(log_));
    std::string line;
    while (std::getline(in, line)) {
      const bool warning = line.find(" warning ") != std::string::npos;
      const bool error =
          line.find(" error ") != std::string::npos || line.find(" critical ") != std::string::npos;
      if (!warning && !error) continue;
      (error ? s.errors : s.warnings)++;
      // "2024-01-01T00:00:00.000 warning message": the part after the level.
      const auto space = line.find(' ');
      std::string text = space == std::string::npos ? line : line.substr(space + 1);
      if (s.samples.size() < 3 &&
          std::find(s.samples.begin(), s.samples.end(), text) == s.samples.end()) {
        s.samples.push_back(text.substr(0, 240));
      }
    }
    return s;
  }

 private:
  void spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    // Everything the child needs is made here: between fork and exec only async-signal-safe
    // calls are allowed.
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
      // Not this process's 10,000 poll sockets nor the other replicas' descriptors.
      ::close_range(3, ~0U, 0);
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

  void wait_until_ready() {
    const auto until = Clock::now() + 60s;
    constexpr std::string_view kAnnounce = "listening on http://127.0.0.1:";
    while (port_ == 0) {
      check_interrupted();
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error(name_ + " exited while starting:\n" + read_text(log_));
      }
      const std::string log = read_text(log_);
      if (auto at = log.find(kAnnounce); at != std::string::npos) {
        port_ = static_cast<std::uint16_t>(std::stoi(log.substr(at + kAnnounce.size())));
        break;
      }
      if (Clock::now() >= until) {
        throw std::runtime_error(name_ + " did not start within 60 s:\n" + read_text(log_));
      }
      std::this_thread::sleep_for(10ms);
    }
    url_ = "http://127.0.0.1:" + std::to_string(port_);
    orch::HttpClient admin(url_, kAdmin);
    for (;;) {
      check_interrupted();
      try {
        if (admin.get("/ready", 2s).status == 200) return;
      } catch (const std::exception&) {
        // Not answering yet.
      }
      if (Clock::now() >= until) {
        throw std::runtime_error(name_ + " did not become ready within 60 s:\n" + read_text(log_));
      }
      std::this_thread::sleep_for(20ms);
    }
  }

  std::string name_;
  fs::path log_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string url_;
  std::string exit_;
};

using Replicas = std::vector<std::unique_ptr<Replica>>;

// ---- clients ---------------------------------------------------------------------------------

json task_body() {
  return {
      {"task", {{"type", "command"}, {"steps", json::array({{{"name", "x"}, {"run", "true"}}})}}}};
}

struct Worker {
  std::string id;
  std::string token;
  std::size_t replica = 0;  // where it polls and completes
};

Worker register_worker(const Replicas& replicas, std::size_t replica) {
  orch::HttpClient http(replicas[replica]->url(), kRegistration);
  auto r =
      http.post_json("/api/v1/workers/register",
                     {{"capabilities", {{"taskTypes", json::array({"command"})}, {"slots", 1}}}});
  if (r.status != 201) throw std::runtime_error("register: " + r.body);
  auto j = r.json();
  return {j["workerId"], j["token"], replica};
}

std::string poll_path(const Worker& w, int wait_ms) {
  return fmt::format("/api/v1/workers/{}/poll?waitMs={}", w.id, wait_ms);
}

// Completes the assignment a poll answered with, on the replica the poll came from.
std::string complete(orch::HttpClient& http, const orch::HttpResult& poll) {
  auto a = poll.json();
  const std::string task_id = a["taskId"];
  auto c = http.post_json("/api/v1/tasks/" + task_id + "/complete",
                          {{"attempt", a["attempt"]},
                           {"leaseId", a["leaseId"]},
                           {"result", {{"status", "succeeded"}}}});
  if (c.status != 200) throw std::runtime_error("complete: " + c.body);
  return task_id;
}

double parked_polls(std::vector<std::unique_ptr<orch::HttpClient>>& admins) {
  double sum = 0;
  for (auto& a : admins) sum += metric(*a, "tamma_waiting_polls");
  return sum;
}

std::vector<std::unique_ptr<orch::HttpClient>> admin_clients(const Replicas& replicas) {
  std::vector<std::unique_ptr<orch::HttpClient>> out;
  for (const auto& r : replicas)
    out.push_back(std::make_unique<orch::HttpClient>(r->url(), kAdmin));
  return out;
}

// ---- where the CPU went ------------------------------------------------------------------------

struct CpuSample {
  std::vector<std::map<int, long>> replica_threads;
  long postgres = 0;
  long self = 0;
  long machine_busy = 0;
  long machine_steal = 0;
  long machine_total = 0;
};

// The postmaster with its children: live backends, and (in the postmaster's cutime) those that
// exited meanwhile.
long postgres_ticks(pid_t postmaster) {
  if (postmaster <= 0) return 0;
  long ticks = cpu_ticks(stat_fields("/proc/" + std::to_string(postmaster) + "/stat"), true);
  const std::string parent = std::to_string(postmaster);
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto f = stat_fields(it->path() / "stat");
    if (f.size() > 14 && f[1] == parent) ticks += cpu_ticks(f);
  }
  return ticks;
}

CpuSample sample_cpu(const Replicas& replicas, pid_t postmaster) {
  CpuSample s;
  for (const auto& r : replicas) s.replica_threads.push_back(r->thread_ticks());
  s.postgres = postgres_ticks(postmaster);
  s.self = cpu_ticks(stat_fields("/proc/self/stat"));
  // "cpu  user nice system idle iowait irq softirq steal ...": busy is all but idle and iowait.
  std::istringstream in(read_text("/proc/stat"));
  std::string label;
  in >> label;
  for (int i = 0; i < 8; ++i) {
    long v = 0;
    in >> v;
    s.machine_total += v;
    if (i != 3 && i != 4) s.machine_busy += v;
    if (i == 7) s.machine_steal = v;
  }
  return s;
}

struct ReplicaCpu {
  double seconds = 0;
  std::vector<double> thread_seconds;  // thread id order
  double busiest_share = 0;            // the busiest thread's CPU time over the wall time
};

struct CpuReport {
  std::vector<ReplicaCpu> replicas;
  double orchestrators = 0;
  double postgres = 0;
  double bench = 0;
  // Everything else on the machine, seen only in /proc/stat: processes outside this container's
  // view (other builds), the kernel. Steal apart: CPU the hypervisor gave to other guests.
  double other = 0;
  double steal = 0;
  double machine_busy = 0;  // share of all CPUs in use, steal included
};

CpuReport cpu_between(const CpuSample& a, const CpuSample& b, double wall) {
  CpuReport r;
  for (std::size_t i = 0; i < b.replica_threads.size(); ++i) {
    ReplicaCpu rc;
    for (const auto& [tid, ticks] : b.replica_threads[i]) {
      auto before = a.replica_threads[i].find(tid);
      const double s =
          ticks_to_seconds(ticks - (before == a.replica_threads[i].end() ? 0 : before->second));
      rc.thread_seconds.push_back(s);
      rc.seconds += s;
      rc.busiest_share = std::max(rc.busiest_share, s / wall);
    }
    r.orchestrators += rc.seconds;
    r.replicas.push_back(std::move(rc));
  }
  r.postgres = ticks_to_seconds(b.postgres - a.postgres);
  r.bench = ticks_to_seconds(b.self - a.self);
  const double busy = ticks_to_seconds(b.machine_busy - a.machine_busy);
  r.steal = ticks_to_seconds(b.machine_steal - a.machine_steal);
  r.other = std::max(0.0, busy - r.steal - r.orchestrators - r.postgres - r.bench);
  r.machine_busy = static_cast<double>(b.machine_busy - a.machine_busy) /
                   static_cast<double>(std::max(1L, b.machine_total - a.machine_total));
  return r;
}

// Transactions that wrote (each took an xid, and each commit waited for its WAL to be flushed)
// and WAL bytes, cluster-wide. Read from the live counters, not pg_stat_*: those lag by up to
// seconds.
struct PgCounters {
  long long next_xid = 0;
  std::string wal_lsn;
};

PgCounters pg_counters(const tamma::testing::PostgresCluster& cluster) {
  auto rows = cluster.execute(
      "postgres", "SELECT pg_snapshot_xmax(pg_current_snapshot())::text, pg_current_wal_lsn()");
  return {std::stoll(*rows.at(0).at(0)), *rows.at(0).at(1)};
}

double wal_bytes_since(const tamma::testing::PostgresCluster& cluster, const PgCounters& before) {
  auto rows = cluster.execute(
      "postgres", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '" + before.wal_lsn + "')");
  return std::stod(*rows.at(0).at(0));
}

// ---- claims/s --------------------------------------------------------------------------------

struct Throughput {
  std::string label;
  int tasks = 0;
  double seconds = 0;
  double rate = 0;
  CpuReport cpu;
  std::optional<double> xacts_per_task;
  std::optional<double> wal_kib_per_task;
  std::string check;  // a problem with the outcome, "" when every task succeeded
};

// One batch of `tasks` through submit -> claim -> complete. The pollers are parked before the
// first submit; `at_start` runs right before it and `at_end` right after the last complete.
double run_tasks(const Replicas& replicas, const std::vector<Worker>& workers, int tasks,
                 const std::function<void()>& at_start, const std::function<void()>& at_end) {
  Failure failure;
  std::atomic<bool> stop{false};
  std::atomic<int> done{0};
  std::mutex mutex;
  std::condition_variable progress;
  std::vector<std::thread> pollers;
  for (const auto& w : workers) {
    pollers.emplace_back([&, w] {
      try {
        orch::HttpClient http(replicas[w.replica]->url(), w.token);
        while (!stop && !failure.failed()) {
          auto r = http.request("POST", poll_path(w, kPollWaitMs));
          if (r.status == 204) continue;
          if (r.status != 200) throw std::runtime_error("poll: " + r.body);
          complete(http, r);
          if (done.fetch_add(1) + 1 >= tasks) {
            std::lock_guard lock(mutex);
            stop = true;
            progress.notify_all();
          }
        }
      } catch (const std::exception& e) {
        failure.record(e.what());
        progress.notify_all();
      }
    });
  }
  auto admins = admin_clients(replicas);
  const auto park_until = Clock::now() + kStallLimit;
  while (!failure.failed() && parked_polls(admins) < static_cast<double>(workers.size())) {
    if (Clock::now() > park_until) failure.record("the pollers did not park");
    std::this_thread::sleep_for(2ms);
  }
  at_start();
  const auto start = Clock::now();
  std::vector<std::thread> submitters;
  for (int s = 0; s < kSubmitters; ++s) {
    submitters.emplace_back([&, s] {
      try {
        std::vector<std::unique_ptr<orch::HttpClient>> http = admin_clients(replicas);
        // Task i goes to replica i mod n: round-robin over the replicas across all submitters.
        for (int i = s; i < tasks && !failure.failed() && !g_interrupted; i += kSubmitters) {
          auto r = http[static_cast<std::size_t>(i) % replicas.size()]->post_json("/api/v1/tasks",
                                                                                  task_body());
          if (r.status != 201) throw std::runtime_error("submit: " + r.body);
        }
      } catch (const std::exception& e) {
        failure.record(e.what());
        progress.notify_all();
      }
    });
  }
  Clock::time_point end;
  {
    std::unique_lock lock(mutex);
    int seen = -1;
    auto last_progress = Clock::now();
    while (!stop && !failure.failed() && !g_interrupted) {
      progress.wait_for(lock, 100ms);
      if (done.load() != seen) {
        seen = done.load();
        last_progress = Clock::now();
      } else if (Clock::now() - last_progress > kStallLimit) {
        failure.record(fmt::format("no task completed for {} s ({} of {} done)",
                                   kStallLimit.count(), seen, tasks));
      }
    }
    end = Clock::now();
  }
  if (!failure.failed() && !g_interrupted) at_end();
  stop = true;
  for (auto& t : submitters) t.join();
  for (auto& t : pollers) t.join();
  check_interrupted();
  failure.rethrow();
  return std::chrono::duration<double>(end - start).count();
}

std::vector<Worker> register_pollers(const Replicas& replicas) {
  std::vector<Worker> workers;
  for (int p = 0; p < kPollers; ++p) {
    workers.push_back(register_worker(replicas, static_cast<std::size_t>(p) % replicas.size()));
  }
  return workers;
}

Throughput claim_throughput(const std::string& label, const Replicas& replicas, int warmup,
                            int tasks, const tamma::testing::PostgresCluster* cluster) {
  std::fprintf(stderr, "replicas_bench: claims/s, %s ...\n", label.c_str());
  auto workers = register_pollers(replicas);
  if (warmup > 0)
    run_tasks(
        replicas, workers, warmup, [] {}, [] {});
  const pid_t postmaster = cluster != nullptr ? cluster->postmaster_pid() : -1;
  Throughput t;
  t.label = label;
  t.tasks = tasks;
  PgCounters pg_before;
  CpuSample cpu_before;
  CpuSample cpu_after;
  // The database counters are read outside the timed window: their own connections cost time.
  if (cluster != nullptr) pg_before = pg_counters(*cluster);
  t.seconds = run_tasks(
      replicas, workers, tasks, [&] { cpu_before = sample_cpu(replicas, postmaster); },
      [&] { cpu_after = sample_cpu(replicas, postmaster); });
  t.rate = tasks / t.seconds;
  t.cpu = cpu_between(cpu_before, cpu_after, t.seconds);
  if (cluster != nullptr) {
    const auto pg_after = pg_counters(*cluster);
    t.xacts_per_task = static_cast<double>(pg_after.next_xid - pg_before.next_xid) / tasks;
    t.wal_kib_per_task = wal_bytes_since(*cluster, pg_before) / 1024.0 / tasks;
  }
  // The shared database must hold every task as succeeded, none lost or run twice.
  orch::HttpClient admin(replicas[0]->url(), kAdmin);
  const double succeeded = metric(admin, "tamma_tasks{state=\"succeeded\"}");
  const double queued = metric(admin, "tamma_tasks{state=\"queued\"}");
  const double running = metric(admin, "tamma_tasks{state=\"running\"}");
  if (succeeded != warmup + tasks || queued != 0 || running != 0) {
    t.check = fmt::format("tasks: {} succeeded (expected {}), {} queued, {} running", succeeded,
                          warmup + tasks, queued, running);
  }
  return t;
}

// ---- pickup latency ----------------------------------------------------------------------------

struct Latency {
  std::string label;
  int submits = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
  // Until the submit's own 201: the part of the pickup that is the submit itself; the rest is
  // the hand-over to the poll (in the same transaction, or through NOTIFY to another replica).
  double submit_p50 = 0, submit_p99 = 0;
  CpuReport cpu;  // over the measured submits
};

// One task at a time, submitted to `submit_to` while a poll of a worker on `poll_on` is parked
// (confirmed through poll_on's own metrics): from just before the submit is sent to when the
// poll's 200 arrives. The first kPickupWarmup are not counted.
Latency pickup_latency(const std::string& label, const Replicas& replicas, std::size_t submit_to,
                       std::size_t poll_on, int submits,
                       const tamma::testing::PostgresCluster* cluster) {
  const pid_t postmaster = cluster != nullptr ? cluster->postmaster_pid() : -1;
  CpuSample cpu_before;
  Clock::time_point measured_from;
  std::fprintf(stderr, "replicas_bench: pickup latency, %s ...\n", label.c_str());
  const Worker worker = register_worker(replicas, poll_on);
  orch::HttpClient submit_admin(replicas[submit_to]->url(), kAdmin);
  orch::HttpClient poll_admin(replicas[poll_on]->url(), kAdmin);
  const int total = kPickupWarmup + submits;
  std::vector<Clock::time_point> received(static_cast<std::size_t>(total));
  std::vector<std::string> received_ids(static_cast<std::size_t>(total));
  int got = 0;  // under mutex
  std::mutex mutex;
  std::condition_variable progress;
  std::atomic<bool> stop{false};
  Failure failure;
  // Long waits: a poll that times out right at a submit would add a re-poll to the figure.
  std::thread poller([&] {
    try {
      orch::HttpClient http(replicas[poll_on]->url(), worker.token);
      while (!stop && !failure.failed()) {
        auto r = http.request("POST", poll_path(worker, 2000));
        const auto now = Clock::now();
        if (r.status == 204) continue;
        if (r.status != 200) throw std::runtime_error("poll: " + r.body);
        const std::string id = complete(http, r);
        std::lock_guard lock(mutex);
        if (got >= total) throw std::runtime_error("more tasks arrived than were submitted");
        received[static_cast<std::size_t>(got)] = now;
        received_ids[static_cast<std::size_t>(got)] = id;
        ++got;
        progress.notify_all();
      }
    } catch (const std::exception& e) {
      failure.record(e.what());
      std::lock_guard lock(mutex);
      progress.notify_all();
    }
  });
  auto wait_for_got = [&](int at_least) {
    std::unique_lock lock(mutex);
    const auto until = Clock::now() + kStallLimit;
    while (got < at_least && !failure.failed()) {
      check_interrupted();
      if (Clock::now() > until) failure.record("a submitted task never reached the poller");
      progress.wait_for(lock, 50ms);
    }
  };
  std::vector<double> latencies;
  std::vector<double> submit_times;
  try {
    for (int i = 0; i < total && !failure.failed(); ++i) {
      // The previous task is done and the poll is parked again, for real.
      wait_for_got(i);
      const auto park_until = Clock::now() + kStallLimit;
      while (!failure.failed() && metric(poll_admin, "tamma_waiting_polls") < 1) {
        check_interrupted();
        if (Clock::now() > park_until) failure.record("the poller did not park");
        std::this_thread::sleep_for(100us);
      }
      if (failure.failed()) break;
      if (i == kPickupWarmup) {
        cpu_before = sample_cpu(replicas, postmaster);
        measured_from = Clock::now();
      }
      const auto sent = Clock::now();
      auto r = submit_admin.post_json("/api/v1/tasks", task_body());
      const auto answered = Clock::now();
      if (r.status != 201) throw std::runtime_error("submit: " + r.body);
      const std::string id = r.json()["id"];
      wait_for_got(i + 1);
      if (failure.failed()) break;
      std::lock_guard lock(mutex);
      if (received_ids[static_cast<std::size_t>(i)] != id) {
        throw std::runtime_error("the poller got " + received_ids[static_cast<std::size_t>(i)] +
                                 ", not the task just submitted (" + id + ")");
      }
      if (i >= kPickupWarmup) {
        latencies.push_back(ms_between(sent, received[static_cast<std::size_t>(i)]));
        submit_times.push_back(ms_between(sent, answered));
      }
    }
  } catch (...) {
    stop = true;
    poller.join();
    throw;
  }
  const CpuSample cpu_after = sample_cpu(replicas, postmaster);
  const double seconds = std::chrono::duration<double>(Clock::now() - measured_from).count();
  stop = true;
  poller.join();
  failure.rethrow();
  Latency l;
  l.cpu = cpu_between(cpu_before, cpu_after, seconds);
  l.submit_p50 = percentile(submit_times, 0.5);
  l.submit_p99 = percentile(submit_times, 0.99);
  l.label = label;
  l.submits = submits;
  l.p50 = percentile(latencies, 0.5);
  l.p90 = percentile(latencies, 0.9);
  l.p99 = percentile(latencies, 0.99);
  l.max = *std::max_element(latencies.begin(), latencies.end());
  return l;
}

// ---- idle long-polls
// -----------------------------------------------------------------------------

struct IdlePolls {
  int count = 0;
  double parked = 0;
  double seconds = 0;  // to open and park them all
  double left = 0;     // still parked after the clients hung up
  std::vector<int> per_replica;
  std::vector<long> before, held, after;  // RSS KiB of each replica
};

// Raw sockets, no event loop needed for an idle request: the cheapest client that can hold
// thousands of requests open. Poll i goes to replica i mod n.
IdlePolls idle_polls(const Replicas& replicas, int count) {
  std::fprintf(stderr, "replicas_bench: %d idle long-polls over %zu replicas ...\n", count,
               replicas.size());
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < static_cast<rlim_t>(count) + 100) {
    throw std::runtime_error(
        fmt::format("RLIMIT_NOFILE hard limit {} is too low for {} polls", limit.rlim_max, count));
  }
  IdlePolls out;
  out.count = count;
  std::vector<std::string> requests;
  for (std::size_t r = 0; r < replicas.size(); ++r) {
    const Worker w = register_worker(replicas, r);
    requests.push_back(
        fmt::format("POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n"
                    "Content-Length: 0\r\n\r\n",
                    poll_path(w, 120000), w.token));
  }
  auto admins = admin_clients(replicas);
  for (const auto& r : replicas) out.before.push_back(r->rss_kib());
  out.per_replica.assign(replicas.size(), 0);
  std::vector<int> sockets;
  auto close_all = [&] {
    for (int fd : sockets) ::close(fd);
    sockets.clear();
  };
  try {
    const auto start = Clock::now();
    for (int i = 0; i < count; ++i) {
      check_interrupted();
      const std::size_t r = static_cast<std::size_t>(i) % replicas.size();
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) throw std::runtime_error(fmt::format("socket #{}: {}", i, std::strerror(errno)));
      sockets.push_back(fd);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(replicas[r]->port());
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        throw std::runtime_error(fmt::format("connect #{}: {}", i, std::strerror(errno)));
      }
      if (::send(fd, requests[r].data(), requests[r].size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(requests[r].size())) {
        throw std::runtime_error(fmt::format("send #{}: {}", i, std::strerror(errno)));
      }
      ++out.per_replica[r];
    }
    auto deadline = Clock::now() + 60s;
    while ((out.parked = parked_polls(admins)) < count && Clock::now() < deadline) {
      check_interrupted();
      std::this_thread::sleep_for(20ms);
    }
    out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (const auto& r : replicas) out.held.push_back(r->rss_kib());
  } catch (...) {
    close_all();
    throw;
  }
  close_all();
  // Closing the sockets must release every parked poll (disconnect detection).
  auto deadline = Clock::now() + 30s;
  while ((out.left = parked_polls(admins)) > 0 && Clock::now() < deadline) {
    check_interrupted();
    std::this_thread::sleep_for(20ms);
  }
  for (const auto& r : replicas) out.after.push_back(r->rss_kib());
  return out;
}

// ---- the machine -------------------------------------------------------------------------------

// What every durable commit waits for at least: a small write made durable on the disk the
// databases live on (PostgreSQL's WAL and SQLite's both end in fdatasync here).
std::pair<double, double> fdatasync_ms(const fs::path& dir) {
  const fs::path file = dir / "fdatasync-probe";
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot open " + file.string());
  const std::string block(8192, 'x');
  constexpr int kWrites = 200;
  // Preallocated, as WAL segments are: the probe times the data, not the growth of the file.
  for (int i = 0; i < kWrites; ++i) {
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
      ::close(fd);
      throw std::runtime_error("write failed");
    }
  }
  ::fsync(fd);
  std::vector<double> times;
  for (int i = 0; i < kWrites; ++i) {
    const auto t0 = Clock::now();
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i) * 8192) < 0 ||
        ::fdatasync(fd) != 0) {
      ::close(fd);
      throw std::runtime_error("pwrite/fdatasync failed");
    }
    times.push_back(ms_between(t0, Clock::now()));
  }
  ::close(fd);
  fs::remove(file);
  return {percentile(times, 0.5), percentile(times, 0.9)};
}

struct ConfigLogs {
  std::string label;
  std::vector<std::pair<std::string, LogSummary>> replicas;
};

ConfigLogs collect_logs(const std::string& label, Replicas& replicas) {
  ConfigLogs logs{label, {}};
  for (auto& r : replicas) {
    r->stop();
    logs.replicas.emplace_back(r->name(), r->log_summary());
  }
  return logs;
}

Replicas start_replicas(const std::string& prefix, int n, const std::string& db,
                        const fs::path& dir, const std::vector<std::string>& flags) {
  Replicas out;
  for (int i = 0; i < n; ++i) {
    const std::string name = prefix + static_cast<char>('A' + i);
    out.push_back(std::make_unique<Replica>(name, db, dir / name, flags));
  }
  return out;
}

std::string thread_list(const ReplicaCpu& r) {
  std::string out;
  for (double s : r.thread_seconds) out += fmt::format("{}{:.2f}", out.empty() ? "" : " ", s);
  return out;
}

int run(int tasks, int warmup, int submits, int polls) {
  const auto began = Clock::now();
  const std::string load_before = load_average();
  ScratchDir scratch;
  const auto [sync_p50, sync_p90] = fdatasync_ms(scratch.path());

  std::vector<Throughput> throughput;
  std::vector<Latency> latency;
  std::vector<ConfigLogs> logs;
  std::optional<IdlePolls> idle;
  std::string pg_version;
  std::string pg_log_problems;

  {
    Replicas node =
        start_replicas("sqlite-", 1, "sqlite:" + (scratch.path() / "sqlite" / "db.sqlite").string(),
                       scratch.path() / "sqlite", {"--sqlite-synchronous", "full"});
    throughput.push_back(
        claim_throughput("SQLite, 1 node, synchronous=FULL", node, warmup, tasks, nullptr));
    latency.push_back(pickup_latency("SQLite, 1 node", node, 0, 0, submits, nullptr));
    logs.push_back(collect_logs("SQLite, 1 node", node));
  }

  std::fprintf(stderr, "replicas_bench: starting a durable PostgreSQL cluster ...\n");
  tamma::testing::PostgresCluster cluster(
      tamma::testing::PostgresCluster::Options{.durable = true});
  pg_version = *cluster.execute("postgres", "SHOW server_version").at(0).at(0);
  auto url_of = [&](const std::string& db) {
    return fmt::format("postgres://tamma@127.0.0.1:{}/{}", cluster.port(), db);
  };
  for (int n = 1; n <= 3; ++n) {
    const std::string db = cluster.create_database(fmt::format("bench_{}_replicas", n));
    const std::string label = fmt::format("PostgreSQL, {} replica{}", n, n == 1 ? "" : "s");
    Replicas replicas =
        start_replicas(fmt::format("pg{}-", n), n, url_of(db), scratch.path() / db, {});
    throughput.push_back(claim_throughput(label, replicas, warmup, tasks, &cluster));
    if (n == 3) {
      latency.push_back(pickup_latency("PostgreSQL, 3 replicas, same replica (A -> A)", replicas, 0,
                                       0, submits, &cluster));
      latency.push_back(pickup_latency("PostgreSQL, 3 replicas, cross-replica (A -> B)", replicas,
                                       0, 1, submits, &cluster));
    }
    logs.push_back(collect_logs(label, replicas));
  }
  {
    const std::string db = cluster.create_database("bench_idle_polls");
    // The polls ask for 120 s; the replicas must let them wait that long.
    Replicas replicas =
        start_replicas("idle-", 3, url_of(db), scratch.path() / db, {"--poll-timeout", "120s"});
    idle = idle_polls(replicas, polls);
    logs.push_back(collect_logs("PostgreSQL, 3 replicas, idle polls", replicas));
  }
  {
    // What PostgreSQL itself complained about (deadlocks, serialization failures, ...).
    std::istringstream in(read_text(cluster.directory() / "postgres.log"));
    std::string line;
    int count = 0;
    while (std::getline(in, line)) {
      if (line.find("ERROR:") == std::string::npos && line.find("FATAL:") == std::string::npos &&
          line.find("WARNING:") == std::string::npos) {
        continue;
      }
      // The cluster's own readiness ping while the server starts, not a fault.
      if (line.find("the database system is starting up") != std::string::npos) continue;
      if (++count <= 5) pg_log_problems += "    " + line.substr(0, 240) + "\n";
    }
    if (count > 5) pg_log_problems += fmt::format("    ... {} in all\n", count);
  }

  // ---- the report ----
  const double elapsed = std::chrono::duration<double>(Clock::now() - began).count();
  fmt::print("replicas_bench: {} CPUs; load average before {}, after {}; took {:.0f} s\n",
             std::thread::hardware_concurrency(), load_before, load_average(), elapsed);
  fmt::print(
      "durability: SQLite synchronous=FULL; PostgreSQL {} durable (fsync, synchronous_commit, "
      "full_page_writes on), its cluster on the same disk as the SQLite file; fdatasync of 8 KiB "
      "there: p50 {:.2f} ms, p90 {:.2f} ms\n\n",
      pg_version, sync_p50, sync_p90);

  fmt::print("claims/s, unbatched submit -> claim (long-poll) -> complete\n");
  fmt::print(
      "  workload, the same for every configuration: {} warm-up tasks first (not measured), then "
      "{} measured; {} submitter threads, task i submitted to replica i mod n; {} one-slot "
      "pollers (waitMs={}) spread evenly over the replicas, parked before the first submit, "
      "each completing on the replica its poll came from. Clock: first submit to last "
      "complete.\n",
      warmup, tasks, kSubmitters, kPollers, kPollWaitMs);
  fmt::print(
      "  CPU seconds in that window: orch = the orchestrator processes, pg = the PostgreSQL "
      "server, bench = this client, other = the rest of the machine (processes this benchmark "
      "cannot see, such as other builds, and the kernel), steal = taken by the hypervisor; busy = "
      "share of all CPUs in use; busiest = each replica's busiest thread, share of the wall time "
      "(100% = one core saturated)\n");
  fmt::print("  {:<34} {:>8} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>5} | {:<16} | {:>8} {:>9}\n",
             "configuration", "claims/s", "wall s", "orch", "pg", "bench", "other", "steal", "busy",
             "busiest thread", "xacts/t", "WAL KiB/t");
  for (const auto& t : throughput) {
    std::string busiest;
    for (const auto& r : t.cpu.replicas) {
      busiest += fmt::format("{}{:.0f}%", busiest.empty() ? "" : " ", r.busiest_share * 100);
    }
    fmt::print(
        "  {:<34} {:>8.0f} {:>7.2f} | {:>6.2f} {:>6.2f} {:>6.2f} {:>6.2f} {:>6.2f} {:>4.0f}% | "
        "{:<16} | {:>8} {:>9}\n",
        t.label, t.rate, t.seconds, t.cpu.orchestrators, t.cpu.postgres, t.cpu.bench, t.cpu.other,
        t.cpu.steal, t.cpu.machine_busy * 100, busiest,
        t.xacts_per_task ? fmt::format("{:.2f}", *t.xacts_per_task) : "-",
        t.wal_kib_per_task ? fmt::format("{:.2f}", *t.wal_kib_per_task) : "-");
    if (!t.check.empty()) fmt::print("    PROBLEM: {}\n", t.check);
  }
  const double sqlite_rate = throughput.front().rate;
  const double three_rate = throughput.back().rate;
  fmt::print(
      "  goal: 3 replicas at least as fast as one SQLite node: {:.0f} vs {:.0f} claims/s "
      "({:.2f}x) -> {}\n",
      three_rate, sqlite_rate, three_rate / sqlite_rate,
      three_rate >= sqlite_rate ? "met" : "missed");
  // Thread ids grow in creation order (server.cc): the queue signal's thread is made in the
  // constructor, the core thread first in start(), then the I/O threads.
  fmt::print(
      "  per-thread CPU seconds of each replica, thread id order = creation order: SQLite main, "
      "core, I/O, I/O; PostgreSQL main, queue signal (LISTEN/NOTIFY), core, I/O, I/O\n");
  for (const auto& t : throughput) {
    for (std::size_t i = 0; i < t.cpu.replicas.size(); ++i) {
      fmt::print("    {:<34} replica {}: {}\n", t.label, static_cast<char>('A' + i),
                 thread_list(t.cpu.replicas[i]));
    }
  }

  fmt::print(
      "\npickup latency: from just before the submit is sent to when the parked poll's 200 "
      "arrives; one task at a time, the poll parked first (confirmed by its replica's "
      "tamma_waiting_polls); {} unmeasured submits first\n",
      kPickupWarmup);
  fmt::print(
      "  submit 201 = until the submit's own answer arrived; busy / other / steal = the "
      "machine's CPU in use, the part of it not this benchmark's, the hypervisor's, over the "
      "measured submits\n");
  fmt::print("  {:<48} {:>7} {:>7} {:>7} {:>7} | {:>10} {:>10} | {:>5} {:>7} {:>7}\n", "", "p50 ms",
             "p90 ms", "p99 ms", "max ms", "submit p50", "submit p99", "busy", "other s",
             "steal s");
  for (const auto& l : latency) {
    fmt::print(
        "  {:<48} {:>7.2f} {:>7.2f} {:>7.2f} {:>7.2f} | {:>10.2f} {:>10.2f} | {:>4.0f}% {:>7.2f} "
        "{:>7.2f}   ({} submits)\n",
        l.label, l.p50, l.p90, l.p99, l.max, l.submit_p50, l.submit_p99, l.cpu.machine_busy * 100,
        l.cpu.other, l.cpu.steal, l.submits);
  }
  const Latency& cross = latency.back();
  fmt::print("  goal: cross-replica p50 <= 3 ms ({:.2f}: {}), p99 <= 15 ms ({:.2f}: {})\n",
             cross.p50, cross.p50 <= 3 ? "met" : "missed", cross.p99,
             cross.p99 <= 15 ? "met" : "missed");

  fmt::print(
      "\nmemory: {} idle long-polls over 3 replicas (raw sockets, poll i to replica i mod 3)\n",
      idle->count);
  long before = 0, held = 0, after = 0;
  for (std::size_t i = 0; i < idle->before.size(); ++i) {
    before += idle->before[i];
    held += idle->held[i];
    after += idle->after[i];
    fmt::print(
        "  replica {}: {:>5} polls; RSS {:6.1f} MiB before, {:6.1f} MiB holding them ({:.1f} "
        "KiB per poll), {:6.1f} MiB after the clients left\n",
        static_cast<char>('A' + i), idle->per_replica[i], idle->before[i] / 1024.0,
        idle->held[i] / 1024.0,
        static_cast<double>(idle->held[i] - idle->before[i]) / idle->per_replica[i],
        idle->after[i] / 1024.0);
  }
  fmt::print(
      "  total:     {:>5} polls; RSS {:6.1f} MiB before, {:6.1f} MiB holding them ({:.1f} KiB "
      "per poll), {:6.1f} MiB after; {} parked in {:.2f} s, {} still parked after the clients "
      "left\n",
      idle->count, before / 1024.0, held / 1024.0, static_cast<double>(held - before) / idle->count,
      after / 1024.0, idle->parked, idle->seconds, idle->left);

  fmt::print("\norchestrator logs (warnings / errors):\n");
  for (const auto& c : logs) {
    for (const auto& [name, s] : c.replicas) {
      fmt::print("  {:<10} {} warning(s), {} error(s){}\n", name, s.warnings, s.errors,
                 s.exit.empty() ? "" : "; process " + s.exit);
      for (const auto& sample : s.samples) fmt::print("    {}\n", sample);
    }
  }
  fmt::print("PostgreSQL log (ERROR/FATAL/WARNING): {}\n{}", pg_log_problems.empty() ? "none" : "",
             pg_log_problems);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  struct sigaction action {};
  action.sa_handler = on_signal;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  int tasks = 2000;
  int warmup = 100;
  int submits = 500;
  int polls = 10000;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "replicas_bench: %s needs a value\n", flag.c_str());
      return 2;
    }
    int value = 0;
    try {
      value = std::stoi(argv[i + 1]);
    } catch (const std::exception&) {
      value = -1;
    }
    int* target = flag == "--tasks"     ? &tasks
                  : flag == "--warmup"  ? &warmup
                  : flag == "--submits" ? &submits
                  : flag == "--polls"   ? &polls
                                        : nullptr;
    if (target == nullptr || value < (flag == "--warmup" ? 0 : 1)) {
      std::fprintf(stderr,
                   "usage: replicas_bench [--tasks N] [--warmup N] [--submits N] [--polls N]\n");
      return 2;
    }
    *target = value;
  }
  try {
    return run(tasks, warmup, submits, polls);
  } catch (const std::exception& e) {
    // Every replica, the cluster and the scratch directory are gone by now (RAII).
    std::fprintf(stderr, "replicas_bench: %s\n", e.what());
    return 1;
  }
}
