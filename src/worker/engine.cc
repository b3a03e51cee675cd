#include "worker/engine.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <system_error>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/ip/address.hpp>

#include "common/error.h"
#include "common/unique_fd.h"
#include "common/units.h"
#include "egress/listener.h"
#include "egress/proxy.h"
#include "sandbox/net.h"
#include "sandbox/sandbox.h"
#include "sandbox/workspace.h"
#include "worker/artifacts.h"
#include "worker/checkout.h"
#include "worker/host_check.h"
#include "worker/lone_command.h"
#include "worker/secret_masker.h"

namespace tamma::worker {
namespace {

using Clock = std::chrono::steady_clock;
using protocol::LimitKind;
using protocol::TaskStatus;

constexpr const char* kTaskPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

sandbox::Policy make_policy(const Config& config, const protocol::TaskSpec& spec,
                            const TaskHandler& handler) {
  sandbox::Policy policy;
  const auto& r = spec.resources;
  policy.limits.memory_bytes = r.memory_bytes ? r.memory_bytes : config.default_memory_bytes;
  policy.limits.cpus = r.cpus ? r.cpus : config.default_cpus;
  policy.limits.pids = r.pids ? r.pids : config.default_pids;
  policy.network = spec.network == protocol::NetworkMode::kHost ? sandbox::Network::kHost
                                                                : sandbox::Network::kNone;
  policy.isolate = config.isolate;
  policy.minimum_tier = sandbox::parse_tier(config.isolation).value_or(sandbox::Tier::kRootless);
  policy.uid = config.task_uid;
  policy.gid = config.task_gid;
  policy.tmp_bytes = config.tmp_bytes;
  policy.tmp_on_tmpfs = config.tmp_on_tmpfs;
  policy.allow_degraded = config.allow_degraded;
  for (auto& bind : handler.readonly_binds()) policy.readonly_binds.push_back(bind);
  return policy;
}

protocol::ResourceUsage to_result_usage(const sandbox::Usage& usage) {
  protocol::ResourceUsage out;
  out.peak_memory_bytes = usage.peak_memory_bytes;
  out.cpu_user_ms = usage.cpu_user_us / 1000;
  out.cpu_system_ms = usage.cpu_system_us / 1000;
  out.oom_kills = usage.oom_kills;
  out.pids_limit_hits = usage.pids_limit_hits;
  out.cpu_throttled_ms = usage.cpu_throttled_us / 1000;
  out.network_unreachable = usage.network_unreachable;
  out.exact = usage.exact;
  return out;
}

// Memory peaks do not add up across sequential steps; CPU time and events do.
void accumulate(protocol::ResourceUsage& total, const protocol::ResourceUsage& step) {
  total.peak_memory_bytes = std::max(total.peak_memory_bytes, step.peak_memory_bytes);
  total.cpu_user_ms += step.cpu_user_ms;
  total.cpu_system_ms += step.cpu_system_ms;
  total.oom_kills += step.oom_kills;
  total.pids_limit_hits += step.pids_limit_hits;
  total.cpu_throttled_ms += step.cpu_throttled_ms;
  total.network_unreachable += step.network_unreachable;
  total.exact = total.exact && step.exact;
}

// Why a step ended, in the result's terms. A limit counts only when the task did not
// succeed despite it (make -j retries a refused fork and may still pass).
void classify(const StepOutcome& outcome, bool disk_full, protocol::StepResult& step) {
  if (outcome.exit) {
    if (outcome.exit->signaled) {
      step.signal = outcome.exit->signal;
    } else {
      step.exit_code = outcome.exit->code;
    }
  }
  const bool clean_exit = outcome.exit && !outcome.exit->signaled && outcome.exit->code == 0;
  switch (outcome.end) {
    case StepEnd::kCancelled:
      step.status = TaskStatus::kCancelled;
      return;
    case StepEnd::kTimeout:
      step.status = TaskStatus::kTimeout;
      // A fork bomb stalls on the pids limit rather than dying: say which limit it hit.
      if (outcome.usage.pids_limit_hits > 0) step.limit = LimitKind::kPids;
      return;
    case StepEnd::kOutputLimit:
      step.status = TaskStatus::kLimitExceeded;
      step.limit = LimitKind::kOutput;
      return;
    case StepEnd::kExited:
      break;
  }
  if (clean_exit) {
    step.status = TaskStatus::kSucceeded;
  } else if (outcome.usage.oom_kills > 0) {
    step.status = TaskStatus::kLimitExceeded;
    step.limit = LimitKind::kMemory;
  } else if (disk_full) {
    step.status = TaskStatus::kLimitExceeded;
    step.limit = LimitKind::kDisk;
  } else if (outcome.usage.pids_limit_hits > 0) {
    step.status = TaskStatus::kLimitExceeded;
    step.limit = LimitKind::kPids;
  } else {
    step.status = TaskStatus::kFailed;
  }
}

std::vector<std::string> secret_values(const protocol::TaskSpec& spec) {
  std::vector<std::string> values;
  for (const auto& [name, value] : spec.secrets) values.push_back(value);
  return values;
}

class EngineContext : public TaskContext {
 public:
  EngineContext(const protocol::TaskSpec& spec, const Config& config, sandbox::Sandbox& sandbox,
                const sandbox::Workspace& workspace, Cancellation& cancellation,
                RunObserver& observer, protocol::TaskResult& result,
                Clock::time_point task_deadline, const sandbox::Policy& policy,
                std::size_t planned_steps, const RunOptions& options)
      : spec_(spec),
        config_(config),
        sandbox_(sandbox),
        policy_(policy),
        planned_steps_(planned_steps),
        workspace_(workspace),
        cancellation_(cancellation),
        observer_(observer),
        result_(result),
        task_deadline_(task_deadline),
        options_(options),
        masker_(secret_values(spec)) {}

