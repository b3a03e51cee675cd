#pragma once
// The admin commands of tamma-orchestrator: submit, task, tasks, cancel, workers, logs. Each
// talks to a running orchestrator over HTTP with the admin token.

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace tamma::orchestrator {

// Exit codes of the admin commands.
inline constexpr int kCliOk = 0;
inline constexpr int kCliFailed = 1;  // refused by the orchestrator, or task not succeeded
inline constexpr int kCliUsage = 2;
inline constexpr int kCliUnreachable = 6;  // no answer from the orchestrator

struct AdminCommand {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// Adds every admin subcommand to `app`; the returned commands run the parsed one.
std::vector<AdminCommand> add_admin_commands(CLI::App& app);

}  // namespace tamma::orchestrator
