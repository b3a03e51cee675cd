// `tamma-worker run TASK_FILE` and `tamma-worker run -- CMD ARGS...`: one task, standalone,
// as a CI step runs it; the exit code says how it ended.

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "cli/worker_cli.h"
#include "cli/worker_console.h"
#include "cli/worker_debug_shell.h"
#include "common/error.h"
#include "common/json_parse.h"
#include "common/log.h"
#include "common/units.h"
#include "protocol/task_spec.h"
#include "worker/ci_output.h"
#include "worker/config.h"
#include "worker/engine.h"
#include "worker/secret_masker.h"

extern char** environ;

namespace tamma::cli {
namespace {

struct RunOptions {
  std::string task_file;
  std::string result_file;
  bool json = false;
  bool quiet = false;
  std::string artifacts_dir;
  std::string junit_out;
  std::string config_file;
  // Task overrides (ad-hoc form, or on top of a task file).
  std::string timeout, memory, cpus, pids, disk, network, workdir, type;
  std::vector<std::string> allow_net;    // --allow-net host:port, repeatable
  std::string repository, ref;           // check this out first (e.g. file://$PWD in a CI job)
  std::vector<std::string> env;          // NAME=value
  std::vector<std::string> secret_envs;  // NAME: value taken from the worker's environment
  // Worker settings.
  std::string workspace_root, grace_period, output_limit, log_level, log_format;
  std::vector<std::string> handlers;
  bool allow_degraded = false;
  bool no_isolate = false;
  // Debugging a failed task locally.
  bool keep_workspace = false;
  bool shell_on_failure = false;
};

std::vector<std::string> current_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) out.emplace_back(*e);
  return out;
}

std::pair<std::string, std::string> split_assignment(const std::string& text, const char* flag) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw Error(ErrorKind::kConfig, "invalid_flag",
                fmt::format("{} {}: expected NAME=value", flag, text));
  }
  return {text.substr(0, eq), text.substr(eq + 1)};
}

worker::Config load_effective_config(const RunOptions& o) {
  worker::ConfigOverrides overrides;
  if (!o.config_file.empty()) overrides.config_file = o.config_file;
  auto set = [&](const char* key, const std::string& value) {
    if (!value.empty()) overrides.values[key] = value;
  };
  set("workspaceRoot", o.workspace_root);
  set("gracePeriod", o.grace_period);
  set("outputLimit", o.output_limit);
  set("logLevel", o.log_level);
  set("logFormat", o.log_format);
  if (o.allow_degraded) overrides.values["allowDegraded"] = "true";
  if (o.no_isolate) overrides.values["isolate"] = "false";
  if (!o.handlers.empty()) {
    std::string joined;
    for (const auto& h : o.handlers) joined += (joined.empty() ? "" : ",") + h;
    overrides.values["handlers"] = joined;
  }
  return worker::load_config(overrides, current_environment());
}