  const protocol::TaskSpec& spec() const override { return spec_; }
  const Config& config() const override { return config_; }
  // Whether the task sees the sandbox's own paths: not without isolation, nor in the
  // unprivileged tier, which has no mount namespace to show them there.
  bool sandbox_paths() const {
    return config_.isolate && sandbox::isolated_tasks_see_sandbox_paths();
  }
  std::string task_workspace() const override {
    return sandbox_paths() ? std::string(sandbox::kSandboxWorkspace) : workspace_.path().string();
  }
  const std::filesystem::path& host_workspace() const override { return workspace_.path(); }
  // HOME and TMPDIR as the task sees them: without isolation, the task's own directories on
  // the host (there is no mount namespace to show them at the usual places).
  std::string task_home() const {
    return sandbox_paths() ? std::string(sandbox::kSandboxHome)
                           : (workspace_.task_dir() / sandbox::kHomeDir).string();
  }
  std::string task_tmp() const {
    return sandbox_paths() ? std::string("/tmp")
                           : (workspace_.task_dir() / sandbox::kTmpDir).string();
  }
  bool cancel_requested() const override { return cancellation_.requested(); }
  std::size_t step_count_hint() const override { return planned_steps_; }
  std::string mask(std::string_view text) const override { return masker_.mask(text); }
  void set_network_env(std::map<std::string, std::string> env) { network_env_ = std::move(env); }

  protocol::StepResult run(const StepCommand& command, StepOutcome* raw) override {
    const std::size_t index = result_.steps.size();
    observer_.on_step_start(index, std::max(planned_steps_, index + 1), command.name);

    ensure_workdir(command.workdir.empty() ? spec_.workdir : command.workdir);
    StepRequest request;
    request.argv = command.argv;
    request.env = environment(command.env);
    if (command.script) {
      if (auto words = lone_command(*command.script, request.env)) {
        request.shell_argv = std::move(request.argv);
        request.argv = std::move(*words);
      }
    }
    request.workdir = command.workdir.empty() ? spec_.workdir : command.workdir;
    request.deadline = task_deadline_;
    if (command.timeout)
      request.deadline = std::min(request.deadline, Clock::now() + *command.timeout);
    request.stdin_data = command.stdin_data;
    request.forward_stdout = command.forward_stdout;

