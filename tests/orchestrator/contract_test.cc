// The contract check itself (contract.h): that it finds what is wrong in an answer, so that the
// API tests passing means their answers conform, and not that nothing was checked.

#include <gtest/gtest-spi.h>

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

using contract::AnswerRecorder;
using contract::answer_problems;

AnsweredRequest answer(std::string method, std::string route, std::string path, unsigned status,
                       std::vector<std::pair<std::string, std::string>> headers,
                       std::string body) {
  AnsweredRequest a;
  a.method = std::move(method);
  a.route = std::move(route);
  a.path = std::move(path);
  a.status = status;
  a.headers = std::move(headers);
  a.body = std::move(body);
  return a;
}

const std::pair<std::string, std::string> kJson = {"Content-Type", "application/json"};

// A lease_lost answer as the server sends it.
AnsweredRequest lease_lost(bool with_state_header) {
  std::vector<std::pair<std::string, std::string>> headers = {kJson};
  if (with_state_header) headers.emplace_back("X-Tamma-Task-State", "cancelled");
  return answer("POST", "/api/v1/tasks/{id}/complete", "/api/v1/tasks/tsk_1/complete", 409,
                headers,
                R"({"error":{"code":"lease_lost","message":"gone","state":"cancelled","attempt":1}})");
}

