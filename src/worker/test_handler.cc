#include "worker/test_handler.h"

#include <fmt/format.h>

#include "common/error.h"
#include "common/json_text.h"
#include "reports/junit_report.h"
#include "worker/workspace_files.h"

namespace tamma::worker {
namespace {

using protocol::TaskStatus;

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + json_quote(item);
  return out;
}

std::string failure_summary(const reports::TestTotals& totals) {
  std::string text =
      fmt::format("{} of {} tests failed", totals.failed + totals.errors, totals.total);
  if (totals.errors > 0) text += fmt::format(" ({} with an error)", totals.errors);
  if (!totals.failures.empty()) {
    const auto& first = totals.failures.front();
    const std::string name = first.classname.empty() || first.classname == first.name
                                 ? first.name
                                 : first.classname + "." + first.name;
    text += fmt::format("; first: {}", name);
    if (!first.file.empty()) {
      text += first.line ? fmt::format(" at {}:{}", first.file, *first.line)
                         : fmt::format(" in {}", first.file);
    }
    const std::string_view message(first.message);
    if (!message.empty()) text += ": " + std::string(message.substr(0, message.find('\n')));
  }
  return text;
}

void fail(protocol::TaskResult& result, const TaskContext& ctx, const std::string& code,
          const std::string& message) {
  result.status = TaskStatus::kFailed;
  result.error = protocol::TaskError{code, ctx.mask(message), false};
}

}  // namespace

void TestHandler::execute(TaskContext& ctx, protocol::TaskResult& result) {
  StepsHandler::execute(ctx, result);
  if (result.status == TaskStatus::kCancelled) return;
  // What the reports say decides a task whose steps passed, and explains one whose step
  // failed; a timeout's or a limit's own error stands (the engine writes it).
  const bool steps_passed = result.status == TaskStatus::kSucceeded;
  const bool may_decide = steps_passed || result.status == TaskStatus::kFailed;

  const auto& spec = ctx.spec();
  const WorkspaceMatches matches = find_workspace_files(ctx.host_workspace(), spec.reports);
  reports::TestTotals totals;
  std::vector<std::string> parsed;
  std::optional<Error> malformed;
  for (const auto& file : matches.files) {
    try {
      const std::string text =
          read_workspace_file(ctx.host_workspace(), file, "test report", kMaxReportBytes);
      totals.add(reports::parse_junit(text, file, ctx.task_workspace()));
      parsed.push_back(file);
    } catch (const Error& error) {
      if (error.kind() != ErrorKind::kTaskFailed) throw;
      if (!malformed) malformed = error;
    }
  }
  if (!parsed.empty()) {
    result.details = nlohmann::json::object();
    result.details["tests"] = masked_details(ctx, reports::to_details(totals, parsed));
  }
  if (!may_decide) return;

  if (malformed) {
    fail(result, ctx, malformed->code(), malformed->what());
  } else if (!matches.unmatched.empty() && steps_passed) {
    // A step that failed may well have stopped before the tests wrote anything: its own
    // failure is the outcome then, not the missing report.
    fail(result, ctx, "reports_missing",
         fmt::format("no test report matched {} in the workspace: the steps passed but wrote no "
                     "JUnit XML where $.reports says",
                     quoted_list(matches.unmatched)));
  } else if (totals.failed + totals.errors > 0) {
    fail(result, ctx, "tests_failed", failure_summary(totals));
  }
}

}  // namespace tamma::worker
