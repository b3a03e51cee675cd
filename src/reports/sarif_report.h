#pragma once
// SARIF 2.1.0 output of security scanners: findings with their effective level, and the
// pass/fail threshold of a security_scan task (docs/task-spec.md, ADR 0013).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tamma::reports {

// SARIF's result levels, lowest first.
enum class Level { kNone, kNote, kWarning, kError };

std::optional<Level> level_from_string(std::string_view text);
std::string_view to_string(Level level);

struct Finding {
  std::string rule_id;
  Level level = Level::kWarning;
  std::string message;
  std::string file;  // relative to the workspace when it lies inside it; empty when unknown
  std::optional<std::int64_t> line;
};

struct ScanFindings {
  std::string tool;               // the driver's name (several runs: joined with ", ")
  std::vector<Finding> findings;  // every one, most severe first
  std::uint64_t counts[4] = {};   // by Level
  std::uint64_t suppressed = 0;   // results with an accepted suppression: not counted

  [[nodiscard]] std::uint64_t count(Level level) const { return counts[static_cast<int>(level)]; }
  // Findings at `threshold` or above: the scan fails when there is any.
  [[nodiscard]] std::uint64_t at_or_above(Level threshold) const;
};

// Parses one SARIF log. `name` names it in errors; `workspace` is the workspace as the task
// saw it, stripped from absolute paths. Throws Error(kTaskFailed, "report_malformed") naming
// the file and the position (line and column for JSON, a JSON path for the shape).
ScanFindings parse_sarif(std::string_view text, const std::string& name,
                         const std::string& workspace);

// result.details.scan (schema in docs/task-spec.md).
nlohmann::json to_details(const ScanFindings& scan, Level fail_on, const std::string& sarif_path);

}  // namespace tamma::reports
