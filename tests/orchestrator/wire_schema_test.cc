// Keeps the four descriptions of the protocol in step: docs/openapi.yaml (the schema),
// docs/protocol.d.ts (TypeScript), src/protocol/wire.h (C++), and what the server really sends.

#include <algorithm>
#include <filesystem>
#include <regex>
#include <set>

#include "orchestrator_fixture.h"
#include "protocol/wire.h"

namespace tamma::orchestrator::testing {
namespace {

namespace w = tamma::protocol::wire;

const std::filesystem::path kDocs = std::filesystem::path(TAMMA_SOURCE_DIR) / "docs";

using contract::openapi;
using contract::schemas;

struct TsInterface {
  std::map<std::string, bool> properties;  // name -> optional
};

// A small reader for the subset of TypeScript the .d.ts uses: interfaces with one property a
// line, and type aliases of string-literal unions.
std::map<std::string, TsInterface> ts_interfaces(const std::string& text) {
  std::map<std::string, TsInterface> out;
  std::regex block(R"(export interface (\w+) \{([^}]*)\})");
  std::regex property(R"(^\s+(\w+)(\??):\s*[^;]+;\s*$)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), block);
       it != std::sregex_iterator(); ++it) {
    TsInterface iface;
    std::istringstream lines((*it)[2].str());
    std::string line;
    while (std::getline(lines, line)) {
      std::smatch m;
      if (std::regex_match(line, m, property)) iface.properties[m[1]] = m[2] == "?";
    }
    out[(*it)[1]] = iface;
  }
  return out;
}

std::map<std::string, std::set<std::string>> ts_unions(const std::string& text) {
  std::map<std::string, std::set<std::string>> out;
  std::regex alias(R"(export type (\w+) = ([^;]+);)");
  std::regex literal(R"x("([^"]*)")x");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), alias);
       it != std::sregex_iterator(); ++it) {
    std::string body = (*it)[2];
    std::set<std::string> values;
    for (auto l = std::sregex_iterator(body.begin(), body.end(), literal);
         l != std::sregex_iterator(); ++l) {
      values.insert((*l)[1]);
    }
    out[(*it)[1]] = values;
  }
  return out;
}

TEST(WireSchema, EveryOpenApiSchemaHasAMatchingTypeScriptDeclaration) {
  std::string dts = tamma::testing::read_file(kDocs / "protocol.d.ts");
  auto interfaces = ts_interfaces(dts);
  auto unions = ts_unions(dts);
  int checked = 0;
  for (const auto& [name, schema] : schemas().items()) {
    if (schema.contains("properties")) {
      ASSERT_TRUE(interfaces.count(name)) << "protocol.d.ts has no interface " << name;
      const auto& iface = interfaces.at(name);
      std::set<std::string> required;
      for (const auto& r : schema.value("required", json::array())) required.insert(r);
      std::set<std::string> schema_props;
      for (const auto& [prop, _] : schema["properties"].items()) {
        schema_props.insert(prop);
        ASSERT_TRUE(iface.properties.count(prop)) << name << "." << prop << " missing in .d.ts";
        EXPECT_EQ(iface.properties.at(prop), required.count(prop) == 0)
            << name << "." << prop << ": optional in one, required in the other";
      }
      for (const auto& [prop, _] : iface.properties) {
        EXPECT_TRUE(schema_props.count(prop)) << name << "." << prop << " is only in the .d.ts";
      }
    } else if (schema.contains("enum")) {
      ASSERT_TRUE(unions.count(name)) << "protocol.d.ts has no type " << name;
      std::set<std::string> values(schema["enum"].begin(), schema["enum"].end());
      EXPECT_EQ(unions.at(name), values) << name;
    }
    ++checked;
  }
  EXPECT_GE(checked, 30);
  // And nothing in the .d.ts that the schema lacks.
  for (const auto& [name, _] : interfaces) EXPECT_TRUE(schemas().contains(name)) << name;
}

TEST(WireSchema, EveryReferenceResolvesAndEveryPathIsDocumentedInProse) {
  std::string text = openapi().dump();
  std::regex ref(R"x("\$ref":"([^"]*)")x");
  int refs = 0;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), ref); it != std::sregex_iterator();
       ++it, ++refs) {
    EXPECT_NO_THROW(contract::resolve((*it)[1].str())) << "dangling $ref " << (*it)[1];
  }
  EXPECT_GE(refs, 100);
  std::string prose = tamma::testing::read_file(kDocs / "protocol.md");
  for (const auto& [path, _] : openapi()["paths"].items()) {
    EXPECT_NE(prose.find(path), std::string::npos) << path << " is not in protocol.md";
  }
}

// Every error code the server's sources answer with is in protocol.md's table, under each status
// it is answered with. (The contract test checks the codes really answered; this catches the ones
// no test provokes.)
TEST(WireSchema, EveryErrorCodeInTheServerSourcesIsInTheProtocolTable) {
  const auto& table = contract::documented_error_codes();
  std::regex with_status(R"x((?:HttpError|refuse|refusal)\(([^";]*?)"([a-z_]+)")x");
  std::regex status(R"(\b([1-5]\d\d)\b)");
  std::regex code_only(R"x((?:code = |ErrorBody \w+\{)"([a-z_]+)")x");
  int found = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(TAMMA_SOURCE_DIR) / "src" /
                                           "orchestrator")) {
    const auto name = entry.path().filename().string();
    // The admin CLI and the HTTP client are clients: their codes are never answered.
    if (entry.path().extension() != ".cc" || name == "admin_cli.cc" || name == "http_client.cc" ||
        name == "main.cc") {
      continue;
    }
    std::string text = tamma::testing::read_file(entry.path());
    for (auto it = std::sregex_iterator(text.begin(), text.end(), with_status);
         it != std::sregex_iterator(); ++it) {
      std::string statuses = (*it)[1];
      std::string code = (*it)[2];
      for (auto s = std::sregex_iterator(statuses.begin(), statuses.end(), status);
           s != std::sregex_iterator(); ++s, ++found) {
        unsigned number = static_cast<unsigned>(std::stoul((*s)[1]));
        EXPECT_TRUE(table.count(number) && table.at(number).count(code))
            << name << " answers " << number << " " << code << ", not in protocol.md's table";
      }
    }
    for (auto it = std::sregex_iterator(text.begin(), text.end(), code_only);
         it != std::sregex_iterator(); ++it, ++found) {
      std::string code = (*it)[1];
      bool listed = std::any_of(table.begin(), table.end(),
                                [&](const auto& row) { return row.second.count(code) > 0; });
      EXPECT_TRUE(listed) << name << " answers " << code << ", not in protocol.md's table";
    }
  }
  EXPECT_GE(found, 25);
}

