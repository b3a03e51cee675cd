// Fault injection against real processes (issue 16): one test per fault, each with a real
// `tamma-orchestrator serve` and two `tamma-worker start --slots 2` daemons running tasks whose
// output and artifacts are known byte for byte. Each test injects its fault while tasks run,
// heals it, waits until every task ended, and checks through the admin API that every task
// ended exactly once, succeeded, has its whole log and its artifact with the right SHA-256. It
// prints one line per fault:
//
//   [faults] <name>: submitted=N succeeded=N retried=N lost=N doubled=N logs_incomplete=N
//            artifacts_bad=N recovery_ms=N
//
// retried: tasks whose final attempt is above 1. lost: not in a final state at the deadline.
// doubled: two accepted completions in the orchestrator's attempts table, or two runs in one
// log. recovery_ms: from the heal until every task had ended (-1: not by the deadline).
//
// TAMMA_FAULTS_LONG=1 selects bigger counts and longer faults (scripts/faults.sh). Logs of
// the processes of a failed test are kept under $TAMMA_FAULTS_LOG_DIR (/tmp/tamma-faults-logs).
// TAMMA_FAULTS_ORCHESTRATOR_BINARY and TAMMA_FAULTS_WORKER_BINARY run other builds.
//
// Network faults: the orchestrator runs in netns A of a LinkRelay, listening on 10.77.N.1, the
// daemons in netns B with --orchestrator http://10.77.N.1:8080, so every byte between them
// crosses the relay. The test reaches the orchestrator's admin API from inside netns A (Api
// runs its requests on a thread that joined A), which keeps the admin view out of the fault:
// the orchestrator has a single --listen, and a second path around the relay would need one.
// The other faults run everything on loopback in the test's own namespace.
//
// Needs root, /dev/net/tun, `ip netns`, loop devices, mkfs.ext4 and the cgroup v1 memory
// hierarchy; a missing one fails the test loudly (the CI machine has them all).

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>

#include "common/error.h"
#include "faults/fault_harness.h"
#include "faults/link_relay.h"
#include "support/test_support.h"

namespace tamma::faults {
namespace {

// The binaries built with the suite, unless the environment names others (another build of the
// product, e.g. a baseline to compare with).
std::string binary(const char* variable, const char* built) {
  const char* v = std::getenv(variable);
  return v != nullptr && *v != '\0' ? v : built;
}
const std::string kOrchestratorBinary =
    binary("TAMMA_FAULTS_ORCHESTRATOR_BINARY", TAMMA_ORCHESTRATOR_BINARY);
const std::string kWorkerBinary = binary("TAMMA_FAULTS_WORKER_BINARY", TAMMA_WORKER_BINARY);

// The protocol's timing for every fault: short enough that a whole run takes seconds.
constexpr auto kLeaseTtl = 6s;
constexpr auto kHeartbeat = 2s;
constexpr auto kAckTimeout = 3s;
constexpr auto kPollTimeout = 2s;
// A daemon gives up on a poll this long after its waitMs (ClientTimeouts::poll_margin).
constexpr auto kPollMargin = 15s;

bool long_mode() {
  const char* v = std::getenv("TAMMA_FAULTS_LONG");
  return v != nullptr && std::string(v) == "1";
}
template <class T>
T pick(T short_value, T long_value) {
  return long_mode() ? long_value : short_value;
}
int task_count() { return pick(8, 40); }
std::chrono::milliseconds settle_limit() { return pick<std::chrono::milliseconds>(60s, 900s); }

std::int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Every line printed, printed again together at the end of the run.
std::vector<std::string>& summary() {
  static std::vector<std::string> lines;
  return lines;
}

class SummaryPrinter : public ::testing::Environment {
 public:
  void TearDown() override {
    if (summary().empty()) return;
    std::printf("[faults] ---- summary (%s) ----\n", long_mode() ? "long" : "short");
    for (const auto& l : summary()) std::printf("%s\n", l.c_str());
    std::fflush(stdout);
  }
};
[[maybe_unused]] auto* const summary_printer =
    ::testing::AddGlobalTestEnvironment(new SummaryPrinter);

// ---- the processes ----

class Orchestrator {
 public:
  Orchestrator(fs::path state_dir, fs::path log_file, std::string host, int port,
               fs::path netns = {})
      : state_dir_(std::move(state_dir)),
        log_file_(std::move(log_file)),
        host_(std::move(host)),
        port_(port),
        netns_(std::move(netns)) {
    fs::create_directories(state_dir_);
    start();
    api_ = std::make_unique<Api>(url(), kAdminToken, netns_);
  }
  ~Orchestrator() {
    if (process_) process_->stop(10s);
  }

  void start() {
    std::error_code ec;
    const std::size_t from = fs::exists(log_file_, ec) ? fs::file_size(log_file_, ec) : 0;
    auto ms = [](std::chrono::milliseconds d) { return std::to_string(d.count()) + "ms"; };
    process_ = std::make_unique<Process>(LaunchOptions{
        {kOrchestratorBinary,
         "serve",
         "--listen",
         host_ + ":" + std::to_string(port_),
         "--db",
         "sqlite:" + db().string(),
         "--data-dir",
         (state_dir_ / "data").string(),
         "--lease-ttl",
         ms(kLeaseTtl),
         "--heartbeat-interval",
         ms(kHeartbeat),
         "--ack-timeout",
         ms(kAckTimeout),
         "--poll-timeout",
         ms(kPollTimeout),
         "--retry-base",
         "200ms",
         "--retry-max",
         "2s"},
        {"TAMMA_ADMIN_TOKEN=" + kAdminToken, "TAMMA_REGISTRATION_TOKEN=" + kRegistrationToken},
        log_file_,
        netns_});
    if (!process_->wait_for_log("listening on", 20s, from)) {
      throw std::runtime_error("the orchestrator did not start:\n" +
                               tail_lines(process_->log(), 20));
    }
  }
  // No goodbye, nothing flushed beyond what SQLite made durable.
  void kill() {
    process_->kill();
    process_.reset();
  }

