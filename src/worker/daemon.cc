#include "worker/daemon.h"

#include <sched.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "protocol/task_spec.h"
#include "worker/engine.h"
#include "worker/handler.h"
#include "worker/health_server.h"
#include "worker/host_check.h"
#include "worker/log_shipper.h"
#include "worker/orchestrator_client.h"
#include "worker/workspace_reaper.h"

namespace tamma::worker {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::int64_t ms_since(Clock::time_point then) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - then).count();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

// The registration answer, and which registration it was: a token is good only for the
// registration that issued it.
struct Session {
  WorkerCredentials credentials;
  std::chrono::milliseconds heartbeat_interval{10000};
  std::chrono::milliseconds lease_ttl{30000};
  std::chrono::milliseconds poll_timeout{25000};
  std::uint64_t generation = 0;
};

// One attempt of a task this worker holds a lease on, from assignment until its result is
// delivered (the heartbeat renews the lease all that time).
struct ActiveTask {
  std::string task_id;
  int attempt = 0;
  std::string lease_id;
  std::shared_ptr<const Session> session;
  Cancellation cancellation;
  std::atomic<bool> lease_lost{false};
  std::atomic<bool> cancel_requested{false};  // by the orchestrator
  std::atomic<bool> shutdown_cancel{false};   // by this worker's shutdown
  std::atomic<bool> running{true};            // false once the engine returned
  // Fired when the lease is lost or the daemon aborts: cuts short log shipping and delivery.
  StopSignal stop;

  [[nodiscard]] wire::Fence fence() const { return {attempt, lease_id}; }
};

// What is sent when the task ends: complete with the result, or fail with an error.
struct Report {
  bool fail = false;
  wire::TaskFailure error;
  std::optional<protocol::TaskResult> result;
  std::string status;  // for the log line
  wire::LogSummary log;
  // The task's last progress when it was never sent (a short task's): goes with the report.
  std::optional<wire::Progress> progress;
  // The orchestrator holds less of the log than `log` says (409 log_incomplete): sends the
  // rest from `held` and returns the new summary. Keeps the task's output alive until then.
  std::function<wire::LogSummary(std::uint64_t held)> resend_log;
};

// Host failures in a row after which a worker stands down: it stops taking tasks until its
// host passes a check again (worker/host_check.h), checked every kFitnessCheckEvery. It stands
// down for at least kFirstFitnessCheck, doubled (up to kMaxFitnessCheck) each time it has to
// stand down again without a task going well in between: a fault the check cannot see (memory
// pressure from above) then costs fewer and fewer tasks.
constexpr int kHostFailuresToStandDown = 3;
constexpr std::chrono::milliseconds kFitnessCheckEvery{5000};
constexpr std::chrono::milliseconds kFirstFitnessCheck{5000};
constexpr std::chrono::milliseconds kMaxFitnessCheck{300000};

// Heartbeats never wait longer than one interval for an answer (nor 10 s to connect), so
// after a silent partition they resume within about one interval.
ClientTimeouts heartbeat_timeouts(std::chrono::milliseconds interval) {
  ClientTimeouts t;
  t.connect =
      std::clamp(interval, std::chrono::milliseconds(1000), std::chrono::milliseconds(10000));
  t.request =
      std::clamp(interval, std::chrono::milliseconds(2000), std::chrono::milliseconds(30000));
  return t;
}

// A reason fits the heartbeat's limit on it (wire::kMaxUnhealthyReason), or every heartbeat
// would be refused.
std::string bounded_reason(std::string reason) {
  constexpr std::size_t kKeep = wire::kMaxUnhealthyReason - 16;
  if (reason.size() <= kKeep) return reason;
  std::size_t cut = kKeep;
  while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
  reason.resize(cut);
  reason += " [...]";
  return reason;
}

enum class Phase { kStarting, kRunning, kDraining, kCancelling, kAborting };

const char* phase_name(Phase phase) {
  switch (phase) {
    case Phase::kStarting:
      return "registering";
    case Phase::kRunning:
      return "running";
    case Phase::kDraining:
      return "draining";
    case Phase::kCancelling:
    case Phase::kAborting:
      return "stopping";
  }
  return "unknown";
}

std::uint64_t memory_bytes() {
  struct sysinfo info {};
  if (::sysinfo(&info) != 0) throw_errno("sysinfo");
  return static_cast<std::uint64_t>(info.totalram) * info.mem_unit;
}

double cpu_count() {
  // The CPUs this process may run on (taskset, cpusets), not every CPU of the machine.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return std::max(1u, std::thread::hardware_concurrency());
}

std::uint64_t free_disk_bytes(std::filesystem::path dir) {
  // The workspace root may not exist yet: ask the nearest directory that does.
  std::error_code ec;
  while (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    if (dir == dir.parent_path()) break;
    dir = dir.parent_path();
  }
  struct statvfs vfs {};
  if (::statvfs(dir.empty() ? "/" : dir.c_str(), &vfs) != 0) {
    throw_errno("statvfs of " + dir.string());
  }
  return static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

std::string cut_middle(const std::string& text, std::size_t keep, std::uint64_t& dropped) {
  if (text.size() <= keep) return text;
  const std::size_t head = keep / 2;
  const std::size_t tail = keep - head;
  const std::size_t cut = text.size() - head - tail;
  dropped += cut;
  return text.substr(0, head) +
         fmt::format(
             "\n[... {} bytes cut from the result; the whole output is in the task's "
             "log ...]\n",
             cut) +
         text.substr(text.size() - tail);
}

// Where the engine copies a task's matched artifacts before its workspace goes away; they
// wait here until uploaded. A workspace of its own under the workspace root, so it holds the
// same owner lock: removed with everything in it on destruction, and swept by the next start
// (Workspace::remove_stale) when the worker was killed with uploads pending.
using StagingDir = sandbox::Workspace;

std::unique_ptr<StagingDir> make_staging_dir(const std::filesystem::path& root) {
  return sandbox::Workspace::create(root, "artifacts-" + generate_task_id(), std::nullopt);
}

std::string read_whole_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw Error(ErrorKind::kInfrastructure, "artifact_io", "cannot read " + file.string());
  }
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

