// A step's `run` script from a task spec, as lone_command() reads it (ADR 0034): it must not
// crash, and what it calls a lone command must really be plain words that bash would run
// unchanged: re-reading the words joined by one blank gives the same words.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "worker/lone_command.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view script(reinterpret_cast<const char*>(data), size);
  static const std::vector<std::string> env = {"PATH=/usr/bin:/bin"};
  const auto words = tamma::worker::lone_command(script, env);
  if (!words) return 0;
  if (words->empty()) __builtin_trap();
  std::string joined;
  for (const auto& word : *words) {
    if (word.empty()) __builtin_trap();
    for (char c : word) {
      if (c == '$' || c == '\'' || c == '"' || c == '\\' || c == ';' || c == '|' || c == '&' ||
          c == '<' || c == '>' || c == '*' || c == '?' || c == '~' || c == '`' || c == '\n' ||
          c == ' ' || c == '\t' || c == '#' || c == '{' || c == '(' || c == '[' || c == '!') {
        __builtin_trap();
      }
    }
    if (!joined.empty()) joined += ' ';
    joined += word;
  }
  if (tamma::worker::lone_command(joined, env) != words) __builtin_trap();
  return 0;
}
