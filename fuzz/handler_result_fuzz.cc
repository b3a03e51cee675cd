// The answer an external handler writes on stdout (src/worker/external_handler.cc): text ->
// parse_json_text -> task_result_from_json. A handler is a program the task's author wrote, so
// its answer is outside input. Refusing it is the parser's job; anything else (a crash, a
// sanitizer report, an exception that is not tamma::Error) is a finding.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "common/json_parse.h"
#include "protocol/task_result.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto answered = tamma::protocol::task_result_from_json(tamma::parse_json_text(text));
    // The worker copies the answer into its own result document (--result, --json, the
    // orchestrator): that must serialize whatever the handler wrote.
    (void)tamma::protocol::to_json(answered).dump();
  } catch (const tamma::Error&) {
    // Refused input (JsonTextError and the result's own errors derive from tamma::Error).
  }
  return 0;
}