  Process& process() { return *process_; }
  Api& api() { return *api_; }
  [[nodiscard]] std::string url() const { return "http://" + host_ + ":" + std::to_string(port_); }
  [[nodiscard]] fs::path db() const { return state_dir_ / "db.sqlite"; }

 private:
  fs::path state_dir_;
  fs::path log_file_;
  std::string host_;
  int port_;
  fs::path netns_;
  std::unique_ptr<Process> process_;
  std::unique_ptr<Api> api_;
};

struct WorkerSpec {
  fs::path root;                 // --workspace-root
  std::optional<rlim_t> nofile;  // RLIMIT_NOFILE set in the child before exec
  fs::path cgroup_procs;         // a cgroup the daemon joins before exec
};

class Worker {
 public:
  Worker(const std::string& orchestrator_url, WorkerSpec spec, fs::path log_file, fs::path netns)
      : spec_(std::move(spec)), health_port_(testing::free_port()) {
    fs::create_directories(spec_.root);
    LaunchOptions o{{kWorkerBinary, "start", "--orchestrator", orchestrator_url, "--workspace-root",
                     spec_.root.string(), "--slots", "2", "--grace-period", "1s", "--drain-timeout",
                     "5s", "--health-listen", "127.0.0.1:" + std::to_string(health_port_)},
                    {"TAMMA_TOKEN=" + kRegistrationToken},
                    std::move(log_file),
                    netns,
                    spec_.nofile,
                    {}};
    if (!spec_.cgroup_procs.empty()) o.cgroup_procs.push_back(spec_.cgroup_procs);
    process_ = std::make_unique<Process>(std::move(o));
    health_api_ =
        std::make_unique<Api>("http://127.0.0.1:" + std::to_string(health_port_), "", netns);
  }
  ~Worker() {
    // Drains (every task has ended by now), unregisters and exits; killed if it does not.
    if (process_) process_->stop(20s);
  }

  bool wait_registered(std::chrono::milliseconds limit) {
    if (!process_->wait_for_log("registered with", limit)) return false;
    std::smatch m;
    const std::string log = process_->log();
    static const std::regex line("worker (wrk_[0-9a-f]+): registered with");
    if (std::regex_search(log, m, line)) id_ = m[1];
    return !id_.empty();
  }
  [[nodiscard]] const std::string& id() const { return id_; }

  // GET /health of --health-listen: status and body, or nothing when no answer came.
  std::optional<std::pair<long, std::string>> health(std::chrono::milliseconds timeout = 2s) {
    try {
      auto r = health_api_->call("GET", "/health", {}, {}, timeout);
      return std::pair{r.status, r.body};
    } catch (const Error&) {
      return std::nullopt;
    }
  }

  Process& process() { return *process_; }

 private:
  WorkerSpec spec_;
  int health_port_;
  std::unique_ptr<Process> process_;
  std::unique_ptr<Api> health_api_;
  std::string id_;
};

// One orchestrator and two daemons. Declared after the resources it runs on (relay, loop
// filesystem, cgroup) and before the guards of a fault, so it is torn down after the fault is
// undone and before its resources go.
struct ClusterOptions {
  LinkRelay* relay = nullptr;   // orchestrator in netns A, daemons in netns B
  fs::path orchestrator_state;  // where the database and data directory live
  std::vector<WorkerSpec> workers;
  bool require_all_registered = true;
};

class Cluster {
 public:
  Cluster(const fs::path& dir, ClusterOptions options) {
    const fs::path logs = dir / "logs";
    fs::create_directories(logs);
    const fs::path state =
        options.orchestrator_state.empty() ? dir / "orchestrator" : options.orchestrator_state;
    if (options.relay != nullptr) {
      orchestrator = std::make_unique<Orchestrator>(
          state, logs / "orchestrator.log", options.relay->address(LinkRelay::Side::kA), 8080,
          options.relay->netns_path(LinkRelay::Side::kA));
    } else {
      orchestrator = std::make_unique<Orchestrator>(state, logs / "orchestrator.log", "127.0.0.1",
                                                    testing::free_port());
    }
    if (options.workers.empty()) {
      options.workers = {WorkerSpec{dir / "ws-0"}, WorkerSpec{dir / "ws-1"}};
    }
    for (std::size_t i = 0; i < options.workers.size(); ++i) {
      workers.push_back(std::make_unique<Worker>(
          orchestrator->url(), options.workers[i], logs / ("worker-" + std::to_string(i) + ".log"),
          options.relay != nullptr ? options.relay->netns_path(LinkRelay::Side::kB) : fs::path()));
    }
    for (std::size_t i = 0; i < workers.size(); ++i) {
      registered.push_back(workers[i]->wait_registered(30s));
      if (options.require_all_registered && !registered.back()) {
        throw std::runtime_error("worker " + std::to_string(i) + " did not register:\n" +
                                 tail_lines(workers[i]->process().log(), 20));
      }
    }
  }
  ~Cluster() {
    workers.clear();  // first, while the orchestrator still answers their goodbye
    orchestrator.reset();
  }

