// The SARIF 2.1.0 parser: levels as SARIF defines them, messages, locations, the threshold.
// A real flawfinder log is parsed end to end in tests/cli/task_types_test.cc.

#include "reports/sarif_report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "reports/junit_report.h"

namespace tamma::reports {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json sarif_with(json results, json rules = json::array(), json extra_run = json::object()) {
  json run = {{"tool", {{"driver", {{"name", "Scanner"}, {"rules", rules}}}}},
              {"results", results}};
  run.update(extra_run);
  return {{"version", "2.1.0"}, {"runs", {run}}};
}

ScanFindings parse(const json& document) {
  return parse_sarif(document.dump(), "scan.sarif", "/workspace");
}

std::string error_of(std::string_view text) {
  try {
    parse_sarif(text, "out/scan.sarif", "/workspace");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "report_malformed");
    return e.what();
  }
  return "";
}

TEST(Sarif, LevelIsTheResultsThenTheRulesDefaultThenWarning) {
  const json rules = {{{"id", "R1"}, {"defaultConfiguration", {{"level", "error"}}}},
                      {{"id", "R2"}, {"defaultConfiguration", {{"level", "note"}}}},
                      {{"id", "R3"}}};
  const json results = {
      {{"ruleId", "R1"}, {"level", "note"}, {"message", {{"text", "explicit wins"}}}},
      {{"ruleId", "R1"}, {"message", {{"text", "rule default by id"}}}},
      {{"ruleId", "X"}, {"ruleIndex", 1}, {"message", {{"text", "rule default by index"}}}},
      {{"ruleId", "R3"}, {"message", {{"text", "rule without a default"}}}},
      {{"ruleId", "unknown"}, {"message", {{"text", "no rule at all"}}}},
      {{"ruleId", "R1"}, {"kind", "pass"}, {"message", {{"text", "not a failure"}}}},
  };
  const ScanFindings scan = parse(sarif_with(results, rules));
  EXPECT_EQ(scan.tool, "Scanner");
  EXPECT_EQ(scan.count(Level::kError), 1u);
  EXPECT_EQ(scan.count(Level::kWarning), 2u);
  EXPECT_EQ(scan.count(Level::kNote), 2u);
  EXPECT_EQ(scan.count(Level::kNone), 1u);
  // Most severe first; within a level, in the log's order.
  ASSERT_EQ(scan.findings.size(), 6u);
  EXPECT_EQ(scan.findings[0].message, "rule default by id");
  EXPECT_EQ(scan.findings[1].message, "rule without a default");
  EXPECT_EQ(scan.findings[2].message, "no rule at all");
  EXPECT_EQ(scan.findings[3].message, "explicit wins");
  EXPECT_EQ(scan.findings[4].message, "rule default by index");
  EXPECT_EQ(scan.findings[5].level, Level::kNone);
}

TEST(Sarif, ThresholdCountsTheLevelAndAbove) {
  const json results = {{{"ruleId", "a"}, {"level", "warning"}, {"message", {{"text", "w"}}}},
                        {{"ruleId", "b"}, {"level", "note"}, {"message", {{"text", "n"}}}},
                        {{"ruleId", "c"}, {"level", "none"}, {"message", {{"text", "x"}}}}};
  const ScanFindings scan = parse(sarif_with(results));
  EXPECT_EQ(scan.at_or_above(Level::kError), 0u);
  EXPECT_EQ(scan.at_or_above(Level::kWarning), 1u);
  EXPECT_EQ(scan.at_or_above(Level::kNote), 2u);
}

TEST(Sarif, RuleInAnExtensionAndMessageFromTheRulesStrings) {
  json document =
      sarif_with({{{"rule", {{"id", "EXT1"}, {"index", 0}, {"toolComponent", {{"index", 0}}}}},
                   {"message", {{"id", "default"}, {"arguments", {"strcpy", "main"}}}}}},
                 json::array());
  document["runs"][0]["tool"]["extensions"] = {
      {{"name", "rules-pack"},
       {"rules",
        {{{"id", "EXT1"},
          {"defaultConfiguration", {{"level", "error"}}},
          {"messageStrings", {{"default", {{"text", "{0} is unsafe in {1} {{really}}"}}}}}}}}}};
  const ScanFindings scan = parse(document);
  ASSERT_EQ(scan.findings.size(), 1u);
  EXPECT_EQ(scan.findings[0].rule_id, "EXT1");
  EXPECT_EQ(scan.findings[0].level, Level::kError);
  EXPECT_EQ(scan.findings[0].message, "strcpy is unsafe in main {really}");
}