protocol::wire::Capabilities detect_capabilities(const Config& config) {
  wire::Capabilities caps;
  caps.task_types = HandlerRegistry::with_builtins(config).types();
  caps.labels = config.labels;
  caps.slots = static_cast<int>(config.slots);
  caps.resources.memory_bytes = memory_bytes();
  caps.resources.cpus = cpu_count();
  caps.resources.disk_bytes = free_disk_bytes(config.workspace_root);
  caps.version = std::string(kWorkerVersion);
  struct utsname name {};
  if (::uname(&name) != 0) throw_errno("uname");
  caps.platform.os = name.sysname;
  caps.platform.arch = name.machine;
  caps.platform.kernel = name.release;
  // Lower case as in GOOS and Node's process.platform, which task labels tend to follow.
  std::transform(caps.platform.os.begin(), caps.platform.os.end(), caps.platform.os.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return caps;
}

json fit_result(const protocol::TaskResult& result, std::size_t max_bytes) {
  json document = protocol::to_json(result);
  if (document.dump().size() <= max_bytes || result.steps.empty()) return document;
  protocol::TaskResult fitted = result;
  std::size_t keep = max_bytes / (2 * fitted.steps.size());
  for (;;) {
    for (auto& step : fitted.steps) {
      step.stdout_capture.text =
          cut_middle(step.stdout_capture.text, keep, step.stdout_capture.dropped_bytes);
      step.stderr_capture.text =
          cut_middle(step.stderr_capture.text, keep, step.stderr_capture.dropped_bytes);
    }
    document = protocol::to_json(fitted);
    // Escaping can make the JSON much larger than the text (control bytes, U+FFFD): halve
    // until it fits, or until there is no output left to cut.
    if (document.dump().size() <= max_bytes || keep == 0) return document;
    keep /= 2;
  }
}

struct Daemon::Impl {
  explicit Impl(DaemonOptions o)
      : options(std::move(o)),
        engine(options.config, HandlerRegistry::with_builtins(options.config)) {}

  DaemonOptions options;
  Engine engine;
  wire::Capabilities capabilities;
  // Removes finished tasks' workspaces after their reports; made before the slots start and
  // destroyed (everything queued removed) after they have all stopped.
  std::unique_ptr<WorkspaceReaper> reaper;

  // ---- state shared by the threads ----
  mutable std::mutex mutex;
  std::condition_variable changed;  // phase, live slots, heartbeat wake-ups
  Phase phase = Phase::kStarting;
  int live_slots = 0;
  bool heartbeat_stop = false;
  bool heartbeat_wake = false;
  std::shared_ptr<const Session> session;
  bool session_dead = false;  // refused while draining: nothing more to say to the orchestrator
  std::vector<std::shared_ptr<ActiveTask>> active;
  Clock::time_point last_contact{};  // registration or last successful heartbeat
  std::optional<Clock::time_point> last_heartbeat;
  int fatal_exit = 0;  // set when the orchestrator refused the registration token
  std::string fatal_message;
  std::atomic<int> undelivered{0};
  // Standing down after host failures (under `mutex`).
  int host_failures_in_a_row = 0;
  std::optional<std::string> unfit;  // why, while standing down
  std::string stand_down_cause;      // the failures that started it
  std::chrono::milliseconds fitness_wait = kFirstFitnessCheck;
  Clock::time_point next_fitness_check{};
  bool checking_fitness = false;

  std::mutex registration_mutex;  // one (re-)registration at a time
  StopSignal drain_stop;          // polls and registration
  Pulse reconnected;              // a heartbeat went through after failing: retry now
  StopSignal heartbeat_stop_signal;
  std::unique_ptr<HealthServer> health_server;

  [[nodiscard]] std::string worker_id() const {
    std::lock_guard lock(mutex);
    return session ? session->credentials.worker_id : std::string("(unregistered)");
  }

  std::shared_ptr<const Session> current_session() const {
    std::lock_guard lock(mutex);
    return session_dead ? nullptr : session;
  }

  bool draining() const {
    std::lock_guard lock(mutex);
    return phase >= Phase::kDraining;
  }

  // ---- registration ----

  // Registers until it works; false when a drain stopped it first. A refused registration
  // token is fatal: Error(kConfig).
  bool register_worker(OrchestratorClient& client) {
    Backoff backoff(options.backoff);
    for (;;) {
      try {
        auto answer = client.register_worker(options.config.token, capabilities, &drain_stop);
        auto fresh = std::make_shared<Session>();
        fresh->credentials = {answer.worker_id, answer.token};
        fresh->heartbeat_interval = std::chrono::milliseconds(answer.heartbeat_interval_ms);
        fresh->lease_ttl = std::chrono::milliseconds(answer.lease_ttl_ms);
        fresh->poll_timeout = std::chrono::milliseconds(answer.poll_timeout_ms);
        {
          std::lock_guard lock(mutex);
          fresh->generation = session ? session->generation + 1 : 1;
          session = fresh;
          last_contact = Clock::now();
        }
        spdlog::info(
            "worker {}: registered with {} (heartbeat every {} ms, lease TTL {} ms, {} slot(s), "
            "task types {})",
            answer.worker_id, client.base_url(), answer.heartbeat_interval_ms, answer.lease_ttl_ms,
            capabilities.slots, join(capabilities.task_types));
        return true;
      } catch (const Interrupted&) {
        return false;
      } catch (const OrchestratorError& e) {
        if (e.unauthorized()) {
          throw Error(ErrorKind::kConfig, "registration_refused",
                      fmt::format("the orchestrator at {} refused the registration token "
                                  "(--token, TAMMA_TOKEN, TAMMA_TOKEN_FILE or token/tokenFile in "
                                  "the config file): {}",
                                  client.base_url(), e.what()));
        }
        if (!e.retryable()) {
          throw Error(ErrorKind::kConfig, "registration_refused",
                      fmt::format("the orchestrator at {} refused this worker's registration: {}",
                                  client.base_url(), e.what()));
        }
        const auto wait = backoff.next();
        spdlog::warn("registration with {} failed (attempt {}): {}; retrying in {} ms",
                     client.base_url(), backoff.failures(), e.what(), wait.count());
        if (drain_stop.wait_for(wait)) return false;
      }
    }
  }

  // The orchestrator no longer knows `seen` (401: unregistered by an admin, or its database
  // was replaced). Its leases are gone with it; register anew unless draining.
  void session_rejected(const std::shared_ptr<const Session>& seen, OrchestratorClient& client) {
    std::lock_guard registration(registration_mutex);
    {
      std::lock_guard lock(mutex);
      if (session != seen || session_dead) return;  // already handled by another thread
    }
    spdlog::error(
        "worker {}: the orchestrator no longer accepts this worker's token; its "
        "leases are lost and its tasks are stopped",
        seen->credentials.worker_id);
    for (const auto& task : tasks_of(seen->generation)) {
      lose_lease(*task, "the worker's registration was revoked");
    }
    if (draining()) {
      std::lock_guard lock(mutex);
      session_dead = true;
      return;
    }
    try {
      if (!register_worker(client)) {
        std::lock_guard lock(mutex);
        session_dead = true;
      }
    } catch (const Error& e) {
      spdlog::error("worker {}: {}", seen->credentials.worker_id, e.what());
      {
        std::lock_guard lock(mutex);
        session_dead = true;
        fatal_exit = kExitUsage;
        fatal_message = e.what();
      }
      drain("the registration token was refused");
    }
  }

  // ---- tasks held ----

  std::vector<std::shared_ptr<ActiveTask>> tasks_of(std::uint64_t generation) const {
    std::lock_guard lock(mutex);
    std::vector<std::shared_ptr<ActiveTask>> out;
    for (const auto& t : active) {
      if (t->session->generation == generation) out.push_back(t);
    }
    return out;
  }

  std::shared_ptr<ActiveTask> find_task(const std::string& task_id, int attempt) const {
    std::lock_guard lock(mutex);
    for (const auto& t : active) {
      if (t->task_id == task_id && t->attempt == attempt) return t;
    }
    return nullptr;
  }

