#include "orchestrator/store/task_row.h"

#include <ctime>

#include <fmt/format.h>

#include "common/error.h"

namespace tamma::orchestrator {

std::string rfc3339(std::int64_t ms) {
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
}

wire::TaskState state_of(const std::string& text) {
  auto state = wire::task_state_from_string(text);
  if (!state) {
    throw Error(ErrorKind::kInfrastructure, "database_corrupt",
                "the database holds an unknown task state '" + text + "'");
  }
  return *state;
}

std::map<std::string, std::string> labels_of(const std::string& text) {
  std::map<std::string, std::string> labels;
  // Named, not iterated as a temporary: items() would outlive the document it walks.
  const nlohmann::json document = nlohmann::json::parse(text);
  for (const auto& [k, v] : document.items()) labels[k] = v.get<std::string>();
  return labels;
}

nlohmann::json labels_json(const std::map<std::string, std::string>& labels) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : labels) j[k] = v;
  return j;
}

std::optional<std::string> progress_text(const std::optional<wire::Progress>& progress) {
  if (!progress) return std::nullopt;
  return wire::to_json(*progress).dump();
}

}  // namespace tamma::orchestrator