TEST(Sarif, LocationsAreMadeRelativeToTheWorkspace) {
  const json results = {
      {{"ruleId", "a"},
       {"message", {{"text", "absolute uri"}}},
       {"locations",
        {{{"physicalLocation",
           {{"artifactLocation", {{"uri", "file:///workspace/src/my%20file.c"}}},
            {"region", {{"startLine", 12}}}}}}}}},
      {{"ruleId", "b"},
       {"message", {{"text", "by artifact index and base id"}}},
       {"locations",
        {{{"physicalLocation", {{"artifactLocation", {{"index", 0}, {"uriBaseId", "SRC"}}}}}}}}},
      {{"ruleId", "c"}, {"message", {{"text", "no location"}}}}};
  const json extra = {{"artifacts", {{{"location", {{"uri", "lib/x.c"}}}}}},
                      {"originalUriBaseIds", {{"SRC", {{"uri", "file:///workspace/"}}}}}};
  const ScanFindings scan = parse(sarif_with(results, json::array(), extra));
  ASSERT_EQ(scan.findings.size(), 3u);
  EXPECT_EQ(scan.findings[0].file, "src/my file.c");
  EXPECT_EQ(scan.findings[0].line, 12);
  EXPECT_EQ(scan.findings[1].file, "lib/x.c");
  EXPECT_FALSE(scan.findings[1].line);
  EXPECT_EQ(scan.findings[2].file, "");
}

TEST(Sarif, AcceptedSuppressionsAreNotCounted) {
  const json results = {{{"ruleId", "a"},
                         {"level", "error"},
                         {"message", {{"text", "suppressed"}}},
                         {"suppressions", {{{"kind", "inSource"}}}}},
                        {{"ruleId", "b"},
                         {"level", "error"},
                         {"message", {{"text", "under review"}}},
                         {"suppressions", {{{"kind", "external"}, {"status", "underReview"}}}}}};
  const ScanFindings scan = parse(sarif_with(results));
  EXPECT_EQ(scan.suppressed, 1u);
  ASSERT_EQ(scan.findings.size(), 1u);
  EXPECT_EQ(scan.findings[0].rule_id, "b");
}

TEST(Sarif, MalformedLogsNameTheFileAndWhere) {
  EXPECT_THAT(error_of("{\"version\": \"2.1.0\",\n \"runs\": [\n  {,}]}"),
              HasSubstr("out/scan.sarif is not valid JSON: parse error at line 3, column 4"));
  EXPECT_THAT(error_of(""), HasSubstr("out/scan.sarif is not valid JSON"));
  EXPECT_THAT(error_of(R"({"version": "2.0.0", "runs": []})"),
              HasSubstr("at $.version: must be \"2.1.0\""));
  EXPECT_THAT(error_of(R"({"version": "2.1.0"})"), HasSubstr("$.runs: is required"));
  EXPECT_THAT(error_of(R"([1, 2])"), HasSubstr("at $: must be an object"));
  EXPECT_THAT(
      error_of(
          R"({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "s"}}, "results": [{"message": "text"}]}]})"),
      HasSubstr("at $.runs[0].results[0].message: must be an object, not the string \"text\""));
  EXPECT_THAT(
      error_of(
          R"({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "s"}}, "results": [{"level": "critical", "message": {"text": "x"}}]}]})"),
      HasSubstr(
          "$.runs[0].results[0].level: must be \"none\", \"note\", \"warning\" or \"error\""));
  EXPECT_THAT(error_of(R"({"version": "2.1.0", "runs": [{"tool": {}}]})"),
              HasSubstr("$.runs[0].tool.driver: must be an object"));
}

TEST(Sarif, EmptyRunsAndNullResultsAreNoFindings) {
  EXPECT_TRUE(parse({{"version", "2.1.0"}, {"runs", json::array()}}).findings.empty());
  json document = sarif_with(json::array());
  document["runs"][0]["results"] = nullptr;
  EXPECT_TRUE(parse(document).findings.empty());
}

TEST(Sarif, DetailsListAtMostTheCapMostSevereFirst) {
  json results = json::array();
  for (int i = 0; i < 230; ++i) {
    results.push_back({{"ruleId", "n"}, {"level", "note"}, {"message", {{"text", "n"}}}});
  }
  results.push_back({{"ruleId", "e"}, {"level", "error"}, {"message", {{"text", "e"}}}});
  const ScanFindings scan = parse(sarif_with(results));
  const json details = to_details(scan, Level::kWarning, "out/scan.sarif");
  EXPECT_EQ(details["tool"], "Scanner");
  EXPECT_EQ(details["failOn"], "warning");
  EXPECT_EQ(details["total"], 231);
  EXPECT_EQ(details["counts"], json({{"error", 1}, {"warning", 0}, {"note", 230}, {"none", 0}}));
  EXPECT_EQ(details["sarif"], "out/scan.sarif");
  EXPECT_EQ(details["findings"].size(), kMaxListed);
  EXPECT_EQ(details["findingsOmitted"], 31);
  EXPECT_EQ(details["findings"][0]["ruleId"], "e");
  EXPECT_EQ(details["findings"][0]["level"], "error");
  EXPECT_TRUE(details["findings"][0]["line"].is_null());
}

}  // namespace
}  // namespace tamma::reports
