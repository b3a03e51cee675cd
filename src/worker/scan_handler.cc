#include "worker/scan_handler.h"

#include <fmt/format.h>

#include "common/error.h"
#include "reports/sarif_report.h"
#include "worker/workspace_files.h"

namespace tamma::worker {
namespace {

using protocol::TaskStatus;
using reports::Level;

std::string findings_summary(const reports::ScanFindings& scan, Level fail_on) {
  std::string counts;
  for (Level level : {Level::kError, Level::kWarning, Level::kNote}) {
    if (level < fail_on || scan.count(level) == 0) continue;
    counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", scan.count(level),
                          reports::to_string(level));
  }
  std::string text = fmt::format("{} found {} at or above \"{}\" ({})", scan.tool,
                                 scan.at_or_above(fail_on) == 1
                                     ? "1 finding"
                                     : fmt::format("{} findings", scan.at_or_above(fail_on)),
                                 reports::to_string(fail_on), counts);
  // Findings are sorted most severe first: the first one is over the threshold.
  const auto& first = scan.findings.front();
  text += fmt::format("; first: {}", first.rule_id.empty() ? "(no rule id)" : first.rule_id);
  if (!first.file.empty()) {
    text += first.line ? fmt::format(" at {}:{}", first.file, *first.line)
                       : fmt::format(" in {}", first.file);
  }
  if (!first.message.empty()) {
    const std::string_view message(first.message);
    text += ": " + std::string(message.substr(0, message.find('\n')));
  }
  return text;
}

}  // namespace

void ScanHandler::execute(TaskContext& ctx, protocol::TaskResult& result) {
  StepsHandler::execute(ctx, result);
  if (result.status == TaskStatus::kCancelled) return;
  const bool steps_passed = result.status == TaskStatus::kSucceeded;
  const bool may_decide = steps_passed || result.status == TaskStatus::kFailed;
  const auto& spec = ctx.spec();
  const Level fail_on = reports::level_from_string(spec.fail_on).value_or(Level::kError);
  auto fail = [&](const std::string& code, const std::string& message) {
    result.status = TaskStatus::kFailed;
    result.error = protocol::TaskError{code, ctx.mask(message), false};
  };

  reports::ScanFindings scan;
  try {
    const std::string text =
        read_workspace_file(ctx.host_workspace(), spec.sarif, "SARIF file", kMaxReportBytes);
    scan = reports::parse_sarif(text, spec.sarif, ctx.task_workspace());
  } catch (const Error& error) {
    if (error.kind() != ErrorKind::kTaskFailed) throw;
    // As for test reports: a scanner that failed may not have written its file.
    const bool missing = error.code() == "reports_missing";
    if (may_decide && (steps_passed || !missing)) {
      fail(error.code(), missing ? std::string(error.what()) +
                                       ": the scan's steps passed but wrote no SARIF "
                                       "where $.sarif says"
                                 : std::string(error.what()));
    }
    return;
  }
  result.details = nlohmann::json::object();
  result.details["scan"] = masked_details(ctx, reports::to_details(scan, fail_on, spec.sarif));
  if (may_decide && scan.at_or_above(fail_on) > 0) {
    fail("findings_over_threshold", findings_summary(scan, fail_on));
  }
}

}  // namespace tamma::worker
