#pragma once
// JUnit XML test reports as GoogleTest, pytest, Maven Surefire and jest-junit/Vitest write them:
// totals, and each failing test with where it failed (docs/task-spec.md, ADR 0013).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tamma::reports {

struct TestFailure {
  std::string suite;
  std::string name;
  std::string classname;
  std::string message;
  std::string file;  // relative to the workspace when it lies inside it; empty when unknown
  std::optional<std::int64_t> line;
  bool error = false;  // <error> (the test could not run as written) rather than <failure>
};

struct TestTotals {
  std::uint64_t total = 0;
  std::uint64_t passed = 0;
  std::uint64_t failed = 0;
  std::uint64_t errors = 0;
  std::uint64_t skipped = 0;
  std::int64_t duration_ms = 0;
  std::vector<TestFailure> failures;  // every one; the result lists the first kMaxListed

  void add(TestTotals other);
};

// Parses one report. `name` names it in errors; `workspace` is the workspace as the task saw
// it ("/workspace"), stripped from absolute paths. Throws Error(kTaskFailed,
// "report_malformed") naming the file and the line and column of the problem.
TestTotals parse_junit(std::string_view xml, const std::string& name, const std::string& workspace);

// The longest message kept per failure or finding, in bytes; the rest is cut and said.
inline constexpr std::size_t kMaxMessageBytes = 4096;
// Failures or findings listed in a result; totals always count every one.
inline constexpr std::size_t kMaxListed = 200;

// result.details.tests (schema in docs/task-spec.md).
nlohmann::json to_details(const TestTotals& totals, const std::vector<std::string>& reports);

// Helpers shared with the SARIF parser.
std::string cap_message(std::string text);
// "/workspace/src/a.c" -> "src/a.c"; "file:///workspace/a.c" -> "a.c"; others unchanged.
std::string workspace_relative(std::string path, const std::string& workspace);

}  // namespace tamma::reports
