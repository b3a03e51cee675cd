#include "protocol/task_result.h"

#include <signal.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"

namespace tamma::protocol {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::SizeIs;

TaskResult sample_result() {
  TaskResult r;
  r.task_id = "t-1";
  r.type = "command";
  r.status = TaskStatus::kLimitExceeded;
  r.signal = SIGKILL;
  r.duration_ms = 1234;
  r.limit = LimitKind::kMemory;
  StepResult s;
  s.name = "build";
  s.status = TaskStatus::kLimitExceeded;
  s.signal = SIGKILL;
  s.duration_ms = 1200;
  s.limit = LimitKind::kMemory;
  s.stdout_capture = {"out\n", 10, 6};
  s.stderr_capture = {"err\n", 4, 0};
  s.usage.peak_memory_bytes = 1 << 20;
  s.usage.cpu_user_ms = 30;
  s.usage.cpu_system_ms = 12;
  s.usage.oom_kills = 1;
  r.steps.push_back(s);
  r.usage = s.usage;
  r.usage.disk_bytes = 4096;
  r.usage.pids_limit_hits = 2;
  r.usage.cpu_throttled_ms = 7;
  r.usage.network_unreachable = 5;
  r.usage.exact = false;
  r.artifacts.push_back({"dist/out.txt", 9, std::string(64, 'a')});
  r.error = TaskError{"memory_limit", "the task ran out of memory", false};
  r.degradations = {"seccomp unavailable"};
  r.hints = {"the task has no network"};
  r.details = {{"tests", 3}};
  return r;
}

TEST(TaskStatusNames, RoundTrip) {
  for (auto status : {TaskStatus::kSucceeded, TaskStatus::kFailed, TaskStatus::kTimeout,
                      TaskStatus::kLimitExceeded, TaskStatus::kCancelled, TaskStatus::kError}) {
    EXPECT_EQ(task_status_from_string(to_string(status)), status);
  }
  EXPECT_EQ(to_string(TaskStatus::kLimitExceeded), "limit_exceeded");
  EXPECT_FALSE(task_status_from_string("Succeeded"));
  EXPECT_FALSE(task_status_from_string(""));
}

TEST(LimitKindNames, AreTheDocumentedOnes) {
  EXPECT_EQ(to_string(LimitKind::kNone), "none");
  EXPECT_EQ(to_string(LimitKind::kMemory), "memory");
  EXPECT_EQ(to_string(LimitKind::kPids), "pids");
  EXPECT_EQ(to_string(LimitKind::kDisk), "disk");
  EXPECT_EQ(to_string(LimitKind::kOutput), "output");
  EXPECT_EQ(to_string(LimitKind::kCpu), "cpu");
}

TEST(TaskResultJson, HasTheDocumentedShape) {
  const json out = to_json(sample_result());
  EXPECT_EQ(out["taskId"], "t-1");
  EXPECT_EQ(out["type"], "command");
  EXPECT_EQ(out["status"], "limit_exceeded");
  EXPECT_TRUE(out["exitCode"].is_null());
  EXPECT_EQ(out["signal"], SIGKILL);
  EXPECT_EQ(out["signalName"], "SIGKILL");
  EXPECT_EQ(out["durationMs"], 1234);
  EXPECT_EQ(out["limit"], "memory");
  EXPECT_EQ(out["usage"], json::parse(R"({"peakMemoryBytes": 1048576, "cpuUserMs": 30,
      "cpuSystemMs": 12, "cpuMs": 42, "diskBytes": 4096, "oomKills": 1, "pidsLimitHits": 2,
      "cpuThrottledMs": 7, "networkUnreachable": 5, "exact": false})"));
  ASSERT_THAT(out["steps"], SizeIs(1));
  const json& step = out["steps"][0];
  EXPECT_EQ(step["name"], "build");
  EXPECT_EQ(step["status"], "limit_exceeded");
  EXPECT_TRUE(step["exitCode"].is_null());
  EXPECT_EQ(step["signal"], SIGKILL);
  EXPECT_EQ(step["signalName"], "SIGKILL");
  EXPECT_EQ(step["durationMs"], 1200);
  EXPECT_EQ(step["limit"], "memory");
  EXPECT_EQ(step["stdout"], "out\n");
  EXPECT_EQ(step["stderr"], "err\n");
  EXPECT_EQ(step["stdoutBytes"], 10);
  EXPECT_EQ(step["stderrBytes"], 4);
  EXPECT_EQ(step["stdoutDropped"], 6);
  EXPECT_EQ(step["stderrDropped"], 0);
  EXPECT_EQ(step["usage"]["cpuMs"], 42);
  EXPECT_EQ(out["artifacts"], json::parse(R"([{"path": "dist/out.txt", "size": 9, "sha256": ")" +
                                          std::string(64, 'a') + R"("}])"));
  EXPECT_EQ(out["error"], json::parse(R"({"code": "memory_limit",
      "message": "the task ran out of memory", "retryable": false})"));
  EXPECT_EQ(out["degradations"], json({"seccomp unavailable"}));
  EXPECT_EQ(out["hints"], json({"the task has no network"}));
  EXPECT_EQ(out["usage"]["networkUnreachable"], 5);
  EXPECT_EQ(out["details"], json({{"tests", 3}}));
}

