#pragma once
// Subcommands of the tamma-worker binary.

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace tamma::cli {

// Each registers its options on `app` and returns a function that runs it to an exit code.
struct Subcommand {
  CLI::App* app;
  std::function<int()> run;
};

Subcommand add_run_command(CLI::App& app, std::vector<std::string>& command_after_dashes);
Subcommand add_doctor_command(CLI::App& app);
Subcommand add_start_command(CLI::App& app);

}  // namespace tamma::cli
