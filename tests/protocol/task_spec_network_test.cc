// "network": {"allow": [...]} in the task spec (issue 15): what is accepted, how it is written
// back, and every refusal naming its JSON path.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "protocol/task_spec.h"

namespace tamma::protocol {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

json with_network(json network) {
  return {{"type", "command"}, {"steps", {{{"run", "true"}}}}, {"network", std::move(network)}};
}

void expect_problem(const json& document, const std::string& path, const std::string& text) {
  const auto outcome = parse_task_spec(document);
  EXPECT_FALSE(outcome.spec.has_value());
  ASSERT_THAT(outcome.problems, SizeIs(1)) << document.dump();
  EXPECT_EQ(outcome.problems[0].path, path) << outcome.problems[0].message;
  EXPECT_THAT(outcome.problems[0].message, HasSubstr(text)) << document.dump();
}

TEST(TaskSpecNetwork, AllowListIsReadNormalisedAndWrittenBack) {
  const auto outcome = parse_task_spec(
      with_network({{"allow",
                     {"Registry.NPMJS.org.:443", "*.githubusercontent.com:443", "10.0.0.5:5432",
                      "[2001:db8::5]:8443", "registry.npmjs.org:443"}}}));
  ASSERT_TRUE(outcome.spec) << outcome.problems.front().path << outcome.problems.front().message;
  const TaskSpec& spec = *outcome.spec;
  EXPECT_EQ(spec.network, NetworkMode::kAllowList);
  std::vector<std::string> texts;
  for (const auto& d : spec.network_allow) texts.push_back(d.text());
  // The duplicate (same name, other case and a trailing dot) is listed once.
  EXPECT_THAT(texts, ElementsAre("registry.npmjs.org:443", "*.githubusercontent.com:443",
                                 "10.0.0.5:5432", "[2001:db8::5]:8443"));
  const json back = to_json(spec);
  EXPECT_EQ(back["network"], json({{"allow", texts}}));
  // What to_json writes parses to the same spec (the daemon forwards it).
  const auto again = parse_task_spec(back);
  ASSERT_TRUE(again.spec);
  EXPECT_EQ(again.spec->network_allow, spec.network_allow);
}

TEST(TaskSpecNetwork, NoneAndHostStillMeanWhatTheyDid) {
  EXPECT_EQ(parse_task_spec(with_network("none")).spec->network, NetworkMode::kNone);
  EXPECT_EQ(parse_task_spec(with_network("host")).spec->network, NetworkMode::kHost);
  expect_problem(with_network("bridge"), "$.network", "{\"allow\"");
  expect_problem(with_network(json::array()), "$.network", "must be");
}

TEST(TaskSpecNetwork, EveryBadEntryIsNamedByItsPath) {
  const auto outcome = parse_task_spec(
      with_network({{"allow",
                     {"ok.example.com:443", "no-port.example.com", "x.com:0", "x.com:65536", 443,
                      "https://x.com:443", "*.com:443", "a.*.x.com:443", "x.com:*", "::1:80",
                      "bad_ name:1", "127.1:80", "-lead.com:80"}}}));
  EXPECT_FALSE(outcome.spec);
  std::vector<std::string> paths;
  for (const auto& p : outcome.problems) paths.push_back(p.path);
  EXPECT_THAT(paths,
              ElementsAre("$.network.allow[1]", "$.network.allow[2]", "$.network.allow[3]",
                          "$.network.allow[4]", "$.network.allow[5]", "$.network.allow[6]",
                          "$.network.allow[7]", "$.network.allow[8]", "$.network.allow[9]",
                          "$.network.allow[10]", "$.network.allow[11]", "$.network.allow[12]"));
  EXPECT_THAT(outcome.problems[0].message, HasSubstr("has no port"));
  EXPECT_THAT(outcome.problems[5].message, HasSubstr("two labels"));
  EXPECT_THAT(outcome.problems[7].message, HasSubstr("one port"));
}

TEST(TaskSpecNetwork, ShapeOfTheObjectIsChecked) {
  expect_problem(with_network(json::object()), "$.network.allow", "is required");
  expect_problem(with_network({{"allow", json::array()}}), "$.network.allow", "\"none\"");
  expect_problem(with_network({{"allow", "x.com:443"}}), "$.network.allow", "array");
  const auto extra = parse_task_spec(with_network({{"allow", {"x.com:443"}}, {"deny", {"y:1"}}}));
  ASSERT_THAT(extra.problems, SizeIs(1));
  EXPECT_EQ(extra.problems[0].path, "$.network.deny");
}

TEST(TaskSpecNetwork, ListAndEntriesAreBounded) {
  json many = json::array();
  for (int i = 0; i < 257; ++i) {
    std::string host = "h";  // appended: `"h" + std::to_string(i)` trips GCC 12's -Wrestrict
    host += std::to_string(i);
    host += ".example.com:443";
    many.push_back(host);
  }
  expect_problem(with_network({{"allow", many}}), "$.network.allow", "at most 256");
  const std::string long_name = std::string(300, 'a') + ".com:443";
  expect_problem(with_network({{"allow", {long_name}}}), "$.network.allow[0]", "at most 270");
  // Control characters are quoted, never echoed raw into a terminal or log.
  const auto outcome = parse_task_spec(with_network({{"allow", {"x\x1b[31m.com:443"}}}));
  ASSERT_THAT(outcome.problems, SizeIs(1));
  EXPECT_THAT(outcome.problems[0].message, HasSubstr("\\x1b"));
}

}  // namespace
}  // namespace tamma::protocol