  Api& api() { return orchestrator->api(); }

  std::unique_ptr<Orchestrator> orchestrator;
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<bool> registered;
};

// ---- driving and reading the queue ----

// Submits every plan (idempotency key per task: a retried submit cannot make a twin).
std::vector<std::string> submit(Api& api, const std::vector<TaskPlan>& plans,
                                const std::string& key, int max_retries) {
  std::vector<std::string> ids;
  for (const auto& p : plans) {
    const json body = {{"task", p.spec()}, {"maxRetries", max_retries}};
    auto r = api.call_retrying("POST", "/api/v1/tasks", body.dump(),
                               {"Content-Type: application/json",
                                "Idempotency-Key: " + key + "-" + std::to_string(p.index)});
    EXPECT_TRUE(r.status == 201 || r.status == 200) << r.status << " " << r.body;
    ids.push_back(r.status == 201 || r.status == 200 ? r.json().value("id", "") : "");
  }
  return ids;
}

// tamma_tasks{state} from /metrics: one request for the whole queue. Empty when the
// orchestrator did not answer within `timeout`.
std::map<std::string, std::int64_t> task_states(Api& api, std::chrono::milliseconds timeout = 5s) {
  std::map<std::string, std::int64_t> states;
  try {
    auto r = api.call("GET", "/metrics", {}, {}, timeout);
    if (r.status != 200) return states;
    static const std::regex line("tamma_tasks\\{state=\"([a-z_]+)\"\\} ([0-9]+)");
    for (std::sregex_iterator it(r.body.begin(), r.body.end(), line), end; it != end; ++it) {
      states[(*it)[1]] = std::stoll((*it)[2]);
    }
  } catch (const Error&) {
  }
  return states;
}

std::int64_t finished(const std::map<std::string, std::int64_t>& states) {
  std::int64_t n = 0;
  for (const auto& [state, count] : states) n += is_final_state(state) ? count : 0;
  return n;
}

// Until `n` tasks are running (so the fault lands on work in progress).
bool wait_running(Api& api, int n, std::chrono::milliseconds limit = 30s) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (task_states(api)["running"] >= n) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// Until `total` tasks are in a final state; the milliseconds since `since`, or -1.
std::int64_t wait_finished(Api& api, std::int64_t total, Clock::time_point since,
                           std::chrono::milliseconds limit,
                           const std::function<void()>& on_tick = {}) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (finished(task_states(api)) >= total) return ms_since(since);
    if (on_tick) on_tick();
    std::this_thread::sleep_for(200ms);
  }
  return -1;
}

// Prints the fault's line (and what was wrong), and checks what every fault must hold.
void report(const std::string& name, const Tally& t) {
  const std::string line = t.line(name);
  summary().push_back(line);
  std::printf("%s\n", line.c_str());
  std::string states, outcomes;
  for (const auto& [s, n] : t.states) states += " " + s + "=" + std::to_string(n);
  for (const auto& [o, n] : t.attempt_outcomes) outcomes += " " + o + "=" + std::to_string(n);
  std::printf("[faults] %s: final states:%s; attempts by outcome:%s\n", name.c_str(),
              states.c_str(), outcomes.c_str());
  for (std::size_t i = 0; i < t.problems.size() && i < 20; ++i) {
    std::printf("[faults] %s:   %s\n", name.c_str(), t.problems[i].c_str());
  }
  std::fflush(stdout);
  EXPECT_EQ(t.lost, 0) << name << ": tasks not ended by the deadline";
  EXPECT_EQ(t.doubled, 0) << name << ": tasks completed twice";
  EXPECT_EQ(t.logs_incomplete, 0) << name << ": logs not equal to the output";
  EXPECT_EQ(t.artifacts_bad, 0) << name << ": artifacts missing or wrong";
  EXPECT_EQ(t.succeeded, t.submitted) << name << ": tasks that did not succeed";
}

// ---- the test fixture ----

class Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the fault suite needs root (netns, loop devices, cgroups)";
    // What a run killed before its destructors left (its process is gone): thawed, unmounted,
    // detached, deleted. Other runs' resources are left alone.
    sweep_stale_resources();
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    // The name carries the pid: sweep_stale_resources() removes what a killed run left.
    std::string pattern = (fs::temp_directory_path() /
                           ("tamma-faults-" + std::to_string(::getpid()) + "-" + name + "-XXXXXX"))
                              .string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }

  void TearDown() override {
    if (HasFailure()) keep_logs();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // The processes' logs of a failed test, kept and their ends printed.
  void keep_logs() {
    const char* base = std::getenv("TAMMA_FAULTS_LOG_DIR");
    const fs::path keep = fs::path(base != nullptr && *base ? base : "/tmp/tamma-faults-logs") /
                          ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::error_code ec;
    fs::remove_all(keep, ec);
    fs::create_directories(keep, ec);
    for (fs::directory_iterator it(dir_ / "logs", ec), end; !ec && it != end; it.increment(ec)) {
      fs::copy_file(it->path(), keep / it->path().filename(), fs::copy_options::overwrite_existing,
                    ec);
      std::printf("[faults] --- last lines of %s ---\n%s\n", it->path().filename().c_str(),
                  tail_lines(testing::read_file(it->path()), 25).c_str());
    }
    std::printf("[faults] logs kept in %s\n", keep.c_str());
  }

  [[nodiscard]] const fs::path& dir() const { return dir_; }

  fs::path dir_;
};