TEST(TaskResultJson, AbsentValuesAreNull) {
  TaskResult r;
  r.exit_code = 0;
  const json out = to_json(r);
  EXPECT_EQ(out["status"], "succeeded");
  EXPECT_EQ(out["exitCode"], 0);
  EXPECT_TRUE(out["signal"].is_null());
  EXPECT_TRUE(out["signalName"].is_null());
  EXPECT_TRUE(out["limit"].is_null());
  EXPECT_TRUE(out["error"].is_null());
  EXPECT_TRUE(out["details"].is_null());
  EXPECT_EQ(out["steps"], json::array());
  EXPECT_EQ(out["artifacts"], json::array());
  EXPECT_EQ(out["degradations"], json::array());
}

TEST(TaskResultJson, SignalNames) {
  TaskResult r;
  for (auto [number, name] : std::vector<std::pair<int, std::string>>{
           {SIGTERM, "SIGTERM"}, {SIGSEGV, "SIGSEGV"}, {SIGXCPU, "SIGXCPU"}}) {
    r.signal = number;
    EXPECT_EQ(to_json(r)["signalName"], name);
  }
  r.signal = SIGRTMIN + 2;
  EXPECT_EQ(to_json(r)["signalName"], "SIGRTMIN+2");
}

TEST(TaskResultJson, InvalidUtf8InOutputIsReplacedSoTheDocumentSerializes) {
  TaskResult r;
  StepResult s;
  s.stdout_capture.text = "ok \xff\xfe end \xc3\xa9 \xe2\x82";
  r.steps.push_back(s);
  const json out = to_json(r);
  EXPECT_NO_THROW(out.dump());
  EXPECT_EQ(out["steps"][0]["stdout"],
            "ok \xEF\xBF\xBD\xEF\xBF\xBD end \xc3\xa9 \xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TaskResultFromJson, ReadsWhatToJsonWrites) {
  const TaskResult original = sample_result();
  const TaskResult read = task_result_from_json(to_json(original));
  EXPECT_EQ(read.task_id, original.task_id);
  EXPECT_EQ(read.type, original.type);
  EXPECT_EQ(read.status, original.status);
  EXPECT_EQ(read.exit_code, original.exit_code);
  EXPECT_EQ(read.signal, original.signal);
  EXPECT_EQ(read.duration_ms, original.duration_ms);
  EXPECT_EQ(read.limit, original.limit);
  ASSERT_THAT(read.steps, SizeIs(1));
  EXPECT_EQ(read.steps[0].name, "build");
  EXPECT_EQ(read.steps[0].limit, LimitKind::kMemory);
  EXPECT_EQ(read.steps[0].stdout_capture.total_bytes, 10U);
  EXPECT_EQ(read.steps[0].stdout_capture.dropped_bytes, 6U);
  EXPECT_EQ(read.steps[0].usage.oom_kills, 1U);
  EXPECT_EQ(read.usage.exact, false);
  EXPECT_EQ(read.usage.cpu_throttled_ms, 7U);
  ASSERT_THAT(read.artifacts, SizeIs(1));
  EXPECT_EQ(read.artifacts[0].sha256, std::string(64, 'a'));
  ASSERT_TRUE(read.error);
  EXPECT_EQ(read.error->code, "memory_limit");
  EXPECT_EQ(read.degradations, original.degradations);
  EXPECT_EQ(read.hints, original.hints);
  EXPECT_EQ(read.usage.network_unreachable, 5U);
  EXPECT_EQ(read.details, original.details);
  EXPECT_EQ(to_json(read), to_json(original));
}

TEST(TaskResultFromJson, ALinkArtifactKeepsItsTargetBothWays) {
  protocol::TaskResult r;
  r.artifacts.push_back({"lib/libz.so", 0, std::string(64, 'b'), "libz.so.1.3"});
  r.artifacts.push_back({"lib/libz.so.1.3", 5, std::string(64, 'c'), ""});
  const json out = to_json(r);
  EXPECT_EQ(out["artifacts"][0]["link"], "libz.so.1.3");
  EXPECT_FALSE(out["artifacts"][1].contains("link")) << "a file has no link member";
  const auto read = task_result_from_json(out);
  ASSERT_THAT(read.artifacts, SizeIs(2));
  EXPECT_EQ(read.artifacts[0].link, "libz.so.1.3");
  EXPECT_EQ(read.artifacts[1].link, "");
  EXPECT_FALSE(artifact_link_problem("lib/sub/a.so", "../../b.so"));
  EXPECT_TRUE(artifact_link_problem("lib/sub/a.so", "../../../b.so"));
  EXPECT_TRUE(artifact_link_problem("a.so", "x/\n"));
}

TEST(TaskResultFromJson, OnlyStatusIsRequired) {
  const TaskResult r = task_result_from_json({{"status", "failed"}});
  EXPECT_EQ(r.status, TaskStatus::kFailed);
  EXPECT_FALSE(r.exit_code);
  EXPECT_TRUE(r.steps.empty());
  EXPECT_EQ(r.limit, LimitKind::kNone);
  EXPECT_FALSE(r.error);
  EXPECT_TRUE(r.details.is_null());
}

TEST(TaskResultFromJson, HandlerStepsDefaultTheirNameAndByteCounts) {
  const TaskResult r = task_result_from_json(json::parse(
      R"({"status": "succeeded", "durationMs": 12.0,
          "steps": [{"status": "succeeded", "stdout": "abc"}]})"));
  EXPECT_EQ(r.duration_ms, 12);
  ASSERT_THAT(r.steps, SizeIs(1));
  EXPECT_EQ(r.steps[0].name, "step-1");
  EXPECT_EQ(r.steps[0].stdout_capture.total_bytes, 3U);
}

std::string from_json_error(const json& document) {
  try {
    task_result_from_json(document);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInfrastructure);
    EXPECT_EQ(e.code(), "invalid_handler_result");
    return e.what();
  }
  ADD_FAILURE() << "accepted " << document.dump();
  return "";
}

