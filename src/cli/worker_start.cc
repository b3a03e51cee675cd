// `tamma-worker start`: the worker as a daemon of an orchestrator. Registers, heartbeats,
// long-polls for tasks on each slot and reports their results (docs/daemon.md).

#include <signal.h>
#include <time.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "cli/worker_cli.h"
#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "worker/config.h"
#include "worker/daemon.h"

extern char** environ;

namespace tamma::cli {
namespace {

struct StartOptions {
  std::string orchestrator, ca_file, token, token_file, slots, config_file;
  std::vector<std::string> labels;  // k=v
  std::string drain_timeout = "10m";
  std::string health_listen;
  // Worker settings, as for `run`.
  std::string workspace_root, grace_period, output_limit, log_level, log_format;
  std::vector<std::string> handlers;
  bool allow_degraded = false;
  bool no_isolate = false;
};

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

worker::Config load_daemon_config(const StartOptions& o) {
  worker::ConfigOverrides overrides;
  if (!o.config_file.empty()) overrides.config_file = o.config_file;
  auto set = [&](const char* key, const std::string& value) {
    if (!value.empty()) overrides.values[key] = value;
  };
  set("orchestratorUrl", o.orchestrator);
  set("caFile", o.ca_file);
  set("token", o.token);
  set("tokenFile", o.token_file);
  set("slots", o.slots);
  set("workspaceRoot", o.workspace_root);
  set("gracePeriod", o.grace_period);
  set("outputLimit", o.output_limit);
  set("logLevel", o.log_level);
  set("logFormat", o.log_format);
  if (!o.labels.empty()) overrides.values["labels"] = joined(o.labels);
  if (!o.handlers.empty()) overrides.values["handlers"] = joined(o.handlers);
  if (o.allow_degraded) overrides.values["allowDegraded"] = "true";
  if (o.no_isolate) overrides.values["isolate"] = "false";
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  worker::Config config = worker::load_config(overrides, env);
  if (config.orchestrator_url.empty()) {
    throw Error(ErrorKind::kConfig, "missing_orchestrator_url",
                "no orchestrator: give --orchestrator URL, TAMMA_ORCHESTRATOR_URL or "
                "orchestratorUrl in the config file");
  }
  if (config.token.empty()) {
    throw Error(ErrorKind::kConfig, "missing_token",
                "no registration token: give --token, --token-file, TAMMA_TOKEN, "
                "TAMMA_TOKEN_FILE, token/tokenFile in the config file, or the systemd "
                "credential registration-token (LoadCredential=)");
  }
  return config;
}

// Signals are taken by a thread with sigtimedwait, so handling them is ordinary code and the
// thread can be joined before the daemon goes away. 1st: drain; 2nd: cancel the running
// tasks; 3rd: stop waiting for their results to be delivered.
class SignalThread {
 public:
  SignalThread(worker::Daemon& daemon, const sigset_t& set) : daemon_(daemon), set_(set) {
    thread_ = std::thread([this] { loop(); });
  }
  ~SignalThread() {
    stop_ = true;
    thread_.join();
  }

 private:
  void loop() {
    int count = 0;
    while (!stop_.load()) {
      const timespec tick{0, 200'000'000};
      const int sig = sigtimedwait(&set_, nullptr, &tick);
      if (sig < 0) continue;
      const std::string name = strsignal(sig);
      switch (++count) {
        case 1:
          std::fprintf(stderr,
                       "tamma-worker: %s: draining (running tasks finish; again to cancel them)\n",
                       name.c_str());
          daemon_.drain(name);
          break;
        case 2:
          std::fprintf(stderr,
                       "tamma-worker: %s again: cancelling running tasks (again to stop waiting "
                       "for their results)\n",
                       name.c_str());
          daemon_.cancel_tasks("a second " + name);
          break;
        default:
          daemon_.abort("a third " + name);
          break;
      }
    }
  }

  worker::Daemon& daemon_;
  sigset_t set_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

int start_daemon(const StartOptions& o) {
  // Blocked before any other thread exists, so every thread inherits the mask and these
  // signals land only in SignalThread (one that comes early waits there, pending).
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  worker::DaemonOptions options;
  options.config = load_daemon_config(o);
  setup_logging(options.config.log_level,
                options.config.log_format == worker::LogFormat::kJson ? "json" : "text");
  std::string error;
  auto drain = parse_duration(o.drain_timeout, &error);
  if (!drain) throw Error(ErrorKind::kConfig, "invalid_flag", "--drain-timeout: " + error);
  options.drain_timeout = *drain;
  if (!o.health_listen.empty()) options.health_listen = o.health_listen;

  worker::Daemon daemon(std::move(options));
  SignalThread signal_thread(daemon, signals);
  return daemon.run();
}

}  // namespace

Subcommand add_start_command(CLI::App& app) {
  auto o = std::make_shared<StartOptions>();
  auto* cmd = app.add_subcommand(
      "start", "Run as a daemon: register with an orchestrator and run the tasks it assigns");
  cmd->add_option("--orchestrator", o->orchestrator,
                  "Orchestrator base URL, or several replicas as URL1,URL2,... to fail over "
                  "between (or TAMMA_ORCHESTRATOR_URL, orchestratorUrl)");
  cmd->add_option("--ca-file", o->ca_file,
                  "PEM CA certificates that verify an https:// orchestrator (default: the "
                  "system's store; or TAMMA_CA_FILE, caFile)");
  cmd->add_option("--token", o->token,
                  "Registration token (prefer TAMMA_TOKEN or --token-file: flags show in ps)");
  cmd->add_option("--token-file", o->token_file, "File holding the registration token");
  cmd->add_option("--slots", o->slots, "Tasks run at once (default 1)");
  cmd->add_option("--label", o->labels, "k=v offered to tasks that require it (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--drain-timeout", o->drain_timeout,
                  "On SIGTERM, how long running tasks may take before they are cancelled")
      ->capture_default_str();
  cmd->add_option("--health-listen", o->health_listen, "HOST:PORT for GET /health (liveness)");
  cmd->add_option("-c,--config", o->config_file, "Worker configuration file (JSON)");
  cmd->add_option("--workspace-root", o->workspace_root, "Where task workspaces are made");
  cmd->add_option("--grace-period", o->grace_period, "SIGTERM to SIGKILL delay on cancel");
  cmd->add_option("--output-limit", o->output_limit, "Output kept per stream per step");
  cmd->add_option("--handler", o->handlers, "type=/path/to/executable (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--log-level", o->log_level, "trace, debug, info, warn, error, off");
  cmd->add_option("--log-format", o->log_format, "text or json");
  cmd->add_flag("--allow-degraded", o->allow_degraded,
                "Run tasks even when the host cannot enforce an isolation or limit asked for");
  cmd->add_flag("--no-isolate", o->no_isolate,
                "No namespaces or seccomp (cgroup limits still apply)");
  return {cmd, [o]() { return start_daemon(*o); }};
}

}  // namespace tamma::cli