// ---- a. delay and loss on the link ----

TEST_F(Faults, NetDelayLoss) {
  LinkRelay relay;
  Cluster cluster(dir(), {&relay});
  // The tasks that print 4 MiB and exit at once go last: they start while the link is bad,
  // once the first ones (which sleep) have taken every slot.
  auto plans = make_plans(task_count(), 2);
  std::stable_partition(plans.begin(), plans.end(),
                        [](const TaskPlan& p) { return p.sleep_s > 0; });
  const auto ids = submit(cluster.api(), plans, "delay", 3);
  // Applied once tasks run, so that they ship their logs and deliver their results through
  // the bad link (in the long version for longer than a daemon's 30 s flush window).
  ASSERT_TRUE(wait_running(cluster.api(), 3)) << "tasks did not start";
  Defer heal_link([&] {
    relay.set_delay(0ms);
    relay.set_loss(0.0);
  });
  const auto before = relay.stats();
  relay.set_delay(pick<std::chrono::milliseconds>(200ms, 2000ms));
  relay.set_loss(pick(0.05, 0.30));
  std::this_thread::sleep_for(pick<std::chrono::milliseconds>(20s, 120s));
  auto during = relay.stats();
  during.forwarded -= before.forwarded;
  relay.set_delay(0ms);
  relay.set_loss(0.0);
  const auto healed = Clock::now();
  Tally t;
  t.recovery_ms = wait_finished(cluster.api(), plans.size(), healed, settle_limit());
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  std::printf(
      "[faults] net_delay_loss: during the fault the relay forwarded %llu frames and "
      "lost %llu\n",
      static_cast<unsigned long long>(during.forwarded),
      static_cast<unsigned long long>(during.dropped_loss));
  report("net_delay_loss", t);
  EXPECT_GT(during.dropped_loss, 0u) << "the relay lost nothing: the fault did not happen";
}

// ---- b. a partition longer than the lease TTL ----

TEST_F(Faults, Partition) {
  LinkRelay relay;
  Cluster cluster(dir(), {&relay});
  const auto plans = make_plans(task_count(), 3);
  const auto ids = submit(cluster.api(), plans, "partition", 3);
  ASSERT_TRUE(wait_running(cluster.api(), 3)) << "tasks did not start";
  Defer heal_link([&] { relay.set_partition(false); });
  relay.set_partition(true);
  std::this_thread::sleep_for(pick<std::chrono::milliseconds>(kLeaseTtl + 3s, 3 * kLeaseTtl));
  relay.set_partition(false);
  const auto healed = Clock::now();
  // Each daemon's first heartbeat after the heal, from its /health (lastHeartbeatAgoMs): a
  // heartbeat stuck on the silent link gives up within one interval, so the next goes out soon.
  std::vector<std::int64_t> resumed(cluster.workers.size(), -1);
  const auto resume_deadline = Clock::now() + 30s;
  for (bool all = false; !all && Clock::now() < resume_deadline;) {
    all = true;
    for (std::size_t i = 0; i < cluster.workers.size(); ++i) {
      if (resumed[i] >= 0) continue;
      all = false;
      const auto h = cluster.workers[i]->health(1s);
      if (!h) continue;
      const auto since_heal = ms_since(healed);
      const json body = json::parse(h->second, nullptr, false);
      if (body.is_object() && body.contains("lastHeartbeatAgoMs") &&
          body["lastHeartbeatAgoMs"].get<std::int64_t>() < since_heal) {
        resumed[i] = since_heal - body["lastHeartbeatAgoMs"].get<std::int64_t>();
      }
    }
    if (!all) std::this_thread::sleep_for(100ms);
  }
  std::string resumed_text;
  for (auto ms : resumed) {
    resumed_text += ' ';  // appended: `" " + std::to_string(ms)` trips GCC 12's -Wrestrict
    resumed_text += std::to_string(ms);
  }
  std::printf(
      "[faults] partition: heartbeats resumed after (ms, per daemon):%s; interval %lld ms\n",
      resumed_text.c_str(), static_cast<long long>(std::chrono::milliseconds(kHeartbeat).count()));
  Tally t;
  t.recovery_ms = wait_finished(cluster.api(), plans.size(), healed, settle_limit());
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  report("partition", t);
  for (std::size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_GE(resumed[i], 0) << "daemon " << i << ": no heartbeat within 30 s of the heal";
  }
  EXPECT_GT(relay.stats().dropped_partition, 0u) << "the partition dropped nothing";
}

// ---- c. the orchestrator stopped (SIGSTOP) for twice the lease TTL ----

TEST_F(Faults, OrchestratorSigstop) {
  Cluster cluster(dir(), {});
  const auto plans = make_plans(task_count(), 3);
  const auto ids = submit(cluster.api(), plans, "sigstop", 3);
  ASSERT_TRUE(wait_running(cluster.api(), 3)) << "tasks did not start";
  Process& orchestrator = cluster.orchestrator->process();
  Defer resume([&] { orchestrator.signal(SIGCONT); });
  orchestrator.signal(SIGSTOP);
  std::this_thread::sleep_for(pick<std::chrono::milliseconds>(2 * kLeaseTtl, 5 * kLeaseTtl));
  orchestrator.signal(SIGCONT);
  const auto healed = Clock::now();
  Tally t;
  t.recovery_ms = wait_finished(cluster.api(), plans.size(), healed, settle_limit());
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  report("orchestrator_sigstop", t);
  // The workers kept heartbeating into the stopped process: no lease was theirs to lose.
  EXPECT_EQ(t.retried, 0) << "tasks re-run because the orchestrator itself stalled";
}