    StepLimits limits{config_.output_limit_bytes, config_.output_hard_limit_bytes,
                      config_.grace_period};
    LiveSink sink = [this](StreamKind stream, std::string_view text) {
      observer_.on_output(stream, text);
    };
    // A step with its own network or binds (the checkout) gets a sandbox of its own.
    std::unique_ptr<sandbox::Sandbox> own_sandbox;
    if (command.host_network || !command.readonly_binds_at.empty()) {
      sandbox::Policy policy = policy_;
      if (command.host_network) {
        policy.network = sandbox::Network::kHost;
        policy.net_ns_fd = -1;  // the checkout is the worker's own fetch, not the task's
      }
      for (const auto& bind : command.readonly_binds_at) policy.readonly_binds_at.push_back(bind);
      own_sandbox = sandbox::Sandbox::create(policy);
    }
    sandbox::Sandbox& step_sandbox = own_sandbox ? *own_sandbox : sandbox_;
    StepOutcome outcome = run_step(step_sandbox, workspace_.path().string(), request, limits,
                                   masker_, cancellation_, sink);
    spdlog::debug("task {}: step '{}' ran in {} ms{}", spec_.id, command.name, outcome.duration_ms,
                  request.shell_argv.empty()
                      ? ""
                      : " (a lone command: exec'ed directly, by bash only if that failed)");
    if (outcome.exec_began) {
      // Wall clock, to set beside the daemon's "assigned" and the submitter's own clock
      // (bench/pipeline_bench's end-to-end timeline).
      spdlog::debug("task {}: timeline: step '{}' exec'd at {} us", spec_.id, command.name,
                    std::chrono::duration_cast<std::chrono::microseconds>(
                        outcome.exec_began->time_since_epoch())
                        .count());
    }

    protocol::StepResult step;
    step.name = command.name;
    step.duration_ms = outcome.duration_ms;
    step.stdout_capture = outcome.out;
    step.stderr_capture = outcome.err;
    step.usage = to_result_usage(outcome.usage);
    classify(outcome, workspace_.full(), step);
    for (auto& d : outcome.degradations) {
      if (std::find(result_.degradations.begin(), result_.degradations.end(), d) ==
          result_.degradations.end()) {
        result_.degradations.push_back(d);
      }
    }
    accumulate(result_.usage, step.usage);
    result_.steps.push_back(step);
    observer_.on_step_end(index, step);
    if (options_.on_step_failure && step.status != TaskStatus::kSucceeded &&
        step.status != TaskStatus::kCancelled && !cancellation_.requested()) {
      sandbox::Command where;
      where.env = request.env;
      where.workspace = workspace_.path();
      where.workdir = request.workdir;
      options_.on_step_failure(FailedStep{step, step_sandbox, where, masker_, cancellation_});
    }
    if (step.status == TaskStatus::kLimitExceeded && step.limit == LimitKind::kMemory &&
        outcome.usage.memory_limit_hits == 0) {
      // Killed for memory although the task's own limit was never reached: a parent cgroup's
      // limit or the machine ran out. The task is not to blame and may pass elsewhere.
      throw Error(ErrorKind::kInfrastructure, std::string(kHostFailure),
                  fmt::format("step '{}': {} process(es) were killed by an out-of-memory kill "
                              "that the task's own memory limit did not cause (this host or a "
                              "cgroup above the worker ran out of memory)",
                              command.name, outcome.usage.oom_kills),
                  /*retryable=*/true);
    }
    if (raw) *raw = std::move(outcome);
    return step;
  }

  const SecretMasker& masker() const { return masker_; }

 private:
  // A workdir the steps have not made yet (a fresh workspace is empty) is created for them,
  // owned by the task's uid so the task can write there.
  void ensure_workdir(const std::string& workdir) const {
    namespace fs = std::filesystem;
    fs::path current = workspace_.path();
    for (const auto& part : fs::path(workdir).lexically_normal()) {
      if (part.empty() || part == ".") continue;
      current /= part;
      std::error_code ec;
      if (fs::create_directory(current, ec)) {
        if (::chown(current.c_str(), config_.task_uid, config_.task_gid) != 0) {
          throw_errno("chown of workdir " + current.string());
        }
      } else if (ec) {
        throw Error(ErrorKind::kInfrastructure, "workdir_create_failed",
                    "creating workdir " + current.string() + ": " + ec.message());
      }
    }
  }