  void add_active(const std::shared_ptr<ActiveTask>& task) {
    Phase now;
    {
      std::lock_guard lock(mutex);
      active.push_back(task);
      now = phase;
    }
    // A task that arrived as the shutdown began is stopped like the ones already running.
    if (now >= Phase::kCancelling) shutdown_cancel(*task);
    if (now >= Phase::kAborting) {
      task->cancellation.request_immediate();
      task->stop.fire();
    }
  }

  void remove_active(const std::shared_ptr<ActiveTask>& task) {
    {
      std::lock_guard lock(mutex);
      std::erase(active, task);
    }
    changed.notify_all();  // supersede_older_attempts waits for this
  }

  // The orchestrator assigns a task again only once the lease before has ended: an attempt of
  // the same task still running here lost its lease while this worker could not say it
  // held it (a partition longer than the lease), and the heartbeat has not told it yet. It
  // is stopped now, unreported, and its end awaited: both would use one workspace name, and
  // the new one would be refused as task_already_running, failing the task for good.
  void supersede_older_attempts(const ActiveTask& task) {
    auto older_running = [&] {
      return std::any_of(active.begin(), active.end(), [&](const auto& t) {
        return t.get() != &task && t->task_id == task.task_id;
      });
    };
    std::vector<std::shared_ptr<ActiveTask>> older;
    {
      std::lock_guard lock(mutex);
      for (const auto& t : active) {
        if (t.get() != &task && t->task_id == task.task_id) older.push_back(t);
      }
    }
    if (older.empty()) return;
    for (const auto& t : older) {
      lose_lease(*t, fmt::format("attempt {} of it is assigned to this worker", task.attempt));
    }
    older.clear();
    std::unique_lock lock(mutex);
    // Its engine is stopped at once; this wait is its teardown. The new attempt's own stop
    // (lease lost, the worker aborting) ends the wait too.
    while (older_running() && !task.stop.fired()) {
      changed.wait_for(lock, std::chrono::milliseconds(100));
    }
  }

  void lose_lease(ActiveTask& task, const std::string& why) {
    if (task.lease_lost.exchange(true)) return;
    spdlog::warn(
        "worker {}: task {} attempt {}: lease lost ({}); stopping it, its result will "
        "not be reported",
        task.session->credentials.worker_id, task.task_id, task.attempt, why);
    task.cancellation.request_immediate();
    task.stop.fire();
  }

  void request_cancel(ActiveTask& task) {
    if (task.cancel_requested.exchange(true) || !task.running.load()) return;
    spdlog::info("worker {}: task {} attempt {}: cancel requested by the orchestrator",
                 task.session->credentials.worker_id, task.task_id, task.attempt);
    task.cancellation.request();
  }

  void shutdown_cancel(ActiveTask& task) {
    if (task.shutdown_cancel.exchange(true) || !task.running.load()) return;
    spdlog::warn("worker {}: task {} attempt {}: cancelled by the worker's shutdown",
                 task.session->credentials.worker_id, task.task_id, task.attempt);
    task.cancellation.request();
  }

  // The X-Tamma-Task-State of a fenced answer: a cancel is seen on the next log flush.
  void on_task_state(ActiveTask& task, const std::string& state) {
    if (state == "cancel_requested") request_cancel(task);
  }

  // ---- phases ----

  void drain(const std::string& why) {
    {
      std::lock_guard lock(mutex);
      if (phase >= Phase::kDraining) return;
      phase = Phase::kDraining;
      heartbeat_wake = true;
    }
    spdlog::info("worker {}: draining ({}): no new tasks; running ones finish", worker_id(), why);
    drain_stop.fire();
    changed.notify_all();
  }

  void cancel_tasks(const std::string& why) {
    drain(why);
    std::vector<std::shared_ptr<ActiveTask>> tasks;
    {
      std::lock_guard lock(mutex);
      if (phase >= Phase::kCancelling) return;
      phase = Phase::kCancelling;
      tasks = active;
    }
    spdlog::warn("worker {}: cancelling {} running task(s) ({})", worker_id(), tasks.size(), why);
    for (const auto& t : tasks) shutdown_cancel(*t);
    changed.notify_all();
  }

  void abort(const std::string& why) {
    cancel_tasks(why);
    std::vector<std::shared_ptr<ActiveTask>> tasks;
    {
      std::lock_guard lock(mutex);
      if (phase >= Phase::kAborting) return;
      phase = Phase::kAborting;
      tasks = active;
    }
    spdlog::warn("worker {}: giving up on {} task(s) not yet reported ({})", worker_id(),
                 tasks.size(), why);
    for (const auto& t : tasks) {
      t->cancellation.request_immediate();
      t->stop.fire();
    }
    changed.notify_all();
  }

  // ---- heartbeat ----

  void heartbeat_loop() {
    std::unique_ptr<OrchestratorClient> heartbeats;
    std::chrono::milliseconds heartbeats_interval{0};
    Backoff backoff(options.backoff);
    for (;;) {
      auto current = current_session();
      std::chrono::milliseconds wait =
          current ? current->heartbeat_interval : std::chrono::seconds(1);
      if (current) {
        if (!heartbeats || heartbeats_interval != current->heartbeat_interval) {
          heartbeats_interval = current->heartbeat_interval;
          heartbeats = std::make_unique<OrchestratorClient>(options.config.orchestrator_url,
                                                            heartbeat_timeouts(heartbeats_interval),
                                                            options.config.ca_file);
        }
        OrchestratorClient& client = *heartbeats;
        wire::HeartbeatRequest request;
        for (const auto& t : tasks_of(current->generation)) {
          if (!t->lease_lost.load())
            request.leases.push_back({t->task_id, t->attempt, t->lease_id});
        }
        request.draining = draining();
        {
          std::lock_guard lock(mutex);
          request.unhealthy = unfit;
        }
        try {
          auto answer = client.heartbeat(current->credentials, request, &heartbeat_stop_signal);
          {
            std::lock_guard lock(mutex);
            last_contact = Clock::now();
            last_heartbeat = last_contact;
          }
          if (backoff.failures() > 0) {
            spdlog::info("worker {}: heartbeats go through again", current->credentials.worker_id);
            reconnected.fire();
          }
          backoff.reset();
          apply(answer);
        } catch (const Interrupted&) {
          return;
        } catch (const OrchestratorError& e) {
          if (e.unauthorized()) {
            session_rejected(current, client);
            wait = std::chrono::milliseconds::zero();
          } else {
            // Never longer than the interval: leases must be renewed before they run out.
            wait = std::min(backoff.next(), current->heartbeat_interval);
            spdlog::warn("worker {}: heartbeat failed (attempt {}): {}; next in {} ms",
                         current->credentials.worker_id, backoff.failures(), e.what(),
                         wait.count());
          }
        } catch (const std::exception& e) {
          // A local failure (libcurl, memory): the thread must live on, or every lease lapses.
          wait = std::min(backoff.next(), current->heartbeat_interval);
          spdlog::error("worker {}: heartbeat failed here: {}; next in {} ms",
                        current->credentials.worker_id, e.what(), wait.count());
        }
      }
      std::unique_lock lock(mutex);
      changed.wait_for(lock, wait, [this] { return heartbeat_stop || heartbeat_wake; });
      if (heartbeat_stop) return;
      heartbeat_wake = false;
    }
  }