// The answers every operation can get whatever it does: documented on each one.
TEST(WireSchema, EveryOperationDocumentsTheAnswersTheHttpLayerGives) {
  int operations = 0;
  for (const auto& [path, item] : openapi()["paths"].items()) {
    for (const auto& [method, operation] : item.items()) {
      ++operations;
      const auto& responses = operation["responses"];
      std::vector<std::string> common = {"400", "413", "431", "500", "501"};
      if (path != "/health") common.push_back("401");
      for (const auto& status : common) {
        EXPECT_TRUE(responses.contains(status)) << method << " " << path << " lacks " << status;
      }
    }
  }
  EXPECT_GE(operations, 20);
  for (const auto& status : {"400", "404", "405", "431", "501"}) {
    EXPECT_TRUE(openapi()["x-unrouted-responses"].contains(status)) << status;
  }
}

// Checks a document against a named schema (contract.h), every member documented.
void conforms(const json& value, const std::string& schema_name) {
  for (const auto& problem : contract::schema_problems(value, schema_name)) {
    ADD_FAILURE() << problem << "\n  in " << value.dump().substr(0, 400);
  }
}

w::Capabilities full_capabilities() {
  w::Capabilities c;
  c.task_types = {"build", "test"};
  c.labels = {{"arch", "arm64"}};
  c.slots = 2;
  c.resources = {1 << 30, 1.5, 10ULL << 30};
  c.version = "0.1.0";
  c.platform = {"linux", "x86_64", "6.1.0"};
  return c;
}

