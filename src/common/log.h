#pragma once

#include <string>

namespace tamma {

// Sets up the process-wide spdlog logger on stderr: "text" or "json" (one object a line).
// Throws Error(kConfig) for an unknown level or format.
void setup_logging(const std::string& level, const std::string& format);

}  // namespace tamma