  void apply(const wire::HeartbeatResponse& answer) {
    for (const auto& ref : answer.cancel) {
      if (auto t = find_task(ref.task_id, ref.attempt)) request_cancel(*t);
    }
    for (const auto& ref : answer.lost_leases) {
      if (auto t = find_task(ref.task_id, ref.attempt)) {
        lose_lease(*t, "the orchestrator no longer holds it for this worker");
      }
    }
    if (answer.drain) drain("the orchestrator asked this worker to drain");
  }

  // ---- slots ----

  void slot_loop(int slot) {
    OrchestratorClient client(options.config.orchestrator_url, {}, options.config.ca_file);
    // The running task's output and progress go out on a connection of their own, kept for
    // the slot's life: a task no longer pays for a connect (and the orchestrator for an
    // accept) while its sandbox starts. Only the task's reporter thread uses it while the task
    // runs; the slot thread only after that thread has been joined (a resend of the log).
    OrchestratorClient reporter_client(options.config.orchestrator_url, {}, options.config.ca_file);
    Backoff backoff(options.backoff);
    // The task the last report brought back ("next"): claimed for this worker already, so it
    // runs even if a drain began meanwhile (it finishes like the tasks running then).
    std::optional<wire::Assignment> next;
    std::shared_ptr<const Session> next_session;
    // The next task's filesystem, made while the slot waits for it (not when a report brought
    // the next task back: then nothing is waited for).
    std::unique_ptr<sandbox::SpareWorkspace> spare;
    while (next || !drain_stop.fired()) {
      std::optional<wire::Assignment> assignment;
      auto current = std::move(next_session);
      if (next) {
        assignment = std::move(next);
        next.reset();
      } else {
        if (!wait_until_fit()) break;
        current = current_session();
        if (!current) break;
        auto wait = current->poll_timeout;
        if (options.poll_wait) wait = std::min(wait, *options.poll_wait);
        if (!spare) spare = reaper->take_spare();
        if (!spare) spare = make_spare_workspace();
        const auto asked = Clock::now();
        try {
          assignment = client.poll(current->credentials, wait, &drain_stop);
        } catch (const Interrupted&) {
          break;
        } catch (const OrchestratorError& e) {
          if (e.unauthorized()) {
            session_rejected(current, client);
            continue;
          }
          const auto pause = backoff.next();
          spdlog::warn("worker {}: slot {}: poll failed (attempt {}): {}; retrying in {} ms",
                       current->credentials.worker_id, slot, backoff.failures(), e.what(),
                       pause.count());
          if (reconnected.wait_for(pause, drain_stop)) break;
          continue;
        } catch (const std::exception& e) {
          const auto pause = backoff.next();
          spdlog::error("worker {}: slot {}: poll failed here: {}; retrying in {} ms",
                        current->credentials.worker_id, slot, e.what(), pause.count());
          if (reconnected.wait_for(pause, drain_stop)) break;
          continue;
        }
        if (!assignment) {
          // An orchestrator that is shutting down or draining us answers at once: do not spin.
          if (Clock::now() - asked <
              std::min<std::chrono::milliseconds>(wait, std::chrono::seconds(1))) {
            if (drain_stop.wait_for(backoff.next())) break;
          } else {
            backoff.reset();
          }
          continue;
        }
      }
      backoff.reset();
      try {
        next = run_assignment(client, reporter_client, current, std::move(*assignment), spare);
        if (next) next_session = current;
      } catch (const std::exception& e) {
        // Its lease is no longer renewed: the orchestrator re-queues it after the lease TTL.
        spdlog::error("worker {}: slot {}: task abandoned after a failure of the worker: {}",
                      current->credentials.worker_id, slot, e.what());
        undelivered.fetch_add(1);
      }
    }
    std::lock_guard lock(mutex);
    --live_slots;
    changed.notify_all();
  }

  // Runs the task and reports it; returns the next task when the report brought one back.
  std::optional<wire::Assignment> run_assignment(OrchestratorClient& client,
                                                 OrchestratorClient& reporter_client,
                                                 const std::shared_ptr<const Session>& current,
                                                 wire::Assignment assignment,
                                                 std::unique_ptr<sandbox::SpareWorkspace>& spare) {
    const auto received = std::chrono::system_clock::now();
    auto task = std::make_shared<ActiveTask>();
    task->task_id = assignment.task_id;
    task->attempt = assignment.attempt;
    task->lease_id = assignment.lease_id;
    task->session = current;
    add_active(task);
    // Removed on every path, or the heartbeat would renew the lease of a task nobody runs.
    struct Remove {
      Impl& impl;
      std::shared_ptr<ActiveTask> task;
      ~Remove() { impl.remove_active(task); }
    } remove{*this, task};
    const std::string& worker = current->credentials.worker_id;
    spdlog::info("worker {}: task {} attempt {} assigned (type {})", worker, task->task_id,
                 task->attempt, assignment.task.value("type", "?"));
    // Wall clock: bench/pipeline_bench sets it beside the submit and the step's exec.
    spdlog::debug(
        "task {}: timeline: assigned at {} us", task->task_id,
        std::chrono::duration_cast<std::chrono::microseconds>(received.time_since_epoch()).count());
    std::unique_ptr<StagingDir> staging;
    Report report = execute(*task, assignment.task, reporter_client, staging, spare);
    task->running = false;
    note_host_outcome(report);
    if (!task->lease_lost.load() && staging && report.result) {
      upload_artifacts(client, *task, *report.result, staging->path());
      if (report.status == "succeeded" &&
          report.result->status != protocol::TaskStatus::kSucceeded) {
        report.status = std::string(protocol::to_string(report.result->status));
      }
    }
    staging.reset();
    if (task->lease_lost.load()) {
      spdlog::info("worker {}: task {} attempt {} ended {}; not reported (lease lost)", worker,
                   task->task_id, task->attempt, report.status);
      return std::nullopt;
    }
    return deliver(client, *task, report);
  }

  // ---- standing down on a broken host ----

  // A host failure counts towards standing down; any other outcome shows the host can run
  // tasks and starts the count again.
  void note_host_outcome(const Report& report) {
    const bool host = report.fail && report.error.code == kHostFailure;
    std::lock_guard lock(mutex);
    if (!host) {
      host_failures_in_a_row = 0;
      fitness_wait = kFirstFitnessCheck;
      return;
    }
    if (++host_failures_in_a_row < kHostFailuresToStandDown || unfit) return;
    stand_down_cause =
        bounded_reason(fmt::format("{} tasks in a row failed because of this host; the last: {}",
                                   host_failures_in_a_row, report.error.message));
    unfit = stand_down_cause;
    next_fitness_check = Clock::now() + fitness_wait;
    heartbeat_wake = true;  // the orchestrator hears of it now, not an interval later
    changed.notify_all();
    spdlog::error("worker {}: standing down, no new tasks: {}; checking the host again in {} ms",
                  session ? session->credentials.worker_id : "(unregistered)", *unfit,
                  fitness_wait.count());
  }