TEST(TaskResultFromJson, RejectsMalformedDocumentsNamingThePath) {
  EXPECT_THAT(from_json_error(json::array()), HasSubstr("$: must be a JSON object"));
  EXPECT_THAT(from_json_error(json::object()), HasSubstr("$.status: is required"));
  EXPECT_THAT(from_json_error({{"status", "ok"}}), HasSubstr("$.status: must be one of"));
  EXPECT_THAT(from_json_error({{"status", 0}}), HasSubstr("$.status: must be one of"));

  const json base = {{"status", "failed"}};
  auto with = [&](const char* key, const json& value) {
    json d = base;
    d[key] = value;
    return from_json_error(d);
  };
  EXPECT_THAT(with("taskId", 5), HasSubstr("$.taskId: must be a string"));
  EXPECT_THAT(with("type", false), HasSubstr("$.type: must be a string"));
  EXPECT_THAT(with("exitCode", "1"), HasSubstr("$.exitCode: must be an integer or null"));
  EXPECT_THAT(with("exitCode", 1.5), HasSubstr("$.exitCode: must be an integer or null"));
  EXPECT_THAT(with("exitCode", 1LL << 40), HasSubstr("$.exitCode: must be an integer or null"));
  EXPECT_THAT(with("exitCode", json::parse("18446744073709551615")),
              HasSubstr("$.exitCode: must be an integer or null"));
  EXPECT_THAT(with("signal", 0), HasSubstr("$.signal: 0 is not a signal number"));
  EXPECT_THAT(with("signal", 999), HasSubstr("$.signal: 999 is not a signal number"));
  EXPECT_THAT(with("durationMs", -1), HasSubstr("$.durationMs: must be a non-negative"));
  EXPECT_THAT(with("limit", "gpu"), HasSubstr("$.limit: must be null or one of"));
  EXPECT_THAT(with("usage", 3), HasSubstr("$.usage: must be an object"));
  EXPECT_THAT(with("usage", {{"peakMemoryBytes", "1G"}}),
              HasSubstr("$.usage.peakMemoryBytes: must be a non-negative whole number"));
  EXPECT_THAT(with("usage", {{"exact", "yes"}}), HasSubstr("$.usage.exact: must be true or false"));
  EXPECT_THAT(with("steps", {{"name", "x"}}), HasSubstr("$.steps: must be an array"));
  EXPECT_THAT(with("steps", {"x"}), HasSubstr("$.steps[0]: must be an object"));
  EXPECT_THAT(with("steps", json::parse(R"([{"status": "succeeded"}, {"name": "b"}])")),
              HasSubstr("$.steps[1].status: is required"));
  EXPECT_THAT(with("steps", json::parse(R"([{"status": "failed", "exitCode": "2"}])")),
              HasSubstr("$.steps[0].exitCode: must be an integer or null"));
  EXPECT_THAT(with("steps", json::parse(R"([{"status": "failed", "stdoutBytes": -4}])")),
              HasSubstr("$.steps[0].stdoutBytes: must be a non-negative whole number"));
  EXPECT_THAT(with("artifacts", json::parse(R"([{"size": 1}])")),
              HasSubstr("$.artifacts[0].path: is required"));
  EXPECT_THAT(with("artifacts", json::parse(R"([{"path": "a", "sha256": "xyz"}])")),
              HasSubstr("$.artifacts[0].sha256: must be 64 lowercase hexadecimal digits"));
  EXPECT_THAT(with("artifacts", json::parse(R"(["a"])")),
              HasSubstr("$.artifacts[0]: must be an object"));
  EXPECT_THAT(with("artifacts", json::parse(R"([{"path": "lib/a.so", "link": "/etc/passwd"}])")),
              HasSubstr("$.artifacts[0].link: \"/etc/passwd\" is absolute"));
  EXPECT_THAT(with("artifacts", json::parse(R"([{"path": "lib/a.so", "link": "../../x"}])")),
              HasSubstr("$.artifacts[0].link: \"../../x\" leads out of the workspace"));
  EXPECT_THAT(with("artifacts", json::parse(R"([{"path": "a", "link": ""}])")),
              HasSubstr("$.artifacts[0].link: must not be empty"));
  EXPECT_THAT(with("artifacts", json::parse(R"([{"path": "a", "link": 3}])")),
              HasSubstr("$.artifacts[0].link: must be a string"));
  EXPECT_THAT(with("error", "boom"), HasSubstr("$.error: must be null or an object"));
  EXPECT_THAT(with("error", {{"message", "m"}}), HasSubstr("$.error.code: is required"));
  EXPECT_THAT(with("error", {{"code", "c"}, {"retryable", 1}}),
              HasSubstr("$.error.retryable: must be true or false"));
  EXPECT_THAT(with("degradations", {1}), HasSubstr("$.degradations[0]: must be a string"));
  EXPECT_THAT(with("hints", json::array({1})), HasSubstr("$.hints[0]: must be a string"));
}

TEST(TaskResultFromJson, ListsEveryProblem) {
  const std::string message =
      from_json_error(json::parse(R"({"exitCode": "x", "steps": [{"status": 1}]})"));
  EXPECT_THAT(message, HasSubstr("\n  $.status: is required"));
  EXPECT_THAT(message, HasSubstr("\n  $.exitCode: must be"));
  EXPECT_THAT(message, HasSubstr("\n  $.steps[0].status: must be one of"));
}

}  // namespace
}  // namespace tamma::protocol