 private:
  // The task gets only what its spec grants, and the variables the operator chose to pass
  // (passEnv): never the rest of the worker's own environment.
  std::vector<std::string> environment(const std::map<std::string, std::string>& extra) const {
    std::map<std::string, std::string> env{
        {"PATH", kTaskPath},
        {"HOME", task_home()},
        {"TMPDIR", task_tmp()},
        {"LANG", "C.UTF-8"},
        {"CI", "true"},
        {"TAMMA_TASK_ID", spec_.id},
        {"TAMMA_TASK_TYPE", spec_.type},
        {"TAMMA_WORKSPACE", task_workspace()},
    };
    // Read when the step starts: the worker's environment does not change while it runs, and
    // a variable it lacks stays unset in the task rather than empty.
    for (const auto& name : config_.pass_env) {
      if (const char* value = ::getenv(name.c_str())) env[name] = value;
    }
    // The egress proxy's variables win over the worker's own proxy settings (passEnv), which
    // the task could not reach anyway; a spec may still set its own.
    for (const auto& [k, v] : network_env_) env[k] = v;
    for (const auto& [k, v] : spec_.env) env[k] = v;
    for (const auto& [k, v] : spec_.secrets) env[k] = v;
    for (const auto& [k, v] : extra) env[k] = v;
    std::vector<std::string> out;
    out.reserve(env.size());
    for (const auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
  }

  const protocol::TaskSpec& spec_;
  const Config& config_;
  sandbox::Sandbox& sandbox_;
  const sandbox::Policy& policy_;
  std::size_t planned_steps_;
  const sandbox::Workspace& workspace_;
  Cancellation& cancellation_;
  RunObserver& observer_;
  protocol::TaskResult& result_;
  Clock::time_point task_deadline_;
  const RunOptions& options_;
  std::map<std::string, std::string> network_env_;
  SecretMasker masker_;
};

// Each phase of a task with its duration, in the debug log (`--log-level debug`): where the
// time of a task goes, for whoever wonders why it is slow.
class PhaseClock {
 public:
  explicit PhaseClock(std::string_view task_id) : task_id_(task_id), since_(Clock::now()) {}

  void done(std::string_view phase) {
    const auto now = Clock::now();
    spdlog::debug("task {}: {} in {:.1f} ms", task_id_, phase,
                  std::chrono::duration<double, std::milli>(now - since_).count());
    since_ = now;
  }