// Probes of the orchestrator's /health and /ready while its storage is broken.
struct Probes {
  int health_ok = 0;       // 200 within 2 s
  int health_bad = 0;      // anything else, or no answer within 2 s
  int ready_503 = 0;       // 503 within 3 s
  int ready_other = 0;     // 200, or no answer within 3 s
  std::string last_ready;  // for the message

  void probe(Api& health_api, Api& ready_api) {
    const auto t0 = Clock::now();
    try {
      auto h = health_api.call("GET", "/health", {}, {}, 2s);
      (h.status == 200 && ms_since(t0) <= 2000 ? health_ok : health_bad)++;
    } catch (const Error&) {
      ++health_bad;
    }
    try {
      auto r = ready_api.call("GET", "/ready", {}, {}, 3s);
      (r.status == 503 ? ready_503 : ready_other)++;
      last_ready = std::to_string(r.status) + " " + r.body.substr(0, 200);
    } catch (const Error& e) {
      ++ready_other;
      last_ready = std::string("no answer within 3 s: ") + e.what();
    }
  }
  [[nodiscard]] std::string text() const {
    return "/health 200 in time " + std::to_string(health_ok) + "x, not " +
           std::to_string(health_bad) + "x; /ready 503 " + std::to_string(ready_503) + "x, other " +
           std::to_string(ready_other) + "x (last: " + last_ready + ")";
  }
};

// ---- d. the orchestrator's disk full ----

TEST_F(Faults, OrchestratorDiskFull) {
  LoopFs disk(dir(), 256);
  Cluster cluster(dir(), {nullptr, disk.path() / "orchestrator"});
  Api health_api(cluster.orchestrator->url(), "");
  Api ready_api(cluster.orchestrator->url(), kAdminToken);
  const auto plans = make_plans(task_count(), 3);
  const auto ids = submit(cluster.api(), plans, "diskfull", 3);
  ASSERT_TRUE(wait_running(cluster.api(), 3)) << "tasks did not start";
  Defer free_disk([&] { disk.free_space(); });
  disk.fill();
  std::printf("[faults] orchestrator_disk_full: %llu bytes left on the database's filesystem\n",
              static_cast<unsigned long long>(disk.available_bytes()));
  Probes probes;
  const auto until = Clock::now() + pick<std::chrono::milliseconds>(10s, 60s);
  std::this_thread::sleep_for(2s);  // writes have failed by now
  while (Clock::now() < until) {
    probes.probe(health_api, ready_api);
    std::this_thread::sleep_for(1s);
  }
  disk.free_space();
  const auto healed = Clock::now();
  Tally t;
  t.recovery_ms = wait_finished(cluster.api(), plans.size(), healed, settle_limit());
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  std::printf("[faults] orchestrator_disk_full: while full: %s\n", probes.text().c_str());
  report("orchestrator_disk_full", t);
  EXPECT_EQ(probes.health_bad, 0) << probes.text();
  EXPECT_GT(probes.ready_503, 0) << "/ready never said 503 while writes failed: " << probes.text();
  EXPECT_EQ(t.retried, 0) << "tasks re-run because the orchestrator's disk was full";
}

// ---- e. the orchestrator's filesystem frozen ----

TEST_F(Faults, OrchestratorFsFrozen) {
  LoopFs disk(dir(), 256);
  Cluster cluster(dir(), {nullptr, disk.path() / "orchestrator"});
  Api health_api(cluster.orchestrator->url(), "");
  Api ready_api(cluster.orchestrator->url(), kAdminToken);
  const auto plans = make_plans(task_count(), 3);
  const auto ids = submit(cluster.api(), plans, "frozen", 3);
  ASSERT_TRUE(wait_running(cluster.api(), 3)) << "tasks did not start";
  const auto frozen_for = pick<std::chrono::milliseconds>(kLeaseTtl + 4s, 60s);
  // The guardian thaws after frozen_for + 60 s whatever happens here, and at once if this
  // process dies; the destructor of `disk` thaws too.
  Defer thaw([&] { disk.thaw(); });  // before the cluster's teardown needs the disk
  disk.freeze(frozen_for + 60s);
  Probes probes;
  const auto until = Clock::now() + frozen_for;
  std::this_thread::sleep_for(1s);
  while (Clock::now() < until) {
    probes.probe(health_api, ready_api);
    std::this_thread::sleep_for(500ms);
  }
  disk.thaw();
  const auto healed = Clock::now();
  Tally t;
  t.recovery_ms = wait_finished(cluster.api(), plans.size(), healed, settle_limit());
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  std::printf("[faults] orchestrator_fs_frozen: while frozen: %s\n", probes.text().c_str());
  report("orchestrator_fs_frozen", t);
  EXPECT_EQ(probes.health_bad, 0) << probes.text();
  EXPECT_GT(probes.ready_503, 0) << probes.text();
  EXPECT_EQ(t.retried, 0) << "tasks re-run because the orchestrator's disk stalled";
}

// ---- e2. the orchestrator's filesystem cut off as by a power failure, then restarted ----