// Whether some problem mentions `needle`; the problems are shown when none does.
::testing::AssertionResult reported(const AnsweredRequest& a, const std::string& needle) {
  auto problems = answer_problems(a);
  std::string all;
  for (const auto& p : problems) {
    if (p.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    all += "\n  " + p;
  }
  return ::testing::AssertionFailure()
         << "no problem mentions '" << needle << "' for " << contract::describe(a)
         << (all.empty() ? " (none at all)" : all);
}

TEST(Contract, ConformingAnswersHaveNoProblems) {
  EXPECT_TRUE(answer_problems(lease_lost(true)).empty());
  auto health = answer("GET", "/health", "/health", 200, {kJson}, R"({"status":"ok"})");
  EXPECT_TRUE(answer_problems(health).empty());
  // HEAD: GET's headers, no body.
  auto head = answer("HEAD", "/health", "/health", 200, {kJson}, "");
  EXPECT_TRUE(answer_problems(head).empty());
  auto allowed = answer("PUT", "unmatched", "/health", 405, {kJson, {"Allow", "GET, HEAD"}},
                        R"({"error":{"code":"method_not_allowed","message":"no"}})");
  EXPECT_TRUE(answer_problems(allowed).empty());
  auto no_content =
      answer("DELETE", "/api/v1/workers/{id}", "/api/v1/workers/wrk_1", 204, {}, "");
  EXPECT_TRUE(answer_problems(no_content).empty());
  auto logs = answer("GET", "/api/v1/tasks/{id}/logs", "/api/v1/tasks/tsk_1/logs", 200,
                     {{"Content-Type", "application/octet-stream"},
                      {"X-Tamma-Log-Length", "3"},
                      {"X-Tamma-Log-Attempt", "1"},
                      {"X-Tamma-Log-Open", "true"}},
                     "abc");
  EXPECT_TRUE(answer_problems(logs).empty());
  // A task's own error is no error answer; an artifact name is a relative path.
  auto view = answer(
      "GET", "/api/v1/tasks/{id}", "/api/v1/tasks/tsk_1", 200, {kJson},
      R"({"id":"tsk_1","type":"command","state":"failed","attempt":1,"maxRetries":3,)"
      R"("priority":0,"labels":{"arch":"x86_64"},"progress":{},"logLength":0,)"
      R"("artifacts":[{"name":"dist/app.tgz","attempt":1,"size":3,"sha256":"ab"}],)"
      R"("createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:00.000Z",)"
      R"("task":{"type":"command","steps":[]},"error":{"code":"boom","message":"it broke"}})");
  auto problems = answer_problems(view);
  EXPECT_TRUE(problems.empty()) << problems.front();
}

TEST(Contract, AnUndocumentedStatusIsReported) {
  auto teapot = answer("POST", "/api/v1/tasks/{id}/complete", "/api/v1/tasks/tsk_1/complete", 418,
                       {kJson}, R"({"error":{"code":"teapot","message":"short and stout"}})");
  EXPECT_TRUE(reported(teapot, "status 418 is not documented"));
  auto unrouted = answer("GET", "unmatched", "/x", 418, {kJson},
                         R"({"error":{"code":"not_found","message":"no"}})");
  EXPECT_TRUE(reported(unrouted, "x-unrouted-responses"));
}

TEST(Contract, AnUnknownOperationIsReported) {
  auto nope = answer("GET", "/api/v1/nope", "/api/v1/nope", 200, {kJson}, "{}");
  EXPECT_TRUE(reported(nope, "no path /api/v1/nope"));
  // HEAD exists only where GET does.
  auto head = answer("HEAD", "/api/v1/tasks/{id}/complete", "/api/v1/tasks/tsk_1/complete", 200,
                     {kJson}, "");
  EXPECT_TRUE(reported(head, "no operation GET"));
  // A 404 for an operation the spec has: the server lost a route, or the spec has one too many.
  auto lost = answer("GET", "unmatched", "/api/v1/tasks", 404, {kJson},
                     R"({"error":{"code":"not_found","message":"no"}})");
  EXPECT_TRUE(reported(lost, "which openapi.yaml documents"));
}

TEST(Contract, ABodyOutsideItsSchemaIsReported) {
  auto view = answer("GET", "/api/v1/tasks/{id}", "/api/v1/tasks/tsk_1", 200, {kJson},
                     R"({"id":1,"state":"sleeping","extra":true})");
  EXPECT_TRUE(reported(view, "$.id: 1 is not of type string"));
  EXPECT_TRUE(reported(view, "required member createdAt is missing"));
  EXPECT_TRUE(reported(view, "\"sleeping\" is not one of"));
  EXPECT_TRUE(reported(view, "$.extra: member is not documented"));
  auto not_json = answer("GET", "/api/v1/tasks/{id}", "/api/v1/tasks/tsk_1", 200, {kJson}, "{");
  EXPECT_TRUE(reported(not_json, "not JSON"));
  // Numbers, patterns, nested $refs.
  auto artifact = answer(
      "POST", "/api/v1/tasks/{id}/artifacts", "/api/v1/tasks/tsk_1/artifacts", 201,
      {kJson, {"X-Tamma-Task-State", "running"}},
      R"({"name":"../etc/passwd","attempt":0,"size":1,"sha256":"ab"})");
  EXPECT_TRUE(reported(artifact, "$.name"));
  EXPECT_TRUE(reported(artifact, "below the minimum"));
}

TEST(Contract, AWrongContentTypeIsReported) {
  auto text = answer("GET", "/health", "/health", 200, {{"Content-Type", "text/html"}},
                     R"({"status":"ok"})");
  EXPECT_TRUE(reported(text, "Content-Type text/html"));
  auto none = answer("GET", "/health", "/health", 200, {}, R"({"status":"ok"})");
  EXPECT_TRUE(reported(none, "no Content-Type"));
  auto typed_204 =
      answer("DELETE", "/api/v1/workers/{id}", "/api/v1/workers/wrk_1", 204, {kJson}, "");
  EXPECT_TRUE(reported(typed_204, "documents no content"));
}

TEST(Contract, AMissingOrWrongHeaderIsReported) {
  EXPECT_TRUE(reported(lease_lost(false), "required header X-Tamma-Task-State is missing"));
  auto bad_state = lease_lost(false);
  bad_state.headers.emplace_back("X-Tamma-Task-State", "on_fire");
  EXPECT_TRUE(reported(bad_state, "header X-Tamma-Task-State"));
  auto logs = answer("GET", "/api/v1/tasks/{id}/logs", "/api/v1/tasks/tsk_1/logs", 200,
                     {{"Content-Type", "application/octet-stream"},
                      {"X-Tamma-Log-Length", "three"},
                      {"X-Tamma-Log-Open", "true"}},
                     "abc");
  EXPECT_TRUE(reported(logs, "X-Tamma-Log-Attempt is missing"));
  EXPECT_TRUE(reported(logs, "header X-Tamma-Log-Length"));
  // Required for one error code only: the log append's 409 for a mismatch.
  auto mismatch = answer("POST", "/api/v1/tasks/{id}/logs", "/api/v1/tasks/tsk_1/logs", 409,
                         {kJson},
                         R"({"error":{"code":"log_mismatch","message":"differs","length":3}})");
  EXPECT_TRUE(reported(mismatch, "X-Tamma-Log-Length is missing"));
  auto no_allow = answer("PUT", "unmatched", "/health", 405, {kJson},
                         R"({"error":{"code":"method_not_allowed","message":"no"}})");
  EXPECT_TRUE(reported(no_allow, "required header Allow is missing"));
  auto wrong_allow = answer("PUT", "unmatched", "/health", 405, {kJson, {"Allow", "GET"}},
                            R"({"error":{"code":"method_not_allowed","message":"no"}})");
  EXPECT_TRUE(reported(wrong_allow, "differs from the documented methods"));
}

TEST(Contract, AnErrorCodeOutsideTheProtocolTableIsReported) {
  auto odd = answer("POST", "/api/v1/tasks/{id}/complete", "/api/v1/tasks/tsk_1/complete", 409,
                    {kJson, {"X-Tamma-Task-State", "running"}},
                    R"({"error":{"code":"brand_new","message":"?"}})");
  EXPECT_TRUE(reported(odd, "error code brand_new is not in protocol.md"));
  // A code documented, but for another status.
  auto moved = answer("POST", "/api/v1/tasks/{id}/complete", "/api/v1/tasks/tsk_1/complete", 404,
                      {kJson}, R"({"error":{"code":"lease_lost","message":"?"}})");
  EXPECT_TRUE(reported(moved, "error code lease_lost is not in protocol.md's error table"));
}

void record_and_report(const AnsweredRequest& a) {
  AnswerRecorder recorder;
  recorder.record(lease_lost(true));  // conforming: not reported
  recorder.record(a);
  EXPECT_EQ(recorder.report_nonconforming(), 1);
}

TEST(Contract, TheRecorderReportsEachNonConformingAnswerAsATestFailure) {
  auto teapot = answer("POST", "/api/v1/tasks/{id}/complete", "/api/v1/tasks/tsk_1/complete", 418,
                       {kJson}, R"({"error":{"code":"teapot","message":"short and stout"}})");
  EXPECT_NONFATAL_FAILURE(record_and_report(teapot),
                          "POST /api/v1/tasks/tsk_1/complete (route /api/v1/tasks/{id}/complete)"
                          " -> 418");
  EXPECT_NONFATAL_FAILURE(record_and_report(lease_lost(false)), "X-Tamma-Task-State");
  auto view = answer("GET", "/api/v1/tasks/{id}", "/api/v1/tasks/tsk_1", 200, {kJson},
                     R"({"id":"tsk_1"})");
  EXPECT_NONFATAL_FAILURE(record_and_report(view), "required member state is missing");
}

// A TestServer checks its answers when it goes: a non-conforming one fails the test.
void server_with_a_bad_answer() {
  TestServer server;
  EXPECT_EQ(server.anonymous()->get("/health").status, 200);
  server.answers().record(lease_lost(false));
}

TEST(Contract, TheTestServerRecordsEveryAnswerAndReportsTheBadOnes) {
  {
    TestServer server;
    auto admin = server.admin();
    EXPECT_EQ(admin->get("/api/v1/tasks").status, 200);
    EXPECT_EQ(admin->get("/api/v1/nope").status, 404);
    EXPECT_EQ(server.anonymous()->get("/api/v1/tasks").status, 401);
    auto seen = server.answers().answers();
    ASSERT_EQ(seen.size(), 3u);
    EXPECT_EQ(seen[0].route, "/api/v1/tasks");
    EXPECT_EQ(seen[0].status, 200u);
    EXPECT_EQ(seen[1].route, "unmatched");
    EXPECT_EQ(seen[2].status, 401u);
  }
  EXPECT_NONFATAL_FAILURE(server_with_a_bad_answer(), "X-Tamma-Task-State");
}

}  // namespace
}  // namespace tamma::orchestrator::testing