  // Returns once this host may take tasks (at once, unless standing down); false when a drain
  // came first. While standing down, one slot re-checks the host when the wait is over.
  bool wait_until_fit() {
    for (;;) {
      {
        std::unique_lock lock(mutex);
        if (!unfit) return true;
        if (!checking_fitness && Clock::now() >= next_fitness_check) {
          checking_fitness = true;
          lock.unlock();
          const auto problem = host_problem(options.config.workspace_root);
          lock.lock();
          checking_fitness = false;
          const std::string id = session ? session->credentials.worker_id : "(unregistered)";
          if (!problem) {
            spdlog::info("worker {}: the host passes its check again; taking tasks", id);
            unfit.reset();
            host_failures_in_a_row = 0;
            // Kept doubled until a task goes well: standing down again soon means the check
            // misses what is wrong.
            fitness_wait = std::min(fitness_wait * 2, kMaxFitnessCheck);
            heartbeat_wake = true;
            changed.notify_all();
            return true;
          }
          next_fitness_check = Clock::now() + kFitnessCheckEvery;
          const bool first = unfit->rfind("the host check fails: ", 0) != 0;
          unfit = bounded_reason("the host check fails: " + *problem + " (standing down since " +
                                 stand_down_cause + ")");
          heartbeat_wake = true;
          changed.notify_all();
          if (first) {
            spdlog::warn("worker {}: still standing down: {}; checking every {} ms", id, *unfit,
                         kFitnessCheckEvery.count());
          }
        }
      }
      if (drain_stop.wait_for(std::chrono::milliseconds(500))) return false;
    }
  }

  // Best effort: the lease is held from the assignment on; "started" only records the moment.
  void send_started(OrchestratorClient& client, ActiveTask& task) {
    Backoff backoff(options.backoff);
    for (int attempt = 1; attempt <= 3; ++attempt) {
      try {
        auto answer =
            client.started(task.session->credentials, task.task_id, task.fence(), &task.stop);
        on_task_state(task, answer.task_state);
        return;
      } catch (const Interrupted&) {
        return;
      } catch (const OrchestratorError& e) {
        if (e.ends_the_attempt()) {
          lose_lease(task, e.what());
          return;
        }
        if (!e.retryable() || attempt == 3) {
          spdlog::warn("worker {}: task {}: could not say it started: {}",
                       task.session->credentials.worker_id, task.task_id, e.what());
          return;
        }
        if (task.stop.wait_for(backoff.next())) return;
      }
    }
  }

  Report execute(ActiveTask& task, const json& document, OrchestratorClient& reporter_client,
                 std::unique_ptr<StagingDir>& staging,
                 std::unique_ptr<sandbox::SpareWorkspace>& spare);

  // Null when the worker's tasks all have a disk limit (they cannot use one) or the making
  // failed: the task then makes its own, as it did before spares, and says why.
  std::unique_ptr<sandbox::SpareWorkspace> make_spare_workspace() const {
    if (options.config.default_disk_bytes) return nullptr;
    try {
      return sandbox::SpareWorkspace::make(options.config.workspace_root);
    } catch (const std::exception& e) {
      spdlog::debug("no spare workspace: {}", e.what());
      return nullptr;
    }
  }

  // Each matched artifact goes up before the result, fenced and retried like the result, so
  // an admin who sees the task succeeded can download them. One the orchestrator refuses for
  // good (too large, bad name) is logged, and the task is not reported succeeded: its result
  // is an error naming the artifact, so nobody takes a missing artifact for an empty list.
  void upload_artifacts(OrchestratorClient& client, ActiveTask& task, protocol::TaskResult& result,
                        const std::filesystem::path& dir) {
    const std::string& worker = task.session->credentials.worker_id;
    std::string refused;
    for (const auto& artifact : result.artifacts) {
      // A link has no bytes of its own: the result's manifest says where it points.
      if (!artifact.link.empty()) continue;
      Backoff backoff(options.backoff);
      for (;;) {
        try {
          auto stored = client.upload_artifact(task.session->credentials, task.task_id,
                                               task.fence(), artifact.path,
                                               read_whole_file(dir / artifact.path), &task.stop);
          if (stored != artifact.sha256) {
            throw Error(
                ErrorKind::kInfrastructure, "artifact_corrupted",
                "the orchestrator stored SHA-256 " + stored + ", expected " + artifact.sha256);
          }
          spdlog::info("worker {}: task {} attempt {}: artifact {} uploaded ({} bytes)", worker,
                       task.task_id, task.attempt, artifact.path, artifact.size);
          break;
        } catch (const Interrupted&) {
          return;
        } catch (const OrchestratorError& e) {
          if (e.ends_the_attempt()) {
            lose_lease(task, e.what());
            return;
          }
          if (!e.retryable()) {
            spdlog::error("worker {}: task {} attempt {}: artifact {} refused, not uploaded: {}",
                          worker, task.task_id, task.attempt, artifact.path, e.what());
            if (!refused.empty()) refused += "; ";
            refused += artifact.path + " (" + e.what() + ")";
            break;
          }
          if (!wait_before_upload_retry(task, backoff, artifact.path, e.what())) return;
        } catch (const std::exception& e) {
          if (!wait_before_upload_retry(task, backoff, artifact.path, e.what())) return;
        }
      }
    }
    if (!refused.empty() && result.status == protocol::TaskStatus::kSucceeded) {
      result.status = protocol::TaskStatus::kError;
      result.error = protocol::TaskError{"artifact_not_delivered",
                                         "the orchestrator refused artifact(s): " + refused, false};
    }
  }

  // False when the wait was cut short (lease lost, abort).
  bool wait_before_upload_retry(ActiveTask& task, Backoff& backoff, const std::string& name,
                                const char* why) {
    const auto wait = backoff.next();
    spdlog::warn(
        "worker {}: task {} attempt {}: artifact {} not uploaded yet (attempt {}): {}; "
        "retrying in {} ms",
        task.session->credentials.worker_id, task.task_id, task.attempt, name, backoff.failures(),
        why, wait.count());
    return !reconnected.wait_for(wait, task.stop);
  }

  // True when this worker takes new tasks now (not draining, not standing down).
  bool taking_tasks() const {
    if (drain_stop.fired()) return false;
    std::lock_guard lock(mutex);
    return !unfit;
  }

