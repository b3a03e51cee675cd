// Every message of the orchestrator protocol (src/protocol/wire.h): the first byte picks the
// message, the rest is the HTTP body, read as both sides read it (parse_body, then the
// message's *_from_json). Refusing a body is the parser's job; anything else (a crash, a
// sanitizer report, an exception that is not tamma::Error) is a finding.
//
// What one side accepted, the other must accept as written back: the orchestrator stores
// capabilities as to_json and reads them back, and sends the views the admin CLI reads. So an
// accepted message's to_json must be accepted again and give the same document.
//
// The seeds in corpus/wire are named after their message; their first byte is '@' plus the
// message's index below (the index is the byte modulo 32, so that appending a message keeps
// every seed's meaning).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string_view>

#include "common/error.h"
#include "protocol/wire.h"

namespace {

namespace wire = tamma::protocol::wire;
using nlohmann::json;

struct Message {
  const char* name;
  json (*read_and_write)(const json&);  // to_json(*_from_json(document))
};

// Append only: a seed's first byte names its message by position.
constexpr Message kMessages[] = {
    {"register_request",
     [](const json& j) { return to_json(wire::register_request_from_json(j)); }},
    {"register_response",
     [](const json& j) { return to_json(wire::register_response_from_json(j)); }},
    {"heartbeat_request",
     [](const json& j) { return to_json(wire::heartbeat_request_from_json(j)); }},
    {"heartbeat_response",
     [](const json& j) { return to_json(wire::heartbeat_response_from_json(j)); }},
    {"poll_request", [](const json& j) { return to_json(wire::poll_request_from_json(j)); }},
    {"assignment", [](const json& j) { return to_json(wire::assignment_from_json(j)); }},
    {"started_request", [](const json& j) { return to_json(wire::started_request_from_json(j)); }},
    {"progress_request",
     [](const json& j) { return to_json(wire::progress_request_from_json(j)); }},
    {"log_append_request",
     [](const json& j) { return to_json(wire::log_append_request_from_json(j)); }},
    {"log_append_response",
     [](const json& j) { return to_json(wire::log_append_response_from_json(j)); }},
    {"complete_request",
     [](const json& j) { return to_json(wire::complete_request_from_json(j)); }},
    {"fail_request", [](const json& j) { return to_json(wire::fail_request_from_json(j)); }},
    {"submit_request", [](const json& j) { return to_json(wire::submit_request_from_json(j)); }},
    {"task_view", [](const json& j) { return to_json(wire::task_view_from_json(j)); }},
    {"task_list", [](const json& j) { return to_json(wire::task_list_from_json(j)); }},
    {"worker_view", [](const json& j) { return to_json(wire::worker_view_from_json(j)); }},
    {"worker_list", [](const json& j) { return to_json(wire::worker_list_from_json(j)); }},
    {"error_body", [](const json& j) { return to_json(wire::error_body_from_json(j)); }},
    {"capabilities", [](const json& j) { return to_json(wire::capabilities_from_json(j)); }},
    {"platform", [](const json& j) { return to_json(wire::platform_from_json(j)); }},
    {"report_answer", [](const json& j) { return to_json(wire::report_answer_from_json(j)); }},
};
static_assert(std::size(kMessages) <= 32);

[[noreturn]] void broken(const Message& message, const char* what, const char* detail) {
  std::fprintf(stderr, "wire_fuzz: %s: %s%s%s\n", message.name, what, *detail ? ": " : "", detail);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t index = data[0] % 32;
  if (index >= std::size(kMessages)) return 0;
  const Message& message = kMessages[index];
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  json written;
  try {
    written = message.read_and_write(wire::parse_body(body));
  } catch (const tamma::Error&) {
    return 0;  // refused: WireError (JsonTextError becomes one in parse_body)
  }
  (void)written.dump();
  try {
    if (message.read_and_write(written) != written) {
      broken(message, "to_json of the message read back from its to_json differs", "");
    }
  } catch (const tamma::Error& e) {
    broken(message, "its own to_json is refused", e.what());
  }
  return 0;
}