// Builds the task document: from the file, or for the ad-hoc command; flags win over both.
protocol::TaskSpec build_spec(const RunOptions& o, const std::vector<std::string>& command) {
  nlohmann::json document;
  if (!o.task_file.empty() && !command.empty()) {
    throw Error(ErrorKind::kConfig, "invalid_usage",
                "give either a task file or a command after --, not both");
  }
  if (!o.task_file.empty()) {
    std::ifstream in(o.task_file);
    if (!in) {
      throw Error(ErrorKind::kConfig, "task_file_unreadable",
                  fmt::format("cannot read task file {}", o.task_file));
    }
    try {
      const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
      document = parse_json_text(text);
    } catch (const JsonTextError& e) {
      throw Error(ErrorKind::kConfig, "invalid_task_spec",
                  fmt::format("{} is not valid JSON: {}", o.task_file, e.what()));
    }
  } else if (!command.empty()) {
    document = {{"type", "command"}, {"steps", {{{"name", "command"}, {"argv", command}}}}};
  } else {
    throw Error(ErrorKind::kConfig, "invalid_usage",
                "nothing to run: give a task file, or a command after --");
  }
  if (!document.is_object()) {
    throw Error(ErrorKind::kConfig, "invalid_task_spec", "the task document must be a JSON object");
  }
  if (!o.type.empty()) document["type"] = o.type;
  if (!o.timeout.empty()) document["timeout"] = o.timeout;
  if (!o.network.empty()) document["network"] = o.network;
  // --allow-net host:port (repeatable): the allow-list form, {"allow": [...]}.
  if (!o.allow_net.empty()) document["network"] = nlohmann::json{{"allow", o.allow_net}};
  if (!o.workdir.empty()) document["workdir"] = o.workdir;
  if (!o.repository.empty()) {
    if (!document["repository"].is_object()) document["repository"] = nlohmann::json::object();
    document["repository"]["url"] = o.repository;
  }
  if (!o.ref.empty()) {
    if (!document.contains("repository") || !document["repository"].is_object()) {
      throw Error(ErrorKind::kConfig, "invalid_flag", "--ref needs a repository (--repository)");
    }
    document["repository"]["ref"] = o.ref;
  }
  if (!o.memory.empty()) document["resources"]["memory"] = o.memory;
  if (!o.disk.empty()) document["resources"]["disk"] = o.disk;
  if (!o.pids.empty()) {
    try {
      document["resources"]["pids"] = std::stoll(o.pids);
    } catch (const std::exception&) {
      throw Error(ErrorKind::kConfig, "invalid_flag", "--pids " + o.pids + ": not a number");
    }
  }
  if (!o.cpus.empty()) {
    try {
      document["resources"]["cpus"] = std::stod(o.cpus);
    } catch (const std::exception&) {
      throw Error(ErrorKind::kConfig, "invalid_flag", "--cpus " + o.cpus + ": not a number");
    }
  }
  for (const auto& assignment : o.env) {
    auto [name, value] = split_assignment(assignment, "--env");
    document["env"][name] = value;
  }
  for (const auto& name : o.secret_envs) {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) {
      throw Error(ErrorKind::kConfig, "invalid_flag",
                  fmt::format("--secret-env {}: no such variable in the environment", name));
    }
    document["secrets"][name] = value;
  }

  auto outcome = protocol::parse_task_spec(document);
  if (!outcome.problems.empty()) {
    std::string message = "invalid task spec:";
    for (const auto& p : outcome.problems) message += fmt::format("\n  {}: {}", p.path, p.message);
    throw Error(ErrorKind::kConfig, "invalid_task_spec", message);
  }
  return *outcome.spec;
}

// Signals are taken by a thread with sigwait so that the handling is ordinary code:
// the first SIGINT/SIGTERM cancels gracefully, the second kills at once.
void start_signal_thread(worker::Cancellation& cancellation) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set, &cancellation]() {
    int count = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (++count == 1) {
        std::fprintf(stderr, "tamma-worker: %s received: cancelling the task (again to kill now)\n",
                     strsignal(sig));
        cancellation.request();
      } else {
        cancellation.request_immediate();
      }
    }
  }).detach();
}

void write_result_file(const std::string& path, const nlohmann::json& document) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << document.dump(2) << "\n";
    if (!out) {
      throw Error(ErrorKind::kInfrastructure, "result_write_failed",
                  "cannot write the result to " + temporary);
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    throw_errno("renaming the result into " + path);
  }
}

// The JUnit report's path: the flag, else TAMMA_JUNIT_OUTPUT, else a default under GitLab
// (where `artifacts:reports:junit` picks it up) and Jenkins (the `junit` step); elsewhere none.
std::string junit_path(const RunOptions& o, worker::ci::System ci) {
  if (!o.junit_out.empty()) return o.junit_out;
  if (const char* env = std::getenv("TAMMA_JUNIT_OUTPUT"); env != nullptr && *env != '\0')
    return env;
  const bool reads_junit = ci == worker::ci::System::kGitlab || ci == worker::ci::System::kJenkins;
  return reads_junit ? "tamma-junit.xml" : "";
}