 private:
  std::string_view task_id_;
  Clock::time_point since_;
};

bool is_step_based(std::string_view type) {
  return type == "command" || type == "build" || type == "test" || type == "security_scan";
}

void fail_with(protocol::TaskResult& result, const Error& error, const std::string& message) {
  switch (error.kind()) {
    case ErrorKind::kTimeout:
      result.status = TaskStatus::kTimeout;
      break;
    case ErrorKind::kLimitExceeded:
      result.status = TaskStatus::kLimitExceeded;
      break;
    case ErrorKind::kCancelled:
      result.status = TaskStatus::kCancelled;
      break;
    case ErrorKind::kTaskFailed:
      result.status = TaskStatus::kFailed;
      break;
    default:
      result.status = TaskStatus::kError;
      break;
  }
  result.error = protocol::TaskError{error.code(), message, error.retryable()};
}

// artifactsWhen "on_failure"/"always" on a task that did not succeed: what exists is
// collected, and a problem with it must not replace the task's own outcome, so it goes to
// details.artifacts instead of the result's error.
void collect_after_failure(const std::filesystem::path& workspace,
                           const std::vector<std::string>& globs,
                           const std::optional<std::filesystem::path>& copy_to,
                           const ArtifactLimits& limits, const SecretMasker& masker,
                           protocol::TaskResult& result) {
  try {
    result.artifacts = collect_artifacts(workspace, globs, copy_to, limits, /*missing_ok=*/true);
  } catch (const Error& error) {
    const std::string message = masker.mask(error.what());
    spdlog::warn("task {}: artifacts of the failed task not collected: {}", result.task_id,
                 message);
    if (result.details.is_null()) result.details = nlohmann::json::object();
    if (result.details.is_object()) {
      result.details["artifacts"] = {{"code", error.code()}, {"message", message}};
    }
  }
}

// Names the timeout that fired: the step's own, or the task's.
std::string timeout_message(const protocol::TaskSpec& spec, const protocol::TaskResult& result,
                            std::chrono::milliseconds task_timeout) {
  if (!result.steps.empty()) {
    const auto& last = result.steps.back();
    for (const auto& step : spec.steps) {
      if (step.name == last.name && step.timeout &&
          std::chrono::milliseconds(last.duration_ms) < task_timeout) {
        return fmt::format("step '{}' ran past its timeout of {}", last.name,
                           format_duration(*step.timeout));
      }
    }
  }
  return fmt::format("the task ran past its timeout of {}", format_duration(task_timeout));
}

// A package manager that retries (npm) runs until the timeout in a sandbox without network,
// saying nothing a user would connect with it: when such a task failed or timed out after
// trying to get out, the result says what it lacked.
std::optional<std::string> no_network_hint(const protocol::TaskSpec& spec,
                                           const protocol::TaskResult& result) {
  if (spec.network != protocol::NetworkMode::kNone) return std::nullopt;
  if (result.status != TaskStatus::kFailed && result.status != TaskStatus::kTimeout) {
    return std::nullopt;
  }
  const std::uint64_t attempts = result.usage.network_unreachable;
  if (attempts == 0) return std::nullopt;
  return fmt::format(
      "the task has no network (\"network\": \"none\"): {} connection attempt{} or name "
      "lookup{} found no way out of the sandbox; a task that must download or reach a service "
      "needs \"network\": \"host\"",
      attempts, attempts == 1 ? "" : "s", attempts == 1 ? "" : "s");
}

// What the operator's network policy says to the spec's network, before anything runs:
// "host" when it is not allowed, allow-list entries outside the policy's, address literals no
// task may reach. Throws Error(kConfig) naming the spec's field.
void check_network(const protocol::TaskSpec& spec, const Config& config) {
  const auto& policy = config.network_policy;
  auto refuse = [](const std::string& message) {
    throw Error(ErrorKind::kConfig, "network_not_permitted", message);
  };
  if (spec.network == protocol::NetworkMode::kHost && !policy.host_network) {
    refuse(
        "$.network: \"host\" is not allowed by this worker's network policy "
        "(networkPolicy.hostNetwork); list the destinations the task needs with "
        "{\"allow\": [\"host:port\", ...]}");
  }
  if (spec.network != protocol::NetworkMode::kAllowList) return;
  if (!config.isolate) {
    refuse(
        "$.network: an allow-list needs the sandbox's isolation, which this worker runs "
        "without (isolate: false): the task would have the host's whole network");
  }
  if (auto problem = policy.check(spec.network_allow)) refuse(*problem);
  const auto addresses = policy.address_policy();
  for (std::size_t i = 0; i < spec.network_allow.size(); ++i) {
    const auto& d = spec.network_allow[i];
    if (d.kind != egress::Destination::Kind::kAddress) continue;
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(d.host, ec);
    if (ec) continue;
    if (auto why = addresses.refusal(address)) {
      refuse(
          fmt::format("$.network.allow[{}]: {} is {}, which no task may reach", i, d.host, *why));
    }
  }
}

std::string rfc3339(std::chrono::system_clock::time_point at) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch());
  const std::time_t seconds = static_cast<std::time_t>(ms.count() / 1000);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                     ms.count() % 1000);
}

// The network of a task with an allow-list (ADR 0032): a loopback-only namespace made for it,
// the egress proxy's listener on its 127.0.0.1, and the proxy serving it from the worker until
// the task is over. The task's processes enter the namespace; nothing else leaves it.
class TaskEgress {
 public:
  TaskEgress(const protocol::TaskSpec& spec, const Config& config)
      : netns_(sandbox::make_loopback_net_namespace()) {
    egress::ProxyOptions options{.allow = spec.network_allow,
                                 .addresses = config.network_policy.address_policy()};
    proxy_ = std::make_unique<egress::Proxy>(std::move(options));
    egress::Listener listener = egress::listen_in_namespace(netns_.get());
    port_ = listener.port;
    proxy_->serve(std::move(listener.fd));
    proxy_->start();
  }

  [[nodiscard]] int netns_fd() const { return netns_.get(); }

