// tamma-worker: runs build, test and scan tasks in a sandbox, standalone or for an orchestrator.

#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/worker_cli.h"
#include "common/error.h"
#include "worker/engine.h"

int main(int argc, char** argv) {
  // A task or handler that closes its stdin early must not kill the worker.
  ::signal(SIGPIPE, SIG_IGN);

  // Everything after the first "--" is the ad-hoc command, untouched by option parsing.
  std::vector<std::string> command;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      for (int j = i + 1; j < argc; ++j) command.emplace_back(argv[j]);
      break;
    }
    args.push_back(argv[i]);
  }

  CLI::App app{"tamma-worker: runs build, test and security-scan tasks in a kernel sandbox"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tamma-worker 0.1.0");
  auto run = tamma::cli::add_run_command(app, command);
  auto doctor = tamma::cli::add_doctor_command(app);
  auto start = tamma::cli::add_start_command(app);

  try {
    app.parse(static_cast<int>(args.size()), args.data());
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : tamma::worker::kExitUsage;
  }
  try {
    if (run.app->parsed()) return run.run();
    if (doctor.app->parsed()) return doctor.run();
    if (start.app->parsed()) return start.run();
  } catch (const tamma::Error& e) {
    std::fprintf(stderr, "tamma-worker: %s\n", e.what());
    return e.kind() == tamma::ErrorKind::kConfig ? tamma::worker::kExitUsage
                                                 : tamma::worker::kExitInfrastructure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tamma-worker: internal error: %s\n", e.what());
    return tamma::worker::kExitInfrastructure;
  }
  return tamma::worker::kExitUsage;
}