// What the CI system reads after the task: annotations and the job summary on GitHub, the
// JUnit file on GitLab. A CI report that cannot be written is said, and does not change the
// task's exit code.
void write_ci_reports(const RunOptions& o, worker::ci::System ci,
                      const protocol::TaskResult& result, const worker::SecretMasker& masker) {
  if (ci == worker::ci::System::kGithub) {
    const std::string annotations = worker::ci::github_annotations(result, masker);
    std::fputs(annotations.c_str(), o.json ? stderr : stdout);
    std::fflush(o.json ? stderr : stdout);
    if (const char* summary = std::getenv("GITHUB_STEP_SUMMARY"); summary != nullptr && *summary) {
      std::ofstream out(summary, std::ios::app);
      out << worker::ci::github_summary(result, masker);
      if (!out)
        std::fprintf(stderr, "tamma-worker: cannot append the job summary to %s\n", summary);
    }
  }
  if (const std::string path = junit_path(o, ci); !path.empty()) {
    std::ofstream out(path, std::ios::trunc);
    out << worker::ci::junit_report(result, masker);
    if (!out)
      std::fprintf(stderr, "tamma-worker: cannot write the JUnit report to %s\n", path.c_str());
  }
}

int run_task(const RunOptions& o, const std::vector<std::string>& command) {
  worker::Cancellation cancellation;
  start_signal_thread(cancellation);

  protocol::TaskResult result;
  int exit_code = 0;
  const worker::ci::System ci = worker::ci::detect(std::getenv);
  std::vector<std::string> secrets;
  std::filesystem::path kept;
  try {
    worker::Config config = load_effective_config(o);
    setup_logging(config.log_level,
                  config.log_format == worker::LogFormat::kJson ? "json" : "text");
    protocol::TaskSpec spec = build_spec(o, command);
    for (const auto& [name, value] : spec.secrets) secrets.push_back(value);
    worker::Engine engine(config, worker::HandlerRegistry::with_builtins(config));
    ConsoleObserver observer(
        {.quiet = o.quiet, .json = o.json, .tty = ::isatty(STDERR_FILENO) == 1, .ci = ci});
    worker::RunOptions run_options;
    run_options.only_task_of_process = true;
    if (!o.artifacts_dir.empty()) run_options.artifacts_dir = o.artifacts_dir;
    if (o.keep_workspace) {
      // Under the workspace root, where a disk has been set aside for tasks, and with a name
      // that the sweep of stale workspaces passes over.
      run_options.keep_failed_in = config.workspace_root / ".kept";
      run_options.kept = &kept;
    }
    if (o.shell_on_failure) {
      if (!can_offer_debug_shell()) {
        throw Error(ErrorKind::kConfig, "invalid_flag",
                    "--shell-on-failure needs a terminal on stdin and stderr");
      }
      run_options.on_step_failure = [&observer](const worker::FailedStep& failed) {
        observer.finish();
        open_debug_shell(failed);
      };
    }
    result = engine.run(std::move(spec), cancellation, observer, run_options);
    observer.finish();
    exit_code = worker::exit_code_for(result);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kConfig) throw;
    // Invalid usage still leaves a result document for the CI step that asked for one.
    std::fprintf(stderr, "tamma-worker: %s\n", e.what());
    result.status = protocol::TaskStatus::kError;
    result.error = protocol::TaskError{e.code(), e.what(), false};
    exit_code = worker::kExitUsage;
  }

  const nlohmann::json document = protocol::to_json(result);
  if (!o.result_file.empty()) write_result_file(o.result_file, document);
  write_ci_reports(o, ci, result, worker::SecretMasker(secrets));
  if (o.json) std::printf("%s\n", document.dump(2).c_str());
  if (exit_code != worker::kExitUsage) {
    std::string summary = fmt::format(
        "tamma-worker: task {} {} in {}", result.task_id, protocol::to_string(result.status),
        format_duration(std::chrono::milliseconds(result.duration_ms)));
    if (result.error) summary += ": " + result.error->message;
    std::fprintf(stderr, "%s (exit %d)\n", summary.c_str(), exit_code);
    for (const auto& hint : result.hints)
      std::fprintf(stderr, "tamma-worker: hint: %s\n", hint.c_str());
    if (!kept.empty()) {
      std::fprintf(stderr,
                   "tamma-worker: the task's files are kept in %s (work/ is its workspace, "
                   "home/ its HOME, tmp/ and var-tmp/ its /tmp and /var/tmp); remove them when "
                   "done\n",
                   kept.c_str());
    }
  }
  return exit_code;
}

}  // namespace