// Until `n` tasks have succeeded; false after `limit`.
bool wait_succeeded(Api& api, int n, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (task_states(api)["succeeded"] >= n) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

TEST_F(Faults, OrchestratorFsCrash) {
  LoopFs disk(dir(), 256);
  Cluster cluster(dir(), {nullptr, disk.path() / "orchestrator"});
  const auto plans = make_plans(task_count(), 3);
  const auto ids = submit(cluster.api(), plans, "fscrash", 3);
  // Cut right after results (and their artifacts) were accepted: what the orchestrator wrote
  // in the last seconds is still in the page cache unless it made it durable, and the kernel
  // writes dirty pages back only after about 30 s.
  ASSERT_TRUE(wait_succeeded(cluster.api(), 2, settle_limit())) << "no task succeeded";
  disk.crash();
  const auto cut = Clock::now();
  // Writes fail with EIO meanwhile; workers keep their results and retry.
  std::this_thread::sleep_for(pick<std::chrono::milliseconds>(3s, 20s));
  cluster.orchestrator->kill();
  disk.remount();
  cluster.orchestrator->start();
  std::printf(
      "[faults] orchestrator_fs_crash: filesystem cut, remounted and the orchestrator "
      "restarted after %lld ms\n",
      static_cast<long long>(ms_since(cut)));
  const auto healed = Clock::now();
  Tally t;
  t.recovery_ms = wait_finished(cluster.api(), plans.size(), healed, settle_limit());
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  int rows = 0;
  const auto stored = stored_artifact_problems(cluster.orchestrator->db(), rows);
  std::printf("[faults] orchestrator_fs_crash: %d artifact rows, %zu without their bytes\n", rows,
              stored.size());
  for (const auto& p : stored) t.problems.push_back(p);
  report("orchestrator_fs_crash", t);
  EXPECT_TRUE(stored.empty()) << "artifact rows whose bytes did not survive the crash";
  EXPECT_GE(rows, static_cast<int>(plans.size())) << "fewer artifact rows than tasks";
}

// ---- f. the orchestrator down (SIGKILL, restarted on the same database) ----

TEST_F(Faults, OrchestratorDown) {
  Cluster cluster(dir(), {});
  const auto plans = make_plans(task_count(), 3);
  const auto ids = submit(cluster.api(), plans, "down", 3);
  ASSERT_TRUE(wait_running(cluster.api(), 3)) << "tasks did not start";
  cluster.orchestrator->kill();
  // Tasks print their second half and end meanwhile: that output waits in the workers.
  std::this_thread::sleep_for(pick<std::chrono::milliseconds>(2 * kLeaseTtl, 90s));
  cluster.orchestrator->start();
  const auto healed = Clock::now();
  Tally t;
  t.recovery_ms = wait_finished(cluster.api(), plans.size(), healed, settle_limit());
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  report("orchestrator_down", t);
}

// ---- g, h: one daemon's host broken; tasks go elsewhere, it says so, and it recovers ----

struct BrokenWorker {
  std::optional<std::string> unhealthy_body;  // the first 503 of its /health
  bool healthy_again = false;
  bool took_tasks_after = false;
  std::optional<int> died;  // the daemon's exit status (-signal), when it is gone
};

// The main batch with worker 1 broken (its /health watched meanwhile), then `heal`, then a
// second batch of short tasks that worker 1 must take part in. recovery_ms: from the heal
// until worker 1 is healthy again and the second batch has ended.
BrokenWorker run_with_broken_worker(Cluster& cluster, const std::string& name,
                                    const std::function<void()>& heal, Tally& t) {
  BrokenWorker out;
  Worker& broken = *cluster.workers[1];
  auto watch = [&] {
    if (out.unhealthy_body) return;
    if (auto h = broken.health(1s); h && h->first == 503) out.unhealthy_body = h->second;
  };
  const auto plans = make_plans(task_count(), 2);
  // Retries enough for the healthy daemon to take over a task the broken one failed: a
  // worker is expected to stop polling after a few failures in a row, not to eat the queue.
  const auto ids = submit(cluster.api(), plans, name, 5);
  const auto started = Clock::now();
  wait_finished(cluster.api(), plans.size(), started, settle_limit(), watch);
  // A few more looks: the worker may say so only after the last failure.
  for (int i = 0; i < 10 && !out.unhealthy_body; ++i) {
    watch();
    std::this_thread::sleep_for(300ms);
  }
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  if (!broken.process().running()) out.died = broken.process().exit_status();

  heal();
  const auto healed = Clock::now();
  const auto healthy_deadline = Clock::now() + 30s;
  while (Clock::now() < healthy_deadline) {
    if (auto h = broken.health(1s); h && h->first == 200) {
      out.healthy_again = true;
      break;
    }
    std::this_thread::sleep_for(200ms);
  }
  // Short tasks, more than one daemon's slots: a recovered daemon gets some.
  std::vector<TaskPlan> after;
  for (int i = 0; i < 6; ++i) {
    TaskPlan p;
    p.index = 100 + i;
    p.first_lines = 2000;
    p.second_lines = 2000;
    p.sleep_s = 3;
    p.artifact_lines = 500;
    after.push_back(p);
  }
  const auto after_ids = submit(cluster.api(), after, name + "-after", 5);
  const auto done =
      wait_finished(cluster.api(), plans.size() + after.size(), healed, settle_limit());
  t.recovery_ms = out.healthy_again ? done : -1;
  verify_tasks(cluster.api(), after, after_ids, cluster.orchestrator->db(), t);
  for (const auto& id : after_ids) {
    if (id.empty()) continue;
    auto r = cluster.api().call_retrying("GET", "/api/v1/tasks/" + id);
    if (r.status == 200 && r.json().value("workerId", "") == broken.id()) {
      out.took_tasks_after = true;
    }
  }
  return out;
}

void expect_broken_worker(const std::string& name, const BrokenWorker& b,
                          const std::vector<std::string>& reason_words) {
  EXPECT_FALSE(b.died.has_value()) << name << ": the broken daemon died (status "
                                   << b.died.value_or(0) << "): a host failure must not kill it";
  EXPECT_TRUE(b.unhealthy_body.has_value())
      << name << ": the broken daemon's /health never answered 503";
  if (b.unhealthy_body) {
    bool named = false;
    for (const auto& w : reason_words)
      named |= lower(*b.unhealthy_body).find(w) != std::string::npos;
    EXPECT_TRUE(named) << name << ": its 503 does not name the reason: " << *b.unhealthy_body;
    std::printf("[faults] %s: unhealthy daemon said: %s\n", name.c_str(),
                b.unhealthy_body->c_str());
  }
  EXPECT_TRUE(b.healthy_again) << name << ": /health not 200 again within 30 s of the heal";
  EXPECT_TRUE(b.took_tasks_after) << name << ": the recovered daemon took none of 6 new tasks";
}

TEST_F(Faults, WorkerWorkspaceFull) {
  LoopFs disk(dir(), 64);
  Cluster cluster(
      dir(), {nullptr, {}, {WorkerSpec{dir() / "ws-0"}, WorkerSpec{disk.path() / "workspaces"}}});
  disk.fill();
  Tally t;
  const auto b = run_with_broken_worker(
      cluster, "workspace_full", [&] { disk.free_space(); }, t);
  report("worker_workspace_full", t);
  expect_broken_worker("worker_workspace_full", b, {"space", "enospc", "disk", "full"});
}

TEST_F(Faults, WorkerFdLimit) {
  // Started under 64 open files (set in the child before exec): it must at least come up.
  ClusterOptions options{nullptr, {}, {WorkerSpec{dir() / "ws-0"}, WorkerSpec{dir() / "ws-1"}}};
  options.workers[1].nofile = 64;
  options.require_all_registered = false;
  Cluster cluster(dir(), options);
  ASSERT_TRUE(cluster.registered[1]) << "the daemon under 64 open files did not even register:\n"
                                     << tail_lines(cluster.workers[1]->process().log(), 20);
  // A daemon with two running tasks holds about 46 descriptors, so 64 alone breaks nothing.
  // Tightened to what it holds idle plus a few: enough to poll and heartbeat, not to run a
  // task (a task needs about 14: pipes, cgroup and namespace files, its reporter's socket).
  const pid_t pid = cluster.workers[1]->process().pid();
  std::error_code ec;
  const auto idle = static_cast<rlim_t>(
      std::distance(fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec), {}));
  // Only the soft limit: raising a hard limit back needs CAP_SYS_RESOURCE, which root in a
  // container may lack, and the heal must work.
  rlimit before{};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, nullptr, &before), 0) << std::strerror(errno);
  const rlimit tight{idle + 6, before.rlim_max};
  ASSERT_EQ(::prlimit(pid, RLIMIT_NOFILE, &tight, nullptr), 0) << std::strerror(errno);
  std::printf("[faults] worker_fd_limit: daemon holds %llu descriptors idle; limit now %llu\n",
              static_cast<unsigned long long>(idle),
              static_cast<unsigned long long>(tight.rlim_cur));
  Tally t;
  const auto b = run_with_broken_worker(
      cluster, "fd_limit",
      [pid, before] {
        const rlimit enough{std::min<rlim_t>(4096, before.rlim_max), before.rlim_max};
        EXPECT_EQ(::prlimit(pid, RLIMIT_NOFILE, &enough, nullptr), 0) << std::strerror(errno);
      },
      t);
  report("worker_fd_limit", t);
  // Running tasks again needs more than /health: the sandbox's cgroup manager, which failed to
  // open its files under the limit, must be made again (it was once cached for good).
  expect_broken_worker("worker_fd_limit", b, {"file", "descriptor", "emfile", "too many", "fd"});
}

