// The egress fields of a result (issue 15): present only for tasks that had an allow-list, so
// every other result keeps its shape.
#include <gtest/gtest.h>

#include "protocol/task_result.h"

namespace tamma::protocol {
namespace {

using nlohmann::json;

TEST(TaskResultEgress, OnlyResultsWithEgressHaveTheFields) {
  TaskResult plain;
  const json without = to_json(plain);
  EXPECT_FALSE(without["usage"].contains("egress"));
  EXPECT_FALSE(without.contains("egressRefused"));
  EXPECT_FALSE(without.contains("egressRefusedDropped"));

  TaskResult result;
  result.usage.egress.push_back({"registry.npmjs.org:443", 812, 1048576, 3});
  result.egress_refused.push_back(
      {"evil.example:443", "not in the task's allow-list", "connect", "2026-01-02T03:04:05.678Z"});
  result.egress_refused_dropped = 7;
  const json with = to_json(result);
  EXPECT_EQ(with["usage"]["egress"],
            json::parse(R"([{"destination": "registry.npmjs.org:443", "bytesOut": 812,
                             "bytesIn": 1048576, "connections": 3}])"));
  EXPECT_EQ(with["egressRefused"], json::parse(R"([{"destination": "evil.example:443",
                             "reason": "not in the task's allow-list", "protocol": "connect",
                             "at": "2026-01-02T03:04:05.678Z"}])"));
  EXPECT_EQ(with["egressRefusedDropped"], 7);
  // A step's usage never carries it (the proxy serves the whole task).
  StepResult step;
  result.steps.push_back(step);
  EXPECT_FALSE(to_json(result)["steps"][0]["usage"].contains("egress"));
}

}  // namespace
}  // namespace tamma::protocol
