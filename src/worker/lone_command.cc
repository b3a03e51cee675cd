#include "worker/lone_command.h"

#include <algorithm>
#include <array>

namespace tamma::worker {
namespace {

// Characters with no meaning to bash inside a word in this position: no quoting, expansion
// ($ ` ~ { } * ? [ ] !), comment (#), operator (; & | < > ( )), escape (\) or newline. '='
// is plain after the first word (there it would be an assignment).
bool plain(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '_':
    case '-':
    case '.':
    case '/':
    case ',':
    case ':':
    case '+':
    case '%':
    case '@':
    case '=':
      return true;
    default:
      return false;
  }
}

// Reserved words and builtins (bash 5.2's `compgen -k` and `compgen -b`): bash runs these
// itself, so there is nothing to exec. `true` and `false` are left out on purpose: exec'ing
// /usr/bin/true exits as the builtin does.
constexpr auto kShellOwn = std::to_array<std::string_view>({
    "if",       "then",    "else",     "elif",    "fi",       "case",    "esac",     "for",
    "select",   "while",   "until",    "do",      "done",     "in",      "function", "time",
    "{",        "}",       "!",        "[[",      "]]",       "coproc",  ".",        ":",
    "[",        "alias",   "bg",       "bind",    "break",    "builtin", "caller",   "cd",
    "command",  "compgen", "complete", "compopt", "continue", "declare", "dirs",     "disown",
    "echo",     "enable",  "eval",     "exec",    "exit",     "export",  "fc",       "fg",
    "getopts",  "hash",    "help",     "history", "jobs",     "kill",    "let",      "local",
    "logout",   "mapfile", "popd",     "printf",  "pushd",    "pwd",     "read",     "readarray",
    "readonly", "return",  "set",      "shift",   "shopt",    "source",  "suspend",  "test",
    "times",    "trap",    "type",     "typeset", "ulimit",   "umask",   "unalias",  "unset",
    "wait",
});

bool shell_own(std::string_view word) {
  return std::find(kShellOwn.begin(), kShellOwn.end(), word) != kShellOwn.end();
}

// Variables bash takes from its environment that change what it runs or prints: start-up
// files (BASH_ENV, ENV), options (SHELLOPTS, BASHOPTS, POSIXLY_CORRECT), tracing (PS4,
// BASH_XTRACEFD), the PATH search (EXECIGNORE), and functions (BASH_FUNC_name%%). PWD,
// OLDPWD and SHLVL are rewritten by bash on start: with them set, the exported values would
// depend on the filesystem, so the shell decides.
bool shell_reads(std::string_view entry) {
  static constexpr std::array<std::string_view, 11> kNames = {
      "BASH_ENV",   "ENV", "SHELLOPTS", "BASHOPTS", "POSIXLY_CORRECT", "PS4", "BASH_XTRACEFD",
      "EXECIGNORE", "PWD", "OLDPWD",    "SHLVL"};
  if (entry.rfind("BASH_FUNC_", 0) == 0) return true;
  const auto eq = entry.find('=');
  const std::string_view name = entry.substr(0, eq);
  return std::find(kNames.begin(), kNames.end(), name) != kNames.end();
}

}  // namespace

std::optional<std::vector<std::string>> lone_command(std::string_view script,
                                                     const std::vector<std::string>& env) {
  if (script.size() > kLoneCommandMaxBytes) return std::nullopt;
  for (const auto& entry : env) {
    if (shell_reads(entry)) return std::nullopt;
  }
  std::vector<std::string> words;
  std::size_t i = 0;
  // Blanks around the command, and one final line break (a YAML block scalar ends with one).
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  std::size_t end = script.size();
  if (end > 0 && script[end - 1] == '\n') --end;
  while (i < end) {
    if (blank(script[i])) {
      ++i;
      continue;
    }
    std::size_t start = i;
    while (i < end && !blank(script[i])) {
      if (!plain(script[i])) return std::nullopt;
      ++i;
    }
    words.emplace_back(script.substr(start, i - start));
  }
  if (words.empty()) return std::nullopt;
  const std::string& name = words.front();
  // NAME=value is an assignment; %job is `fg %job`.
  if (name.find('=') != std::string::npos || name.front() == '%' || shell_own(name)) {
    return std::nullopt;
  }
  return words;
}

}  // namespace tamma::worker