// ---- i. a daemon's own cgroup short of memory ----

TEST_F(Faults, WorkerMemoryPressure) {
  // Two tasks holding 150 MiB each do not fit the daemon's 200 MiB, though each task's own
  // limit (2 GiB) is far from reached: the kernel kills in the parent's name.
  MemoryCgroup cgroup(200ull << 20);
  ClusterOptions options{nullptr, {}, {WorkerSpec{dir() / "ws-0"}, WorkerSpec{dir() / "ws-1"}}};
  options.workers[1].cgroup_procs = cgroup.procs_file();
  Cluster cluster(dir(), options);
  auto plans = make_plans(task_count(), 2);
  for (auto& p : plans) {
    p.alloc_mb = 150;
    p.sleep_s = std::max(p.sleep_s, 3);
  }
  const auto ids = submit(cluster.api(), plans, "memory", 5);
  const auto started = Clock::now();
  Tally t;
  wait_finished(cluster.api(), plans.size(), started, settle_limit());
  t.recovery_ms = 0;  // nothing to heal: the limit stays; every task must end anyway
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  const std::string failcnt = cgroup.read("memory.failcnt");
  std::string oom = cgroup.read("memory.oom_control");
  std::replace(oom.begin(), oom.end(), '\n', ' ');
  std::printf("[faults] worker_memory_pressure: daemon cgroup failcnt %s, oom_control %s\n",
              failcnt.substr(0, failcnt.find('\n')).c_str(), oom.c_str());
  report("worker_memory_pressure", t);
  EXPECT_GT(std::atoll(failcnt.c_str()), 0) << "the daemon's cgroup never hit its limit";
}