TEST(WireSchema, TheCppTypesWriteWhatTheSchemaSaysAndReadBackTheSame) {
  auto caps = full_capabilities();
  auto roundtrip = [](const json& j, auto parse) { EXPECT_EQ(wire::to_json(parse(j)), j); };

  json reg = w::to_json(w::RegisterRequest{caps});
  conforms(reg, "RegisterRequest");
  roundtrip(reg, w::register_request_from_json);

  json reg_out = w::to_json(w::RegisterResponse{"wrk_1", "tok", 10000, 30000, 25000});
  conforms(reg_out, "RegisterResponse");
  roundtrip(reg_out, w::register_response_from_json);

  w::HeartbeatRequest hb{{{"tsk_1", 2, "lease"}}, true};
  conforms(w::to_json(hb), "HeartbeatRequest");
  roundtrip(w::to_json(hb), w::heartbeat_request_from_json);
  w::HeartbeatResponse hb_out{{{"tsk_1", 2}}, {{"tsk_2", 1}}, true, 30000};
  conforms(w::to_json(hb_out), "HeartbeatResponse");
  roundtrip(w::to_json(hb_out), w::heartbeat_response_from_json);

  w::Assignment a{{{"id", "tsk_1"}, {"type", "build"}}, "tsk_1", 1, "lease", 30000};
  conforms(w::to_json(a), "Assignment");
  roundtrip(w::to_json(a), w::assignment_from_json);
  conforms(w::to_json(w::PollRequest{5000}), "PollRequest");

  w::Fence fence{3, "lease"};
  conforms(w::to_json(w::StartedRequest{fence}), "StartedRequest");
  w::ProgressRequest progress{fence, 50.0, "compile", "half way"};
  conforms(w::to_json(progress), "ProgressRequest");
  roundtrip(w::to_json(progress), w::progress_request_from_json);
  w::LogAppendRequest log{fence, 10, "text"};
  conforms(w::to_json(log), "LogAppendRequest");
  roundtrip(w::to_json(log), w::log_append_request_from_json);
  conforms(w::to_json(w::LogAppendResponse{14}), "LogAppendResponse");
  w::CompleteRequest complete{fence, {{"status", "succeeded"}, {"exitCode", 0}}};
  conforms(w::to_json(complete), "CompleteRequest");
  roundtrip(w::to_json(complete), w::complete_request_from_json);
  w::FailRequest fail{fence, {"sandbox_setup", "no cgroup", true}, json{{"status", "error"}}};
  conforms(w::to_json(fail), "FailRequest");
  roundtrip(w::to_json(fail), w::fail_request_from_json);

  w::SubmitRequest submit{{{"type", "build"}}, 5, 2, {{"arch", "arm64"}}, "key-1"};
  conforms(w::to_json(submit), "SubmitRequest");
  roundtrip(w::to_json(submit), w::submit_request_from_json);

  w::TaskView view;
  view.id = "tsk_1";
  view.type = "build";
  view.state = w::TaskState::kRetryWait;
  view.attempt = 2;
  view.labels = {{"arch", "arm64"}};
  view.worker_id = "wrk_1";
  view.idempotency_key = "key-1";
  view.progress = {10.0, "a", "b"};
  view.result = json{{"status", "failed"}};
  view.error = w::TaskFailure{"lease_expired", "gone", true};
  view.retry_in_ms = 1000;
  view.log_length = 5;
  view.artifacts = {{"out.tar", 1, 10, "ab"}};
  view.created_at = view.updated_at = "2026-01-01T00:00:00.000Z";
  view.started_at = view.finished_at = "2026-01-01T00:00:01.000Z";
  view.task = {{"id", "tsk_1"}, {"type", "build"}};
  conforms(w::to_json(view), "TaskView");
  roundtrip(w::to_json(view), [](const json& j) { return w::task_view_from_json(j); });
  conforms(w::to_json(w::TaskList{{view}}), "TaskList");

  w::WorkerView worker{"wrk_1",
                       w::WorkerState::kDraining,
                       caps,
                       {{"tsk_1", 1, "l"}},
                       "2026-01-01T00:00:00.000Z",
                       "2026-01-01T00:00:00.000Z",
                       12};
  conforms(w::to_json(worker), "WorkerView");
  roundtrip(w::to_json(worker), [](const json& j) { return w::worker_view_from_json(j); });

  w::ErrorBody error{"lease_lost", "gone", "$.x", {{"$.a", "bad"}}, "running", 2, 7};
  conforms(w::to_json(error), "ErrorBody");
  roundtrip(w::to_json(error), w::error_body_from_json);
}