Subcommand add_run_command(CLI::App& app, std::vector<std::string>& command) {
  auto options = std::make_shared<RunOptions>();
  auto* run = app.add_subcommand("run", "Run one task (a JSON task file, or a command after --)");
  run->add_option("task", options->task_file, "Task specification file (JSON)");
  run->add_option("--result", options->result_file, "Write the result document to this file");
  run->add_flag("--json", options->json, "Print the result document on stdout");
  run->add_flag("-q,--quiet", options->quiet, "Do not stream the task's output");
  run->add_option("--artifacts-dir", options->artifacts_dir, "Copy matched artifacts here");
  run->add_option(
      "--junit-out", options->junit_out,
      "Write a JUnit report here (default under GitLab CI and Jenkins: tamma-junit.xml)");
  run->add_option("-c,--config", options->config_file, "Worker configuration file (JSON)");
  run->add_option("--type", options->type, "Task type (ad-hoc form: command)");
  run->add_option("--timeout", options->timeout, "Wall-clock limit, e.g. 30s, 10m");
  run->add_option("--memory", options->memory, "Memory limit, e.g. 512M");
  run->add_option("--cpus", options->cpus, "CPU quota in cores, e.g. 1.5");
  run->add_option("--pids", options->pids, "Maximum number of processes");
  run->add_option("--disk", options->disk, "Workspace disk limit, e.g. 1G");
  run->add_option("--network", options->network, "none (loopback only) or host");
  run->add_option("--allow-net", options->allow_net,
                  "host:port the task may reach through the egress proxy (repeatable)");
  run->add_option("--workdir", options->workdir, "Working directory inside the workspace");
  run->add_option("--repository", options->repository,
                  "Check this repository out into the workspace first (https://, git://, file://)");
  run->add_option("--ref", options->ref, "Branch, tag or commit of the repository");
  run->add_option("-e,--env", options->env, "NAME=value for the task (repeatable)")
      ->allow_extra_args(false);
  run->add_option("--secret-env", options->secret_envs,
                  "Pass this variable of the worker's environment as a masked secret")
      ->allow_extra_args(false);
  run->add_option("--workspace-root", options->workspace_root, "Where task workspaces are made");
  run->add_option("--grace-period", options->grace_period, "SIGTERM to SIGKILL delay on cancel");
  run->add_option("--output-limit", options->output_limit, "Output kept per stream per step");
  run->add_option("--handler", options->handlers, "type=/path/to/executable (repeatable)")
      ->allow_extra_args(false);
  run->add_option("--log-level", options->log_level, "trace, debug, info, warn, error, off");
  run->add_option("--log-format", options->log_format, "text or json");
  run->add_flag("--allow-degraded", options->allow_degraded,
                "Run even when the host cannot enforce an isolation or limit asked for");
  run->add_flag("--no-isolate", options->no_isolate,
                "No namespaces or seccomp (cgroup limits still apply)");
  run->add_flag("--keep-workspace", options->keep_workspace,
                "When the task does not succeed, keep its files under the workspace root's "
                ".kept/ and print where");
  run->add_flag("--shell-on-failure", options->shell_on_failure,
                "After a step fails, open an interactive shell in its sandbox (needs a "
                "terminal)");
  return {run, [options, &command]() { return run_task(*options, command); }};
}

}  // namespace tamma::cli
