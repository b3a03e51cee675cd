// The task specification as a user, a CI step or the orchestrator hands it over: text ->
// parse_json_text -> parse_task_spec, which is what load_task_spec does once it has read the
// file. Refusing an input is the parser's job; anything else (a crash, a sanitizer report, an
// exception that is not tamma::Error) is a finding.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "common/error.h"
#include "common/json_parse.h"
#include "protocol/task_spec.h"

namespace {

using tamma::protocol::parse_task_spec;

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "task_spec_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto outcome = parse_task_spec(tamma::parse_json_text(text));
    if (outcome.spec.has_value() == !outcome.problems.empty()) {
      broken("a spec must be given exactly when there is no problem");
    }
    if (!outcome.spec) return 0;
    // to_json is what external handlers receive and what a spec is stored as: the worker must
    // accept its own normalized form, and normalizing it again must change nothing.
    const auto written = tamma::protocol::to_json(*outcome.spec);
    const auto again = parse_task_spec(written);
    if (!again.spec) broken("the spec's own to_json is refused");
    if (tamma::protocol::to_json(*again.spec) != written) broken("to_json is not stable");
    (void)written.dump();
  } catch (const tamma::Error&) {
    // Refused input (JsonTextError and the spec's own errors derive from tamma::Error).
  }
  return 0;
}