  // Sends the report until the orchestrator has it. Lease lost (409), task gone (404) or
  // token revoked (401/403) drop it: the orchestrator has decided about that attempt already.
  // While this worker takes tasks, the report asks for the next one ("next"), which the
  // orchestrator claims with the report and returns here: no poll, one commit.
  std::optional<wire::Assignment> deliver(OrchestratorClient& client, ActiveTask& task,
                                          const Report& report) {
    const std::string& worker = task.session->credentials.worker_id;
    Backoff backoff(options.backoff);
    std::size_t budget = 768 << 10;  // below the orchestrator's default 1 MiB JSON body limit
    wire::LogSummary log = report.log;
    int log_resends = 0;
    for (;;) {
      try {
        FencedAnswer answer;
        const bool next = taking_tasks();
        if (report.fail) {
          wire::FailRequest request;
          request.fence = task.fence();
          request.error = report.error;
          request.log = log;
          request.progress = report.progress;
          request.next = next;
          if (report.result) request.result = fit_result(*report.result, budget);
          answer = client.fail(task.session->credentials, task.task_id, request, &task.stop);
        } else {
          wire::CompleteRequest request;
          request.fence = task.fence();
          request.result = fit_result(*report.result, budget);
          request.log = log;
          request.progress = report.progress;
          request.next = next;
          answer = client.complete(task.session->credentials, task.task_id, request, &task.stop);
        }
        spdlog::info("worker {}: task {} attempt {} {}, reported (now {})", worker, task.task_id,
                     task.attempt, report.status,
                     answer.task_state.empty() ? "state not said" : answer.task_state);
        return std::move(answer.next);
      } catch (const Interrupted&) {
        if (!task.lease_lost.load()) {
          undelivered.fetch_add(1);
          spdlog::error("worker {}: task {} attempt {} {}: result NOT delivered (shutting down)",
                        worker, task.task_id, task.attempt, report.status);
        }
        return std::nullopt;
      } catch (const OrchestratorError& e) {
        if (e.ends_the_attempt()) {
          spdlog::warn("worker {}: task {} attempt {} {}: result dropped: {}", worker, task.task_id,
                       task.attempt, report.status, e.what());
          return std::nullopt;
        }
        if (e.status() == 409 && e.code() == "log_incomplete" && e.log_length() &&
            report.resend_log) {
          // The orchestrator lost part of the log (restored from an older state): send it
          // again; after a few rounds, report what it holds and count the rest as missing.
          if (++log_resends <= 3) {
            spdlog::warn(
                "worker {}: task {}: the orchestrator holds {} bytes of the log; "
                "sending the rest before the result",
                worker, task.task_id, *e.log_length());
            log = report.resend_log(*e.log_length());
          } else {
            log.missing_bytes +=
                log.bytes.value_or(0) - std::min(log.bytes.value_or(0), *e.log_length());
            log.bytes = *e.log_length();
          }
          continue;
        }
        if (e.status() == 413 && budget > (16 << 10)) {
          budget /= 4;
          spdlog::warn(
              "worker {}: task {}: result too large for the orchestrator; sending it "
              "with less captured output ({} bytes)",
              worker, task.task_id, budget);
          continue;
        }
        if (!e.retryable()) {
          undelivered.fetch_add(1);
          spdlog::error("worker {}: task {} attempt {} {}: result refused: {}", worker,
                        task.task_id, task.attempt, report.status, e.what());
          return std::nullopt;
        }
        if (!wait_before_retry(task, report, backoff, e.what())) return std::nullopt;
      } catch (const std::exception& e) {
        if (!wait_before_retry(task, report, backoff, e.what())) return std::nullopt;
      }
    }
  }

  // False when the wait was cut short (lease lost, abort): the result is given up.
  bool wait_before_retry(ActiveTask& task, const Report& report, Backoff& backoff,
                         const char* why) {
    const std::string& worker = task.session->credentials.worker_id;
    const auto wait = backoff.next();
    spdlog::warn(
        "worker {}: task {} attempt {}: result not delivered yet (attempt {}): {}; "
        "retrying in {} ms (the lease is kept meanwhile)",
        worker, task.task_id, task.attempt, backoff.failures(), why, wait.count());
    if (!reconnected.wait_for(wait, task.stop)) return true;
    if (!task.lease_lost.load()) {
      undelivered.fetch_add(1);
      spdlog::error("worker {}: task {} attempt {} {}: result NOT delivered (shutting down)",
                    worker, task.task_id, task.attempt, report.status);
    }
    return false;
  }

  // ---- health ----

  HealthSnapshot health() const {
    std::lock_guard lock(mutex);
    HealthSnapshot h;
    h.status = phase_name(phase);
    h.worker_id = session ? session->credentials.worker_id : "";
    h.running_tasks = active.size();
    if (last_heartbeat) h.last_heartbeat_ago_ms = ms_since(*last_heartbeat);
    // Out of touch longer than a lease: the orchestrator counts this worker lost. Not while
    // draining or stopping: the worker still holds results to deliver, and restarting it
    // would lose them.
    if (session && phase == Phase::kRunning && Clock::now() - last_contact > session->lease_ttl) {
      h.healthy = false;
      h.status = "unhealthy";
      h.reason = "no heartbeat has reached the orchestrator for longer than the lease TTL";
    }
    if (unfit) {
      h.healthy = false;
      h.status = "unhealthy";
      h.reason = *unfit;
    }
    return h;
  }

  // Says goodbye so the orchestrator re-queues at once whatever this worker still held,
  // instead of after a lease TTL. Retried for a while; false when it did not go through.
  bool unregister() {
    std::shared_ptr<const Session> current;
    {
      std::lock_guard lock(mutex);
      if (session_dead) return true;  // the orchestrator dropped this worker already
      current = session;
    }
    if (!current) return true;
    OrchestratorClient client(options.config.orchestrator_url, {}, options.config.ca_file);
    Backoff backoff(options.backoff);
    const auto deadline = Clock::now() + options.unregister_timeout;
    StopSignal never;
    for (;;) {
      try {
        client.unregister(current->credentials);
        spdlog::info("worker {}: unregistered", current->credentials.worker_id);
        return true;
      } catch (const OrchestratorError& e) {
        if (e.unauthorized() || e.status() == 404) return true;  // gone already
        const auto wait = backoff.next();
        if (!e.retryable() || Clock::now() + wait > deadline) {
          spdlog::error("worker {}: could not unregister: {}", current->credentials.worker_id,
                        e.what());
          return false;
        }
        spdlog::warn("worker {}: unregistering failed: {}; retrying in {} ms",
                     current->credentials.worker_id, e.what(), wait.count());
        never.wait_for(wait);
      }
    }
  }

  int run();
};

namespace {

// Unsent output beyond 4 MiB waits on disk, in an unlinked file under the workspace root.
LogShipperLimits spooled_limits(const Config& config) {
  LogShipperLimits limits;
  limits.spill_dir = config.workspace_root;
  return limits;
}

// Output and progress of one running task, on their way to the orchestrator from a thread of
// their own: the task's output pipe is never held up by the network. `client` is the slot's
// (its connection outlives the task); no one else uses it until finish() has returned.
class TaskReporter : public RunObserver {
 public:
  TaskReporter(Daemon::Impl& daemon, ActiveTask& task, OrchestratorClient& client)
      : daemon_(daemon),
        task_(task),
        client_(client),
        shipper_(spooled_limits(daemon.options.config)),
        sink_(*this),
        backoff_(daemon.options.backoff),
        thread_([this] { loop(); }) {}

  ~TaskReporter() override { stop_thread(); }

