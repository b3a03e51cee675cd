// The worker's config file (/etc/tamma-worker/config.json or --config): text -> settings
// through config_from_file_text, the file layer of load_config. Refusing a file is the
// parser's job; anything else (a crash, a sanitizer report, an exception that is not
// tamma::Error) is a finding.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "common/error.h"
#include "common/json_parse.h"
#include "worker/config.h"

namespace {

// tokenFile makes the loader read the file the text names. An input naming /dev/zero or
// /proc/kcore would test the machine rather than the parser (and hang or exhaust memory), so
// only paths that do not exist or name a small regular file elsewhere are let through.
bool harmless_file(const std::string& name) {
  std::error_code ec;
  const auto status = std::filesystem::status(name, ec);
  if (!std::filesystem::exists(status)) return true;
  if (!std::filesystem::is_regular_file(status)) return false;
  const std::string path = std::filesystem::canonical(name, ec).string();
  if (ec || path.starts_with("/proc/") || path.starts_with("/sys/") || path.starts_with("/dev/")) {
    return false;
  }
  const auto size = std::filesystem::file_size(path, ec);
  return !ec && size <= 64 * 1024;
}

bool reads_a_harmful_file(std::string_view text) {
  try {
    const auto document = tamma::parse_json_text(text);
    if (!document.is_object()) return false;
    const auto it = document.find("tokenFile");
    return it != document.end() && it->is_string() && !harmless_file(it->get<std::string>());
  } catch (const tamma::Error&) {
    return false;  // the loader refuses it before reading anything
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (reads_a_harmful_file(text)) return 0;
  try {
    (void)tamma::worker::config_from_file_text(text, "config.json");
  } catch (const tamma::Error&) {
    // Refused: Error(kConfig, "invalid_config") naming every setting at fault.
  }
  return 0;
}
