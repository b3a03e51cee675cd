#pragma once
// `tamma-worker run --shell-on-failure`: an interactive shell where a failed step ran.

#include "worker/engine.h"

namespace tamma::cli {

// Whether this process's stdin and stdout are a terminal a shell can be offered on.
bool can_offer_debug_shell();

// Runs a shell in the failed step's sandbox (same mounts, limits, user, working directory
// and environment) on this terminal, until it exits. What it prints passes through the
// task's secret masker, so a secret echoed in the shell is shown masked, as in the step's log.
void open_debug_shell(const worker::FailedStep& failed);

}  // namespace tamma::cli