  void on_step_start(std::size_t index, std::size_t count, const std::string& name) override {
    std::lock_guard lock(mutex_);
    steps_ = std::max<std::size_t>(count, 1);
    progress_.percent = 100.0 * static_cast<double>(index) / static_cast<double>(steps_);
    progress_.step = name;
    // Sent on the next tick, not now: a task that ends before it sends its last progress with
    // its report (ADR 0033).
    progress_dirty_ = true;
  }

  void on_step_end(std::size_t index, const protocol::StepResult&) override {
    std::lock_guard lock(mutex_);
    progress_.percent =
        std::min(100.0, 100.0 * static_cast<double>(index + 1) / static_cast<double>(steps_));
    progress_dirty_ = true;
  }

  void on_output(StreamKind, std::string_view masked) override {
    if (shipper_.append(masked)) {
      std::lock_guard lock(mutex_);
      wake_ = true;
      wakeup_.notify_one();
    }
  }

  // After the task ended: everything left goes out before the result (which closes the
  // attempt's log), retried however long the orchestrator stays out of reach, until it is
  // delivered or the task's stop signal fires (lease lost, the daemon giving up at shutdown).
  // Returns what the result says about the log.
  wire::LogSummary finish() {
    stop_thread();
    ship_until_done();
    return summary();
  }

  // The progress the orchestrator has not heard yet (a task that ended before it was sent).
  std::optional<wire::Progress> unsent_progress() {
    std::lock_guard lock(mutex_);
    if (!progress_dirty_) return std::nullopt;
    return progress_;
  }

  // The orchestrator holds only `held` bytes: sends from there again.
  wire::LogSummary resend_from(std::uint64_t held) {
    shipper_.rewind(held);
    ship_until_done();
    return summary();
  }

 private:
  void ship_until_done() {
    bool said = false;
    while (!task_.stop.fired()) {
      if (ship(false) && shipper_.acknowledged() >= shipper_.produced()) break;
      if (!shipper_.stopped_reason().empty()) break;
      if (!said) {
        said = true;
        spdlog::warn(
            "worker {}: task {}: keeping {} bytes of output until the orchestrator "
            "takes them; the result waits for them",
            worker(), task_.task_id, shipper_.produced() - shipper_.acknowledged());
      }
      reconnected_or(backoff_.next());
    }
  }

  void reconnected_or(std::chrono::milliseconds wait) {
    daemon_.reconnected.wait_for(wait, task_.stop);
  }

  wire::LogSummary summary() const {
    wire::LogSummary log;
    const auto produced = shipper_.produced();
    const auto acked = shipper_.acknowledged();
    log.bytes = acked;
    log.missing_bytes = shipper_.dropped_bytes();
    if (acked < produced && !task_.lease_lost.load()) {
      spdlog::warn("worker {}: task {}: {} of {} bytes of output did not reach the orchestrator",
                   worker(), task_.task_id, produced - acked, produced);
    }
    return log;
  }

 public:
 private:
  class Sink : public LogSink {
   public:
    explicit Sink(TaskReporter& reporter) : reporter_(reporter) {}
    LogAppendAnswer append(std::uint64_t offset, std::string_view data) override {
      auto& t = reporter_.task_;
      auto answer = reporter_.client_.append_log(t.session->credentials, t.task_id, t.fence(),
                                                 offset, data, &t.stop);
      reporter_.daemon_.on_task_state(t, answer.task_state);
      return answer;
    }

   private:
    TaskReporter& reporter_;
  };

  [[nodiscard]] const std::string& worker() const { return task_.session->credentials.worker_id; }

  void stop_thread() {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
    }
    wakeup_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  void loop() {
    auto not_before = Clock::now();
    std::unique_lock lock(mutex_);
    // "started" goes first, from this thread: it acknowledges the assignment at once (a
    // worker that dies in the task's first moments still spends an attempt, ADR 0022) without
    // holding up the start of the sandbox (ADR 0033).
    lock.unlock();
    daemon_.send_started(client_, task_);
    lock.lock();
    for (;;) {
      wakeup_.wait_for(lock, std::chrono::milliseconds(500), [this] { return closing_ || wake_; });
      if (closing_) return;
      wake_ = false;
      if (Clock::now() < not_before) continue;
      lock.unlock();
      const bool ok = ship();
      not_before = ok ? Clock::now() : Clock::now() + backoff_.next();
      if (ok) backoff_.reset();
      lock.lock();
    }
  }

  // One round of log and progress (only the log when `progress` is false: at the end the last
  // progress goes with the report); false when a retryable failure left something unsent.
  bool ship(bool progress = true) {
    bool ok = true;
    try {
      shipper_.flush(sink_);
    } catch (const Interrupted&) {
      return false;
    } catch (const OrchestratorError& e) {
      ok = handle(e, "log append") && ok;
      if (!e.retryable() && !task_.lease_lost.load()) shipper_.abandon(e.what());
    } catch (const std::exception& e) {
      spdlog::error("worker {}: task {}: log append failed here: {}", worker(), task_.task_id,
                    e.what());
      ok = false;
    }
    std::optional<wire::ProgressRequest> request;
    if (progress) {
      std::lock_guard lock(mutex_);
      if (progress_dirty_) {
        request = wire::ProgressRequest{task_.fence(), progress_.percent, progress_.step, {}};
        progress_dirty_ = false;
      }
    }
    if (request && !task_.lease_lost.load()) {
      try {
        auto answer =
            client_.progress(task_.session->credentials, task_.task_id, *request, &task_.stop);
        daemon_.on_task_state(task_, answer.task_state);
      } catch (const Interrupted&) {
        return false;
      } catch (const OrchestratorError& e) {
        if (!handle(e, "progress")) {
          std::lock_guard lock(mutex_);
          progress_dirty_ = true;  // the latest progress goes with the next round
          ok = false;
        }
      } catch (const std::exception& e) {
        spdlog::error("worker {}: task {}: progress failed here: {}", worker(), task_.task_id,
                      e.what());
        std::lock_guard lock(mutex_);
        progress_dirty_ = true;
        ok = false;
      }
    }
    return ok;
  }

  // True when retrying would not help (the failure is final); false for a retryable one.
  bool handle(const OrchestratorError& e, const char* what) {
    if (e.ends_the_attempt()) {
      daemon_.lose_lease(task_, e.what());
      return true;
    }
    if (!e.retryable()) {
      spdlog::warn("worker {}: task {}: {} refused: {}", worker(), task_.task_id, what, e.what());
      return true;
    }
    // Once per outage, not once per tick.
    if (backoff_.failures() == 0) {
      spdlog::warn("worker {}: task {}: {} failed: {}; output is kept and sent later", worker(),
                   task_.task_id, what, e.what());
    }
    return false;
  }