TEST(WireSchema, StateNamesAgreeAcrossCppAndSchema) {
  std::set<std::string> cpp;
  for (auto s : {w::TaskState::kQueued, w::TaskState::kRunning, w::TaskState::kSucceeded,
                 w::TaskState::kFailed, w::TaskState::kRetryWait, w::TaskState::kDead,
                 w::TaskState::kCancelRequested, w::TaskState::kCancelled}) {
    cpp.insert(std::string(w::to_string(s)));
    EXPECT_EQ(w::task_state_from_string(w::to_string(s)), s);
  }
  const auto& e = schemas()["TaskState"]["enum"];
  EXPECT_EQ(cpp, std::set<std::string>(e.begin(), e.end()));
  const auto& statuses = schemas()["TaskResult"]["properties"]["status"]["enum"];
  for (const auto& s : statuses) EXPECT_TRUE(w::is_result_status(s.get<std::string>())) << s;
  EXPECT_FALSE(w::is_result_status("completed"));
}

// What the server really answers, checked against the schema.
TEST(WireSchema, ServerAnswersConformToTheSchema) {
  TestServer server;
  HttpClient reg(server.url(), kRegistrationToken);
  auto r = reg.post_json("/api/v1/workers/register", {{"capabilities", capabilities()}});
  conforms(r.json(), "RegisterResponse");
  TestWorker worker(server.url(), r.json()["workerId"], r.json()["token"]);
  auto admin = server.admin();
  auto submitted = admin->post_json("/api/v1/tasks", submit_body(task_spec()));
  conforms(submitted.json(), "TaskView");
  auto polled = worker.poll(1000);
  conforms(polled.json(), "Assignment");
  auto a = polled.json();
  std::string id = a["taskId"];
  conforms(worker.task_post(id, "started", {{"attempt", 1}, {"leaseId", a["leaseId"]}}).json(),
           "FencedWriteResponse");
  conforms(worker.append_raw(id, 1, a["leaseId"], 0, "x").json(), "LogAppendResponse");
  conforms(worker.append_raw(id, 1, a["leaseId"], 5, "x").json(), "ErrorBody");
  conforms(
      worker.heartbeat(json::array({{{"taskId", id}, {"attempt", 1}, {"leaseId", a["leaseId"]}}}))
          .json(),
      "HeartbeatResponse");
  conforms(admin->get("/api/v1/tasks/" + id).json(), "TaskView");
  conforms(admin->get("/api/v1/tasks").json(), "TaskList");
  conforms(admin->get("/api/v1/workers").json(), "WorkerList");
  conforms(admin->request("POST", "/api/v1/workers/" + worker.id + "/drain").json(),
           "DrainResponse");
  conforms(admin->get("/ready").json(), "HealthStatus");
  conforms(server.anonymous()->get("/health").json(), "HealthStatus");
  conforms(admin->post_json("/api/v1/tasks", {{"task", {{"type", 1}}}}).json(), "ErrorBody");
  conforms(worker.complete(id, 1, a["leaseId"]).json(), "ReportResponse");
  conforms(admin->get("/api/v1/nope").json(), "ErrorBody");
}

}  // namespace
}  // namespace tamma::orchestrator::testing
