#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "common/error.h"

namespace tamma {

void setup_logging(const std::string& level, const std::string& format) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    throw Error(ErrorKind::kConfig, "invalid_log_level",
                "log level '" + level + "' is not one of trace, debug, info, warn, error, off");
  }
  auto logger = spdlog::stderr_logger_mt("tamma");
  if (format == "json") {
    // The message is escaped by the caller's fields; spdlog has no JSON formatter of its own.
    logger->set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","logger":"%n","msg":"%v"})");
  } else if (format == "text") {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  } else {
    spdlog::drop("tamma");
    throw Error(ErrorKind::kConfig, "invalid_log_format",
                "log format '" + format + "' is not one of text, json");
  }
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
}

}  // namespace tamma