// ---- j. a daemon stopped (SIGSTOP) past its lease TTL ----

TEST_F(Faults, WorkerSigstop) {
  Cluster cluster(dir(), {});
  const auto plans = make_plans(task_count(), 3);
  const auto ids = submit(cluster.api(), plans, "worker-sigstop", 3);
  Worker& victim = *cluster.workers[1];
  // Until the victim holds a lease.
  bool busy = false;
  for (const auto deadline = Clock::now() + 30s; !busy && Clock::now() < deadline;) {
    auto r = cluster.api().call_retrying("GET", "/api/v1/workers");
    for (const auto& w : r.json().value("workers", json::array())) {
      busy |= w.value("id", "") == victim.id() && !w.value("leases", json::array()).empty();
    }
    if (!busy) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(busy) << "the daemon to stop never got a task";
  Defer resume([&] { victim.process().signal(SIGCONT); });
  victim.process().signal(SIGSTOP);
  std::this_thread::sleep_for(pick<std::chrono::milliseconds>(kLeaseTtl + 4s, 3 * kLeaseTtl));
  victim.process().signal(SIGCONT);
  const auto healed = Clock::now();
  Tally t;
  t.recovery_ms = wait_finished(cluster.api(), plans.size(), healed, settle_limit());
  verify_tasks(cluster.api(), plans, ids, cluster.orchestrator->db(), t);
  report("worker_sigstop", t);
  EXPECT_GT(t.retried, 0) << "the stopped daemon's tasks should have run again elsewhere";
}

// ---- k. a poll whose client left before the orchestrator answered it ----

TEST_F(Faults, PollAfterClientLeft) {
  Cluster cluster(dir(), {});
  // Each slot parks a poll and gives up on it kPollTimeout + kPollMargin after sending it,
  // then polls again after a short backoff: that new poll waits, unread, in the stopped
  // orchestrator's listen queue, and its client gives up on it too. A stop of twice that (and
  // a little) leaves polls of clients long gone both parked and queued unread when the
  // orchestrator resumes. The task is submitted near the end of the stop, behind them.
  const auto round = kPollTimeout + kPollMargin;
  const auto stop_for = 2 * round + 4s;
  std::this_thread::sleep_for(3s);  // every slot has a poll parked
  Process& orchestrator = cluster.orchestrator->process();
  Defer resume([&] { orchestrator.signal(SIGCONT); });
  orchestrator.signal(SIGSTOP);
  const auto stopped = Clock::now();
  TaskPlan plan;
  plan.first_lines = 1000;
  plan.artifact_lines = 100;
  std::this_thread::sleep_until(stopped + stop_for - 2s);
  // The submission waits in the listen queue until the orchestrator runs again.
  std::string id;
  std::thread submitter([&] {
    Api api(cluster.orchestrator->url(), kAdminToken);
    const json body = {{"task", plan.spec()}, {"maxRetries", 0}};
    try {
      auto r = api.call("POST", "/api/v1/tasks", body.dump(),
                        {"Content-Type: application/json", "Idempotency-Key: late-poll"}, 120s);
      if (r.status == 201 || r.status == 200) id = r.json().value("id", "");
    } catch (const Error&) {
    }
  });
  std::this_thread::sleep_until(stopped + stop_for);
  orchestrator.signal(SIGCONT);
  const auto healed = Clock::now();
  submitter.join();
  ASSERT_FALSE(id.empty()) << "the submission made during the stop was not accepted";
  std::int64_t started_ms = -1;
  Tally t;
  json view;
  for (const auto deadline = Clock::now() + settle_limit(); Clock::now() < deadline;) {
    view = cluster.api().call_retrying("GET", "/api/v1/tasks/" + id).json();
    if (started_ms < 0 && view.contains("startedAt") && !view["startedAt"].is_null()) {
      started_ms = ms_since(healed);
    }
    if (is_final_state(view.value("state", ""))) {
      t.recovery_ms = ms_since(healed);
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  verify_tasks(cluster.api(), {plan}, {id}, cluster.orchestrator->db(), t);
  std::printf(
      "[faults] poll_after_client_left: started %lld ms after the orchestrator resumed, "
      "attempt %d, state %s\n",
      static_cast<long long>(started_ms), view.value("attempt", 0),
      view.value("state", "").c_str());
  report("poll_after_client_left", t);
  EXPECT_GE(started_ms, 0) << "the task never started";
  EXPECT_LE(started_ms, std::chrono::milliseconds(kAckTimeout + 5s).count())
      << "an assignment lost to a gone poll waited longer than the ack timeout";
  EXPECT_EQ(view.value("attempt", 0), 1) << view.dump();
  // Stricter, the first half of the rule: a poll past its client's deadline is never given a
  // task, so nothing waits for the ack timeout at all.
  EXPECT_LT(started_ms, std::chrono::milliseconds(kAckTimeout).count())
      << "the task was handed to a poll whose client had left, and waited out the ack timeout";
}

}  // namespace
}  // namespace tamma::faults
