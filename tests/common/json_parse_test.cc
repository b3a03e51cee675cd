// parse_json_text: the one door JSON from outside comes through.

#include "common/json_parse.h"

#include <gtest/gtest.h>

namespace tamma {
namespace {

JsonTextError refusal(std::string_view text, const JsonLimits& limits = {}) {
  try {
    parse_json_text(text, limits);
  } catch (const JsonTextError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << text.substr(0, 80);
  return JsonTextError("", 0, "");
}

TEST(JsonParse, NestingBeyondTheLimitIsRefusedBeforeAnythingRecursiveRuns) {
  // 100,000 levels crashed the orchestrator through nlohmann's recursive copies.
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto e = refusal(deep);
  EXPECT_NE(std::string(e.what()).find("nested deeper than 128"), std::string::npos) << e.what();
  EXPECT_EQ(e.field().rfind("$[0][0]", 0), 0u) << e.field();

  std::string at_limit = std::string(128, '[') + std::string(128, ']');
  EXPECT_NO_THROW(parse_json_text(at_limit));
  std::string over = std::string(129, '[') + std::string(129, ']');
  EXPECT_THROW(parse_json_text(over), JsonTextError);
  EXPECT_NO_THROW(parse_json_text(over, {.max_depth = 200}));

  auto objects = refusal(R"({"a":{"b":[1,{"c":)" + std::string(200, '[') + "}]}}");
  EXPECT_EQ(objects.field().rfind("$.a.b[1].c", 0), 0u) << objects.field();
}

TEST(JsonParse, DuplicateMembersAreRefusedNamingThePath) {
  auto e = refusal(R"({"result":{"status":"failed","status":"succeeded"}})");
  EXPECT_EQ(e.field(), "$.result.status");
  EXPECT_EQ(e.reason(), "the member appears more than once");
  EXPECT_EQ(std::string(e.what()), "$.result.status: the member appears more than once");
  // The same name in different objects is fine.
  EXPECT_NO_THROW(parse_json_text(R"({"a":{"x":1},"b":{"x":2},"c":[{"x":1},{"x":2}]})"));
  auto odd = refusal(R"({"a b":1,"a b":2})");
  EXPECT_EQ(odd.field(), R"($["a b"])");
}

TEST(JsonParse, NumbersBeyondADoubleAndSyntaxErrorsNameWhere) {
  auto big = refusal(R"({"task":{"x":1},"priority":1e400})");
  EXPECT_EQ(big.field(), "$.priority");
  EXPECT_NE(std::string(big.what()).find("number overflow"), std::string::npos) << big.what();
  // Inside an array the path names the array (the failing element was never read).
  auto in_array = refusal(R"({"a":[1,2,-1e999]})");
  EXPECT_EQ(in_array.field().rfind("$.a", 0), 0u) << in_array.field();

  auto syntax = refusal(R"({"a": tru})");
  EXPECT_GT(syntax.offset(), 0u);
  EXPECT_NE(std::string(syntax.what()).find("syntax error"), std::string::npos);
  EXPECT_EQ(std::string(syntax.what()).find("json.exception"), std::string::npos)
      << "nlohmann's tag is not for users";
}

TEST(JsonParse, TheSizeLimitIsCheckedFirst) {
  std::string text = "[" + std::string(100, ' ') + "]";
  auto e = refusal(text, {.max_bytes = 50});
  EXPECT_EQ(e.field(), "$");
  EXPECT_NE(std::string(e.what()).find("at most 50"), std::string::npos);
  EXPECT_EQ(parse_json_text(R"({"a":[1,"x",null]})")["a"][1], "x");
}

}  // namespace
}  // namespace tamma