  // What clients honour: curl, git, pip, npm (HTTP(S)_PROXY, lower case for curl's
  // http_proxy), SOCKS5 with names resolved by the proxy (socks5h) for the rest.
  [[nodiscard]] std::map<std::string, std::string> environment() const {
    const std::string http = fmt::format("http://127.0.0.1:{}", port_);
    const std::string socks = fmt::format("socks5h://127.0.0.1:{}", port_);
    const std::string local = "localhost,127.0.0.1,::1";
    return {{"HTTP_PROXY", http},  {"http_proxy", http}, {"HTTPS_PROXY", http},
            {"https_proxy", http}, {"ALL_PROXY", socks}, {"all_proxy", socks},
            {"NO_PROXY", local},   {"no_proxy", local},  {"TAMMA_EGRESS_PROXY", http}};
  }

  // Ends the proxy (the task's processes are gone) and puts its ledger into the result.
  void finish(const protocol::TaskSpec& spec, protocol::TaskResult& result) {
    proxy_->stop();
    const auto report = proxy_->report();
    for (const auto& t : report.traffic) {
      result.usage.egress.push_back({t.destination, t.bytes_out, t.bytes_in, t.connections});
    }
    for (const auto& r : report.refused) {
      result.egress_refused.push_back({r.destination, r.reason, r.protocol, rfc3339(r.at)});
    }
    result.egress_refused_dropped = report.refused_dropped;
    const bool failed =
        result.status == TaskStatus::kFailed || result.status == TaskStatus::kTimeout;
    if (failed && !report.refused.empty()) {
      std::string allowed;
      for (const auto& d : spec.network_allow) allowed += (allowed.empty() ? "" : ", ") + d.text();
      const auto total = report.refused.size() + report.refused_dropped;
      result.hints.push_back(fmt::format(
          "the egress proxy refused {} connection{} (the first: {}: {}); the task's network "
          "allows only {} (\"network\": {{\"allow\": [...]}}), see egressRefused",
          total, total == 1 ? "" : "s", report.refused.front().destination,
          report.refused.front().reason, allowed));
    }
  }

 private:
  UniqueFd netns_;
  std::unique_ptr<egress::Proxy> proxy_;
  std::uint16_t port_ = 0;
};

// A succeeded or cancelled task is never blamed on the host; any other may be.
bool host_may_be_blamed(const protocol::TaskResult& result) {
  return result.status != TaskStatus::kSucceeded && result.status != TaskStatus::kCancelled;
}

}  // namespace

// A task that did not succeed on a host that is out of disk, descriptors or memory may well
// succeed on another worker: its result becomes a retryable host_failure, which the daemon
// also counts towards standing down (docs/daemon.md, "Faults"). Checked after the workspace
// is gone, so space the task itself filled does not count against the host.
void Engine::blame_host_if_broken(protocol::TaskResult& result) const {
  if (!host_may_be_blamed(result)) return;
  if (result.error && result.error->code == kHostFailure) return;
  const auto problem = host_problem(config_.workspace_root);
  if (!problem) return;
  const std::string outcome =
      result.error ? result.error->message : std::string(protocol::to_string(result.status));
  spdlog::warn("task {}: blamed on this host, not the task: {} (the task's outcome: {})",
               result.task_id, *problem, outcome);
  result.status = TaskStatus::kError;
  result.error = protocol::TaskError{
      std::string(kHostFailure),
      fmt::format("this host cannot run tasks now: {} (the task ended: {})", *problem, outcome),
      true};
}

std::unique_ptr<sandbox::Workspace> Engine::allocate_workspace(const protocol::TaskSpec& spec,
                                                               protocol::TaskResult& result,
                                                               const RunOptions& options) const {
  const auto disk =
      spec.resources.disk_bytes ? spec.resources.disk_bytes : config_.default_disk_bytes;
  // A spare serves only a task without a disk limit; the slot keeps it for the next otherwise.
  std::unique_ptr<sandbox::SpareWorkspace> spare;
  if (!disk && options.spare_workspace != nullptr) spare = std::move(*options.spare_workspace);
  try {
    return sandbox::Workspace::create(config_.workspace_root, spec.id, disk, std::move(spare));
  } catch (const Error& error) {
    // Fail closed on a disk limit the host cannot enforce, unless degraded mode is allowed.
    if (!disk || error.kind() != ErrorKind::kSandboxSetup || !config_.allow_degraded) throw;
    result.degradations.push_back("disk limit not enforced: " + std::string(error.what()));
    spdlog::warn("task {}: {}; running without a disk limit (allowDegraded)", spec.id,
                 error.what());
    return sandbox::Workspace::create(config_.workspace_root, spec.id, std::nullopt);
  }
}

