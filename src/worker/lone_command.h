#pragma once
// A step's `run` script that is one plain command runs without its shell (ADR 0034).
//
// `bash -c 'make test'` execs make itself: bash's only work is its own start-up, which costs
// more than the sandbox does (4.5 ms of a trivial step's 11 ms here, issue 13). A script whose
// meaning bash could not change -- plain words, nothing to expand, redirect or split, no
// builtin, no start-up file or option taken from the environment -- is exec'ed directly with
// what bash would have exported (PWD, SHLVL, _). Whatever cannot be exec'ed (not found, not
// permitted, no #! line) still goes to the shell, which reports or runs it as before.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tamma::worker {

// Longest script considered; longer ones go to the shell.
inline constexpr std::size_t kLoneCommandMaxBytes = 4096;

// The command's words when `script` is one plain command that bash, started with `env` (the
// step's complete environment, "NAME=value"), would exec unchanged; nullopt otherwise.
std::optional<std::vector<std::string>> lone_command(std::string_view script,
                                                     const std::vector<std::string>& env);

}  // namespace tamma::worker