  Daemon::Impl& daemon_;
  ActiveTask& task_;
  OrchestratorClient& client_;
  LogShipper shipper_;
  Sink sink_;
  Backoff backoff_;
  std::mutex mutex_;
  std::condition_variable wakeup_;
  bool wake_ = false;
  bool closing_ = false;
  std::size_t steps_ = 1;
  wire::Progress progress_;
  bool progress_dirty_ = false;
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace

Report Daemon::Impl::execute(ActiveTask& task, const json& document,
                             OrchestratorClient& reporter_client,
                             std::unique_ptr<StagingDir>& staging,
                             std::unique_ptr<sandbox::SpareWorkspace>& spare) {
  Report report;
  auto parsed = protocol::parse_task_spec(document);
  if (!parsed.spec) {
    std::string message = "invalid task spec:";
    for (const auto& p : parsed.problems) message += fmt::format("\n  {}: {}", p.path, p.message);
    report.fail = true;
    report.error = {"invalid_task_spec", message, false};
    report.status = "error (invalid_task_spec)";
    return report;
  }
  protocol::TaskSpec spec = std::move(*parsed.spec);
  spec.id = task.task_id;
  auto shared_reporter = std::make_shared<TaskReporter>(*this, task, reporter_client);
  TaskReporter& reporter = *shared_reporter;
  try {
    RunOptions run_options;
    run_options.dispose_workspace = [this](std::unique_ptr<sandbox::Workspace> workspace) {
      reaper->add(std::move(workspace));
    };
    // A task the last report brought back finds no spare of the slot's own (the slot did not
    // wait for it), but maybe one the reaper emptied from an earlier task.
    if (!spare) spare = reaper->take_spare();
    run_options.spare_workspace = &spare;
    // An earlier attempt of this task on this worker may still run, or be on its way out.
    supersede_older_attempts(task);
    reaper->wait_until_gone(task.task_id);
    if (!spec.artifacts.empty()) {
      staging = make_staging_dir(options.config.workspace_root);
      run_options.artifacts_dir = staging->path();
    }
    report.result = engine.run(std::move(spec), task.cancellation, reporter, run_options);
  } catch (const Error& e) {
    // kConfig: the spec cannot run here as given (unknown type, no steps); running it again
    // would end the same way.
    report.fail = true;
    report.error = {e.code(), e.what(), e.kind() == ErrorKind::kConfig ? false : e.retryable()};
  } catch (const std::exception& e) {
    report.fail = true;
    report.error = {"internal_error", e.what(), true};
  }
  report.log = reporter.finish();
  report.progress = reporter.unsent_progress();
  report.resend_log = [shared_reporter](std::uint64_t held) {
    return shared_reporter->resend_from(held);
  };
  if (report.fail) {
    report.status = "error (" + report.error.code + ")";
    return report;
  }
  const auto& result = *report.result;
  report.status = std::string(protocol::to_string(result.status));
  if (result.status == protocol::TaskStatus::kError) {
    report.fail = true;
    report.error =
        result.error
            ? wire::TaskFailure{result.error->code, result.error->message, result.error->retryable}
            : wire::TaskFailure{"internal_error", "the task ended in error", true};
  } else if (result.status == protocol::TaskStatus::kCancelled && task.shutdown_cancel.load() &&
             !task.cancel_requested.load()) {
    // Nobody asked for this task to stop: this worker is going away. Retryable, so the
    // orchestrator runs it again elsewhere instead of losing it.
    report.fail = true;
    report.error = {"worker_shutdown",
                    "the worker shut down before the task finished; the task was cancelled", true};
    report.status = "cancelled (worker shutdown)";
  }
  return report;
}

int Daemon::Impl::run() {
  capabilities = detect_capabilities(options.config);
  spdlog::info("tamma-worker {} starting: orchestrator {}, {} slot(s), task types {}, labels {}",
               kWorkerVersion, options.config.orchestrator_url, capabilities.slots,
               join(capabilities.task_types), json(capabilities.labels).dump());
  if (options.health_listen) {
    health_server = std::make_unique<HealthServer>(*options.health_listen, [this] {
      auto h = health();
      json body = {{"status", h.status},
                   {"workerId", h.worker_id},
                   {"runningTasks", h.running_tasks},
                   {"lastHeartbeatAgoMs",
                    h.last_heartbeat_ago_ms ? json(*h.last_heartbeat_ago_ms) : json(nullptr)}};
      if (!h.reason.empty()) body["reason"] = h.reason;
      return HealthAnswer{h.healthy ? 200u : 503u, body.dump()};
    });
    spdlog::info("health endpoint on port {}", health_server->port());
  }

  {
    OrchestratorClient client(options.config.orchestrator_url, {}, options.config.ca_file);
    if (!register_worker(client)) {
      spdlog::info("stopped before registering; nothing to drain");
      return 0;
    }
  }
  {
    std::lock_guard lock(mutex);
    if (phase == Phase::kStarting) phase = Phase::kRunning;
    live_slots = capabilities.slots;
  }
  // A finished task's emptied directories serve a later task (ADR 0038), unless no task may
  // use a spare (all have a disk limit).
  const auto slot_count = static_cast<std::size_t>(capabilities.slots);
  reaper = std::make_unique<WorkspaceReaper>(slot_count,
                                             options.config.default_disk_bytes ? 0 : slot_count);
  std::thread heartbeat([this] { heartbeat_loop(); });
  std::vector<std::thread> slots;
  for (int i = 0; i < capabilities.slots; ++i) slots.emplace_back([this, i] { slot_loop(i); });

  std::unique_lock lock(mutex);
  changed.wait(lock, [this] { return phase >= Phase::kDraining; });
  const auto drain_deadline = Clock::now() + options.drain_timeout;
  changed.wait_until(lock, drain_deadline,
                     [this] { return live_slots == 0 || phase >= Phase::kCancelling; });
  if (live_slots > 0) {
    lock.unlock();
    cancel_tasks(fmt::format("the drain timeout of {} ms ran out", options.drain_timeout.count()));
    lock.lock();
    const auto final_deadline = Clock::now() + options.config.grace_period + options.final_delivery;
    changed.wait_until(lock, final_deadline,
                       [this] { return live_slots == 0 || phase >= Phase::kAborting; });
    if (live_slots > 0) {
      lock.unlock();
      abort("results could not be delivered in time");
      lock.lock();
    }
  }
  lock.unlock();
  for (auto& t : slots) t.join();
  reaper.reset();  // the last workspaces are removed before the worker says it stopped
  {
    std::lock_guard stop(mutex);
    heartbeat_stop = true;
  }
  changed.notify_all();
  heartbeat_stop_signal.fire();
  heartbeat.join();

  bool unregistered = unregister();
  health_server.reset();
  {
    std::lock_guard guard(mutex);
    if (fatal_exit != 0) throw Error(ErrorKind::kConfig, "registration_refused", fatal_message);
  }
  const int lost = undelivered.load();
  if (lost > 0) spdlog::error("{} task result(s) were not delivered", lost);
  spdlog::info("worker {}: stopped", worker_id());
  return lost == 0 && unregistered ? 0 : kExitInfrastructure;
}

Daemon::Daemon(DaemonOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Daemon::~Daemon() = default;

int Daemon::run() { return impl_->run(); }

void Daemon::drain(const std::string& why) { impl_->drain(why); }

void Daemon::cancel_tasks(const std::string& why) { impl_->cancel_tasks(why); }

void Daemon::abort(const std::string& why) { impl_->abort(why); }

HealthSnapshot Daemon::health() const { return impl_->health(); }

}  // namespace tamma::worker