Engine::Engine(Config config, HandlerRegistry registry)
    : config_(std::move(config)), registry_(std::move(registry)) {
  // A worker that crashed left its workspaces (and maybe mounted images) behind.
  const std::size_t removed = sandbox::Workspace::remove_stale(config_.workspace_root);
  if (removed > 0) spdlog::warn("removed {} workspaces left by a worker that is gone", removed);
}

protocol::TaskResult Engine::run(protocol::TaskSpec spec, Cancellation& cancellation,
                                 RunObserver& observer, const RunOptions& options) {
  const auto started = Clock::now();
  if (spec.id.empty()) spec.id = generate_task_id();

  TaskHandler* handler = registry_.find(spec.type);
  if (handler == nullptr) {
    auto known = registry_.types();
    std::string list;
    for (const auto& t : known) list += (list.empty() ? "" : ", ") + t;
    throw Error(ErrorKind::kConfig, "unknown_task_type",
                fmt::format("$.type: no handler for task type '{}' (known: {}; external handlers "
                            "are configured with 'handlers')",
                            spec.type, list));
  }
  if (is_step_based(spec.type) && dynamic_cast<StepsHandler*>(handler) && spec.steps.empty()) {
    throw Error(ErrorKind::kConfig, "invalid_task_spec",
                fmt::format("$.steps: a '{}' task needs at least one step", spec.type));
  }

  protocol::TaskResult result;
  result.task_id = spec.id;
  result.type = spec.type;
  const auto timeout = spec.timeout.value_or(config_.default_timeout);
  const auto deadline = started + timeout;

  const SecretMasker error_masker(secret_values(spec));
  // Declared outside the try: its ledger goes into the result whatever ended the task.
  std::optional<TaskEgress> egress;
  try {
    check_network(spec, config_);
    sandbox::Policy policy = make_policy(config_, spec, *handler);
    if (options.only_task_of_process && spec.steps.size() <= 1 && !spec.repository) {
      policy.reuse_mount_templates = false;
      policy.reuse_network_namespaces = false;
    }
    PhaseClock phase(spec.id);
    if (spec.network == protocol::NetworkMode::kAllowList) {
      egress.emplace(spec, config_);
      policy.net_ns_fd = egress->netns_fd();
      phase.done("egress proxy started");
    }
    auto workspace = allocate_workspace(spec, result, options);
    phase.done("workspace made");
    // HOME, /tmp and /var/tmp come from the task's filesystem, next to the workspace.
    policy.task_dir = workspace->task_dir().string();
    auto sandbox = sandbox::Sandbox::create(policy);
    phase.done("sandbox prepared");
    EngineContext ctx(spec, config_, *sandbox, *workspace, cancellation, observer, result, deadline,
                      policy, spec.steps.size() + (spec.repository ? 1 : 0), options);
    if (egress) ctx.set_network_env(egress->environment());
    // The checkout is the first step of every task that names a repository, whatever its
    // handler; its details are added after the handler's own.
    nlohmann::json checkout;
    if (!spec.repository || checkout_repository(ctx, *spec.repository, result, checkout)) {
      handler->execute(ctx, result);
    }
    if (spec.repository) {
      if (result.details.is_null()) result.details = nlohmann::json::object();
      if (result.details.is_object()) result.details["checkout"] = checkout;
    }
    phase.done("steps run");
    result.usage.disk_bytes = workspace->usage().bytes;
    const ArtifactLimits limits{config_.artifact_max_file_bytes, config_.artifact_max_total_bytes,
                                config_.artifact_max_files};
    if (!spec.artifacts.empty() && result.status == TaskStatus::kSucceeded &&
        spec.artifacts_when != "on_failure") {
      result.artifacts =
          collect_artifacts(workspace->path(), spec.artifacts, options.artifacts_dir, limits);
    } else if (!spec.artifacts.empty() && result.status != TaskStatus::kSucceeded &&
               result.status != TaskStatus::kCancelled && spec.artifacts_when != "on_success") {
      collect_after_failure(workspace->path(), spec.artifacts, options.artifacts_dir, limits,
                            error_masker, result);
    }
    if (!spec.artifacts.empty()) phase.done("artifacts collected");
    if (options.keep_failed_in && result.status != TaskStatus::kSucceeded) {
      const auto kept = workspace->keep(*options.keep_failed_in / spec.id);
      if (options.kept) *options.kept = kept;
      phase.done("workspace kept");
    }
    if (options.dispose_workspace && !host_may_be_blamed(result)) {
      options.dispose_workspace(std::move(workspace));
      phase.done("workspace handed over");
    } else {
      // Destroyed here, before the result is handed out (`run` exits once it is printed),
      // and before blame_host_if_broken looks at the disk: a task that filled it must find
      // it empty again, or its own failure passes for the host's (a retryable host_failure
      // that would fill the next worker's disk too).
      workspace.reset();
      phase.done("workspace removed");
    }
  } catch (const Error& error) {
    // A message may quote the command or its environment: it is masked like task output.
    const std::string message = error_masker.mask(error.what());
    // Invalid input found while setting up (before any step ran) is the caller's error.
    if (error.kind() == ErrorKind::kConfig && result.steps.empty()) {
      throw Error(error.kind(), error.code(), message, error.retryable());
    }
    spdlog::error("task {}: {}", spec.id, message);
    fail_with(result, error, message);
    // The worker's own calls (not the task's answer) failing for want of disk, descriptors or
    // memory: the sandbox quotes errno's text in its errors.
    if ((error.kind() == ErrorKind::kInfrastructure || error.kind() == ErrorKind::kSandboxSetup) &&
        error.code() != kHostFailure && mentions_host_errno(message)) {
      result.error = protocol::TaskError{std::string(kHostFailure), message, true};
    }
  } catch (const std::system_error& error) {
    // std::filesystem and friends: a full or failing disk is the host's failure.
    const std::string message = error_masker.mask(error.what());
    spdlog::error("task {}: {}", spec.id, message);
    result.status = TaskStatus::kError;
    const bool host = error.code().category() == std::generic_category() ||
                      error.code().category() == std::system_category();
    result.error = host && is_host_errno(error.code().value())
                       ? protocol::TaskError{std::string(kHostFailure), message, true}
                       : protocol::TaskError{"internal_error", message, false};
  } catch (const std::exception& error) {
    const std::string message = error_masker.mask(error.what());
    spdlog::error("task {}: {}", spec.id, message);
    result.status = TaskStatus::kError;
    result.error = protocol::TaskError{"internal_error", message, false};
  }
  if (egress) egress->finish(spec, result);
  blame_host_if_broken(result);
  if (!result.error) {
    switch (result.status) {
      case TaskStatus::kTimeout:
        result.error = protocol::TaskError{"timeout", timeout_message(spec, result, timeout), true};
        break;
      case TaskStatus::kCancelled:
        result.error = protocol::TaskError{"cancelled", "the task was cancelled", true};
        break;
      case TaskStatus::kLimitExceeded:
        result.error = protocol::TaskError{
            "limit_exceeded",
            fmt::format("the task exceeded its {} limit", protocol::to_string(result.limit)),
            false};
        break;
      default:
        break;
    }
  }
  if (auto hint = no_network_hint(spec, result)) result.hints.push_back(std::move(*hint));
  result.duration_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  return result;
}

int exit_code_for(const protocol::TaskResult& result) {
  switch (result.status) {
    case TaskStatus::kSucceeded:
      return kExitSucceeded;
    case TaskStatus::kFailed:
      return kExitTaskFailed;
    case TaskStatus::kTimeout:
      return kExitTimeout;
    case TaskStatus::kLimitExceeded:
      return kExitLimitExceeded;
    case TaskStatus::kCancelled:
      return kExitCancelled;
    case TaskStatus::kError:
      return kExitInfrastructure;
  }
  return kExitInfrastructure;
}

std::string generate_task_id() {
  unsigned char bytes[8];
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::read(fd, bytes, sizeof bytes) != sizeof bytes) {
    if (fd >= 0) ::close(fd);
    throw_errno("reading /dev/urandom for a task id");
  }
  ::close(fd);
  std::string id = "task-";
  for (unsigned char b : bytes) id += fmt::format("{:02x}", b);
  return id;
}

}  // namespace tamma::worker
