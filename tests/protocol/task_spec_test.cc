#include "protocol/task_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "support/test_support.h"

namespace tamma::protocol {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

json minimal() { return {{"type", "command"}, {"steps", {{{"run", "true"}}}}}; }

std::vector<std::string> problems_of(const json& document) {
  std::vector<std::string> out;
  for (const auto& p : parse_task_spec(document).problems) out.push_back(p.path + ": " + p.message);
  return out;
}

// Exactly one problem, at `path`, whose message contains `text`.
void expect_problem(const json& document, const std::string& path, const std::string& text) {
  const auto outcome = parse_task_spec(document);
  EXPECT_FALSE(outcome.spec.has_value());
  ASSERT_THAT(outcome.problems, SizeIs(1)) << document.dump();
  EXPECT_EQ(outcome.problems[0].path, path) << outcome.problems[0].message;
  EXPECT_THAT(outcome.problems[0].message, HasSubstr(text)) << document.dump();
}

TaskSpec parse_ok(const json& document) {
  auto outcome = parse_task_spec(document);
  EXPECT_THAT(problems_of(document), IsEmpty());
  if (!outcome.spec) throw std::runtime_error("spec did not parse: " + document.dump());
  return *outcome.spec;
}

TEST(TaskSpec, MinimalSpecGetsDefaults) {
  const TaskSpec spec = parse_ok(minimal());
  EXPECT_EQ(spec.type, "command");
  EXPECT_EQ(spec.id, "");
  ASSERT_THAT(spec.steps, SizeIs(1));
  EXPECT_EQ(spec.steps[0].name, "step-1");
  EXPECT_EQ(spec.steps[0].run, "true");
  EXPECT_THAT(spec.steps[0].argv, IsEmpty());
  EXPECT_FALSE(spec.steps[0].timeout);
  EXPECT_EQ(spec.workdir, ".");
  EXPECT_EQ(spec.network, NetworkMode::kNone);
  EXPECT_FALSE(spec.timeout);
  EXPECT_FALSE(spec.resources.memory_bytes);
  EXPECT_FALSE(spec.resources.cpus);
  EXPECT_FALSE(spec.resources.pids);
  EXPECT_FALSE(spec.resources.disk_bytes);
  EXPECT_THAT(spec.artifacts, IsEmpty());
  EXPECT_EQ(spec.raw, minimal());
}

TEST(TaskSpec, ReadsEveryField) {
  const json document = json::parse(R"({
    "id": "build-42.a_b",
    "type": "build",
    "steps": [
      {"name": "compile", "run": "make", "env": {"CC": "gcc"}, "timeout": "10m"},
      {"argv": ["/bin/echo", "hi", ""], "timeout": 90}
    ],
    "env": {"GREETING": "hello", "_X1": ""},
    "secrets": {"API_TOKEN": "s3cret"},
    "workdir": "src/./app/",
    "timeout": "1h30m",
    "resources": {"memory": "512M", "cpus": 1.5, "pids": 128, "disk": 1073741824},
    "network": "host",
    "artifacts": ["dist/*.tar.gz", "reports/**/*.xml"]
  })");
  const TaskSpec spec = parse_ok(document);
  EXPECT_EQ(spec.id, "build-42.a_b");
  EXPECT_EQ(spec.type, "build");
  ASSERT_THAT(spec.steps, SizeIs(2));
  EXPECT_EQ(spec.steps[0].name, "compile");
  EXPECT_EQ(spec.steps[0].run, "make");
  EXPECT_EQ(spec.steps[0].env, (std::map<std::string, std::string>{{"CC", "gcc"}}));
  EXPECT_EQ(spec.steps[0].timeout, milliseconds(600'000));
  EXPECT_EQ(spec.steps[1].name, "step-2");
  EXPECT_FALSE(spec.steps[1].run);
  EXPECT_THAT(spec.steps[1].argv, ElementsAre("/bin/echo", "hi", ""));
  EXPECT_EQ(spec.steps[1].timeout, milliseconds(90'000));
  EXPECT_EQ(spec.env, (std::map<std::string, std::string>{{"GREETING", "hello"}, {"_X1", ""}}));
  EXPECT_EQ(spec.secrets, (std::map<std::string, std::string>{{"API_TOKEN", "s3cret"}}));
  EXPECT_EQ(spec.workdir, "src/app");
  EXPECT_EQ(spec.timeout, milliseconds(5'400'000));
  EXPECT_EQ(spec.resources.memory_bytes, 512ULL << 20);
  EXPECT_EQ(spec.resources.cpus, 1.5);
  EXPECT_EQ(spec.resources.pids, 128U);
  EXPECT_EQ(spec.resources.disk_bytes, 1ULL << 30);
  EXPECT_EQ(spec.network, NetworkMode::kHost);
  EXPECT_THAT(spec.artifacts, ElementsAre("dist/*.tar.gz", "reports/**/*.xml"));
}

TEST(TaskSpec, ExampleTaskFileParses) {
  const TaskSpec spec =
      load_task_spec(std::filesystem::path(TAMMA_SOURCE_DIR) / "examples/hello/task.json");
  EXPECT_EQ(spec.type, "command");
  EXPECT_THAT(spec.steps, SizeIs(3));
}

TEST(TaskSpec, DocumentMustBeAnObject) {
  expect_problem(json::array(), "$", "must be a JSON object, not an array");
  expect_problem("text", "$", "not the string \"text\"");
}

TEST(TaskSpec, Type) {
  json d = minimal();
  d.erase("type");
  expect_problem(d, "$.type", "is required");
  d["type"] = "";
  expect_problem(d, "$.type", "must not be empty");
  d["type"] = 3;
  expect_problem(d, "$.type", "must be a string, not the number 3");
}

TEST(TaskSpec, ExternalHandlerTypesNeedNoSteps) {
  const TaskSpec spec = parse_ok({{"type", "lint_docs"}, {"paths", {"docs"}}});
  EXPECT_EQ(spec.type, "lint_docs");
  EXPECT_THAT(spec.steps, IsEmpty());
  EXPECT_EQ(spec.raw["paths"], json({"docs"}));
  // Steps they do give are still checked.
  expect_problem({{"type", "lint_docs"}, {"steps", {{{"run", 5}}}}}, "$.steps[0].run",
                 "must be a shell script");
}

TEST(TaskSpec, StepTypesNeedSteps) {
  for (const char* type : {"command", "build", "test", "security_scan"}) {
    const json base = {{"type", type}, {"reports", {"r.xml"}}, {"sarif", "s.sarif"}};
    expect_problem(base, "$.steps", "is required");
    json empty = base;
    empty["steps"] = json::array();
    expect_problem(empty, "$.steps", "at least one step");
  }
  expect_problem({{"type", "test"}, {"reports", {"r.xml"}}, {"steps", "make test"}}, "$.steps",
                 "must be an array");
}

TEST(TaskSpec, StepMustBeAnObject) {
  expect_problem({{"type", "command"}, {"steps", {"make"}}}, "$.steps[0]",
                 "must be an object with \"run\" or \"argv\"");
}

TEST(TaskSpec, StepNeedsExactlyOneOfRunAndArgv) {
  expect_problem({{"type", "command"}, {"steps", {{{"name", "x"}}}}}, "$.steps[0]",
                 "needs \"run\"");
  expect_problem({{"type", "command"}, {"steps", {{{"run", "a"}, {"argv", {"b"}}}}}}, "$.steps[0]",
                 "has both \"run\" and \"argv\"");
}

TEST(TaskSpec, StepRun) {
  expect_problem({{"type", "command"}, {"steps", {{{"run", ""}}}}}, "$.steps[0].run",
                 "must not be empty");
  expect_problem({{"type", "command"}, {"steps", {{{"run", json::array()}}}}}, "$.steps[0].run",
                 "must be a shell script (a string), not an array");
  expect_problem({{"type", "command"}, {"steps", {{{"run", std::string("a\0b", 3)}}}}},
                 "$.steps[0].run", "NUL");
}

TEST(TaskSpec, StepArgv) {
  auto with_argv = [](json argv) {
    return json{{"type", "command"}, {"steps", {{{"run", "ok"}}, {{"argv", argv}}}}};
  };
  expect_problem(with_argv(json::array()), "$.steps[1].argv", "non-empty array");
  expect_problem(with_argv("ls -l"), "$.steps[1].argv", "not the string \"ls -l\"");
  expect_problem(with_argv({"ls", 5}), "$.steps[1].argv[1]", "must be a string");
  expect_problem(with_argv({""}), "$.steps[1].argv[0]", "the command must not be empty");
  expect_problem(with_argv({"ls", std::string("\0", 1)}), "$.steps[1].argv[1]", "NUL");
}

TEST(TaskSpec, StepName) {
  expect_problem({{"type", "command"}, {"steps", {{{"name", 1}, {"run", "x"}}}}}, "$.steps[0].name",
                 "must be a string");
  expect_problem({{"type", "command"}, {"steps", {{{"name", ""}, {"run", "x"}}}}},
                 "$.steps[0].name", "must not be empty");
  const TaskSpec spec =
      parse_ok({{"type", "command"},
                {"steps", {{{"run", "a"}}, {{"name", "named"}, {"run", "b"}}, {{"run", "c"}}}}});
  EXPECT_EQ(spec.steps[0].name, "step-1");
  EXPECT_EQ(spec.steps[1].name, "named");
  EXPECT_EQ(spec.steps[2].name, "step-3");
}

TEST(TaskSpec, StepTimeoutNamesItsPathAndTheForms) {
  json d = {{"type", "command"}, {"steps", {{{"run", "a"}}, {{"run", "b"}, {"timeout", "10x"}}}}};
  const auto problems = problems_of(d);
  ASSERT_THAT(problems, SizeIs(1));
  EXPECT_THAT(problems[0],
              HasSubstr("$.steps[1].timeout: \"10x\" is not a duration (use e.g. 30s, 10m"));
  d["steps"][1]["timeout"] = -3;
  expect_problem(d, "$.steps[1].timeout", "positive");
  d["steps"][1]["timeout"] = true;
  expect_problem(d, "$.steps[1].timeout", "must be a duration");
}

TEST(TaskSpec, Timeout) {
  json d = minimal();
  d["timeout"] = 1.5;
  EXPECT_EQ(parse_ok(d).timeout, milliseconds(1'500));
  d["timeout"] = "250ms";
  EXPECT_EQ(parse_ok(d).timeout, milliseconds(250));
  d["timeout"] = "0s";
  expect_problem(d, "$.timeout", "must be positive");
  d["timeout"] = 0;
  expect_problem(d, "$.timeout", "positive");
  d["timeout"] = "-1m";
  expect_problem(d, "$.timeout", "must be positive");
  d["timeout"] = "";
  expect_problem(d, "$.timeout", "is not a duration");
  d["timeout"] = "99999999h";
  expect_problem(d, "$.timeout", "too long");
  d["timeout"] = 1e300;
  expect_problem(d, "$.timeout", "too long");
  d["timeout"] = json::object();
  expect_problem(d, "$.timeout", "not an object");
}

TEST(TaskSpec, Env) {
  json d = minimal();
  d["env"] = "A=1";
  expect_problem(d, "$.env", "must be an object");
  d["env"] = {{"1BAD", "x"}};
  expect_problem(d, "$.env[\"1BAD\"]", "\"1BAD\" is not a valid variable name");
  d["env"] = {{"A-B", "x"}};
  expect_problem(d, "$.env[\"A-B\"]", "not a valid variable name");
  d["env"] = {{"", "x"}};
  expect_problem(d, "$.env[\"\"]", "not a valid variable name");
  d["env"] = {{"PORT", 8080}};
  expect_problem(d, "$.env.PORT", "must be a string, not the number 8080");
  d["env"] = {{"A", std::string("x\0y", 3)}};
  expect_problem(d, "$.env.A", "NUL");
  d["steps"][0]["env"] = {{"bad name", "x"}};
  d.erase("env");
  expect_problem(d, "$.steps[0].env[\"bad name\"]", "not a valid variable name");
}

TEST(TaskSpec, Secrets) {
  json d = minimal();
  d["secrets"] = {{"TOKEN", ""}};
  expect_problem(d, "$.secrets.TOKEN", "must not be empty");
  d["secrets"] = {{"TOKEN", 5}};
  expect_problem(d, "$.secrets.TOKEN", "must be a string");
  d["secrets"] = {{"9TOKEN", "x"}};
  expect_problem(d, "$.secrets[\"9TOKEN\"]", "not a valid variable name");
  d["secrets"] = json::array();
  expect_problem(d, "$.secrets", "must be an object");
}

TEST(TaskSpec, SecretNameCollidingWithEnvIsAProblem) {
  json d = minimal();
  d["env"] = {{"TOKEN", "plain"}};
  d["secrets"] = {{"TOKEN", "hidden"}};
  expect_problem(d, "$.secrets.TOKEN", "also set in $.env");
  d.erase("env");
  d["steps"][0]["env"] = {{"TOKEN", "plain"}};
  expect_problem(d, "$.secrets.TOKEN", "also set in $.steps[0].env");
}

TEST(TaskSpec, Workdir) {
  json d = minimal();
  for (auto [given, normalized] :
       std::vector<std::pair<std::string, std::string>>{{".", "."},
                                                        {"./", "."},
                                                        {"src", "src"},
                                                        {"a/./b/../c/", "a/c"},
                                                        {"a/..", "."},
                                                        {"a//b", "a/b"}}) {
    d["workdir"] = given;
    EXPECT_EQ(parse_ok(d).workdir, normalized) << given;
  }
  d["workdir"] = "/etc";
  expect_problem(d, "$.workdir", "\"/etc\" is absolute");
  d["workdir"] = "../outside";
  expect_problem(d, "$.workdir", "leads out of the workspace");
  d["workdir"] = "a/../../outside";
  expect_problem(d, "$.workdir", "leads out of the workspace");
  d["workdir"] = "..";
  expect_problem(d, "$.workdir", "leads out of the workspace");
  d["workdir"] = "";
  expect_problem(d, "$.workdir", "must not be empty");
  d["workdir"] = 7;
  expect_problem(d, "$.workdir", "must be a path relative to the workspace");
}

TEST(TaskSpec, ResourcesMemoryAndDisk) {
  json d = minimal();
  for (const char* key : {"memory", "disk"}) {
    const std::string path = std::string("$.resources.") + key;
    d["resources"] = {{key, "1G"}};
    parse_ok(d);
    d["resources"] = {{key, 1048576}};
    parse_ok(d);
    d["resources"] = {{key, 1e9}};
    parse_ok(d);
    d["resources"] = {{key, "lots"}};
    expect_problem(d, path, "\"lots\" is not a size");
    d["resources"] = {{key, "0"}};
    expect_problem(d, path, "must be more than 0 bytes");
    d["resources"] = {{key, 0}};
    expect_problem(d, path, "positive whole number of bytes");
    d["resources"] = {{key, -5}};
    expect_problem(d, path, "positive whole number of bytes");
    d["resources"] = {{key, 1.5}};
    expect_problem(d, path, "positive whole number of bytes");
    d["resources"] = {{key, "-1M"}};
    expect_problem(d, path, "must not be negative");
    d["resources"] = {{key, "99999999999999T"}};
    expect_problem(d, path, "too large");
    d["resources"] = {{key, true}};
    expect_problem(d, path, "must be a size such as");
  }
  d["resources"] = {{"memory", "256M"}, {"disk", "2G"}};
  const TaskSpec spec = parse_ok(d);
  EXPECT_EQ(spec.resources.memory_bytes, 256ULL << 20);
  EXPECT_EQ(spec.resources.disk_bytes, 2ULL << 30);
}

TEST(TaskSpec, ResourcesCpus) {
  json d = minimal();
  d["resources"] = {{"cpus", 0.5}};
  EXPECT_EQ(parse_ok(d).resources.cpus, 0.5);
  d["resources"] = {{"cpus", 1024}};
  EXPECT_EQ(parse_ok(d).resources.cpus, 1024.0);
  for (const json& bad : {json(0), json(-1), json(1024.5), json("2"), json(nullptr)}) {
    d["resources"] = {{"cpus", bad}};
    expect_problem(d, "$.resources.cpus", "must be a positive number of CPUs");
  }
}

TEST(TaskSpec, ResourcesPids) {
  json d = minimal();
  d["resources"] = {{"pids", 4194304}};
  EXPECT_EQ(parse_ok(d).resources.pids, 4194304U);
  for (const json& bad : {json(0), json(-1), json(1.5), json(4194305), json("10")}) {
    d["resources"] = {{"pids", bad}};
    expect_problem(d, "$.resources.pids", "must be a positive whole number of processes");
  }
  d["resources"] = "big";
  expect_problem(d, "$.resources", "must be an object");
}

TEST(TaskSpec, Network) {
  json d = minimal();
  d["network"] = "none";
  EXPECT_EQ(parse_ok(d).network, NetworkMode::kNone);
  d["network"] = "host";
  EXPECT_EQ(parse_ok(d).network, NetworkMode::kHost);
  d["network"] = "bridge";
  expect_problem(d, "$.network", "must be \"none\" (loopback only), \"host\", or {\"allow\"");
  d["network"] = false;
  expect_problem(d, "$.network", "not false");
}

TEST(TaskSpec, Artifacts) {
  json d = minimal();
  d["artifacts"] = "dist/*";
  expect_problem(d, "$.artifacts", "must be an array");
  d["artifacts"] = {"ok/*", "/etc/passwd"};
  expect_problem(d, "$.artifacts[1]", "is absolute");
  d["artifacts"] = {"../secrets/*"};
  expect_problem(d, "$.artifacts[0]", "\"..\" component");
  d["artifacts"] = {"dist/../../x"};
  expect_problem(d, "$.artifacts[0]", "\"..\" component");
  d["artifacts"] = {""};
  expect_problem(d, "$.artifacts[0]", "must not be empty");
  d["artifacts"] = {3};
  expect_problem(d, "$.artifacts[0]", "must be a string");
  d["artifacts"] = {"dist/..x/*", "./a..b"};
  EXPECT_THAT(parse_ok(d).artifacts, SizeIs(2));
}

TEST(TaskSpec, ArtifactsWhen) {
  json d = minimal();
  EXPECT_EQ(parse_ok(d).artifacts_when, "on_success");
  EXPECT_FALSE(to_json(parse_ok(d)).contains("artifactsWhen"));
  for (const char* when : {"on_success", "on_failure", "always"}) {
    d["artifactsWhen"] = when;
    EXPECT_EQ(parse_ok(d).artifacts_when, when);
    EXPECT_EQ(parse_ok(to_json(parse_ok(d))).artifacts_when, when);
  }
  d["artifactsWhen"] = "never";
  expect_problem(d, "$.artifactsWhen",
                 "must be \"on_success\", \"on_failure\" or \"always\", not the string \"never\"");
  d["artifactsWhen"] = true;
  expect_problem(d, "$.artifactsWhen", "not true");
}

TEST(TaskSpec, Id) {
  json d = minimal();
  d["id"] = std::string(128, 'a');
  EXPECT_EQ(parse_ok(d).id, std::string(128, 'a'));
  d["id"] = std::string(129, 'a');
  expect_problem(d, "$.id", "is not a valid task id");
  d["id"] = "a/b";
  expect_problem(d, "$.id", "\"a/b\" is not a valid task id");
  d["id"] = "";
  expect_problem(d, "$.id", "is not a valid task id");
  d["id"] = 42;
  expect_problem(d, "$.id", "must be a string");
}

TEST(TaskSpec, UnknownTopLevelFieldsAreKeptInRaw) {
  json d = minimal();
  d["repository"] = {{"url", "https://example.com/r.git"}, {"ref", "main"}};
  d["reports"] = {"junit.xml"};
  d["sarif"] = "scan.sarif";
  d["failOn"] = "warning";
  d["labels"] = {{"team", "core"}};
  d["priority"] = 5;
  d["maxRetries"] = 2;
  d["idempotencyKey"] = "abc";
  d["metadata"] = {{"pr", 17}};
  d["somethingNew"] = true;
  const TaskSpec spec = parse_ok(d);
  EXPECT_EQ(spec.raw, d);
  const json out = to_json(spec);
  for (const char* key : {"repository", "reports", "sarif", "failOn", "labels", "priority",
                          "maxRetries", "idempotencyKey", "metadata", "somethingNew"}) {
    EXPECT_EQ(out.at(key), d.at(key)) << key;
  }
}

TEST(TaskSpec, ReportsEveryProblemWithItsPath) {
  const json d = json::parse(R"({
    "id": "bad id",
    "type": "build",
    "steps": [{"run": "ok"}, {"argv": []}, {"run": "x", "timeout": "soon"}],
    "env": {"1X": "a"},
    "secrets": {"S": ""},
    "workdir": "/abs",
    "timeout": "10x",
    "resources": {"memory": "huge", "cpus": 0, "pids": -1, "disk": "1Q"},
    "network": "wifi",
    "artifacts": ["../up"]
  })");
  const auto outcome = parse_task_spec(d);
  EXPECT_FALSE(outcome.spec);
  std::vector<std::string> paths;
  for (const auto& p : outcome.problems) paths.push_back(p.path);
  EXPECT_THAT(paths, ElementsAre("$.id", "$.steps[1].argv", "$.steps[2].timeout", "$.env[\"1X\"]",
                                 "$.secrets.S", "$.workdir", "$.timeout", "$.resources.memory",
                                 "$.resources.cpus", "$.resources.pids", "$.resources.disk",
                                 "$.network", "$.artifacts[0]"));
}

TEST(TaskSpec, ToJsonRoundTrips) {
  const json document = json::parse(R"({
    "id": "t1",
    "type": "test",
    "steps": [
      {"name": "unit", "run": "make test", "env": {"V": "1"}, "timeout": 5400, "retries": 3},
      {"argv": ["/bin/true"]}
    ],
    "env": {"A": "b"},
    "secrets": {"TOKEN": "xyz"},
    "workdir": "a/b/../c",
    "timeout": 1.5,
    "resources": {"memory": "1.5G", "cpus": 2, "pids": 64, "disk": "10G", "gpus": 1},
    "network": "host",
    "artifacts": ["out/*"],
    "reports": ["out/*.xml"],
    "repository": {"url": "file:///srv/r.git"}
  })");
  const TaskSpec first = parse_ok(document);
  const json written = to_json(first);
  // Durations are written as duration strings, sizes as byte counts.
  EXPECT_EQ(written["timeout"], "1.5s");
  EXPECT_EQ(written["steps"][0]["timeout"], "1h30m");
  EXPECT_EQ(written["resources"]["memory"], 3ULL << 29);
  EXPECT_EQ(written["workdir"], "a/c");
  EXPECT_EQ(written["steps"][1]["name"], "step-2");
  // Fields the worker does not know survive, at every level.
  EXPECT_EQ(written["steps"][0]["retries"], 3);
  EXPECT_EQ(written["resources"]["gpus"], 1);
  EXPECT_EQ(written["repository"], json({{"url", "file:///srv/r.git"}}));

  const TaskSpec second = parse_ok(written);
  EXPECT_EQ(second.id, first.id);
  EXPECT_EQ(second.type, first.type);
  ASSERT_EQ(second.steps.size(), first.steps.size());
  for (std::size_t i = 0; i < first.steps.size(); ++i) {
    EXPECT_EQ(second.steps[i].name, first.steps[i].name);
    EXPECT_EQ(second.steps[i].run, first.steps[i].run);
    EXPECT_EQ(second.steps[i].argv, first.steps[i].argv);
    EXPECT_EQ(second.steps[i].env, first.steps[i].env);
    EXPECT_EQ(second.steps[i].timeout, first.steps[i].timeout);
  }
  EXPECT_EQ(second.env, first.env);
  EXPECT_EQ(second.secrets, first.secrets);
  EXPECT_EQ(second.workdir, first.workdir);
  EXPECT_EQ(second.timeout, first.timeout);
  EXPECT_EQ(second.resources.memory_bytes, first.resources.memory_bytes);
  EXPECT_EQ(second.resources.cpus, first.resources.cpus);
  EXPECT_EQ(second.resources.pids, first.resources.pids);
  EXPECT_EQ(second.resources.disk_bytes, first.resources.disk_bytes);
  EXPECT_EQ(second.network, first.network);
  EXPECT_EQ(second.artifacts, first.artifacts);
  EXPECT_EQ(to_json(second), written);
}

TEST(TaskSpec, ToJsonOfAProgrammaticSpec) {
  TaskSpec spec;
  spec.type = "command";
  Step step;
  step.name = "hello";
  step.argv = {"/bin/echo", "hi"};
  step.timeout = milliseconds(30'000);
  spec.steps.push_back(step);
  spec.resources.pids = 10;
  const json out = to_json(spec);
  EXPECT_EQ(out, json::parse(R"({
    "type": "command",
    "steps": [{"name": "hello", "argv": ["/bin/echo", "hi"], "timeout": "30s"}],
    "workdir": ".",
    "resources": {"pids": 10},
    "network": "none"
  })"));
  EXPECT_THAT(problems_of(out), IsEmpty());
}

TEST(TaskSpec, ToJsonDropsFieldsTheSpecNoLongerHas) {
  json d = minimal();
  d["timeout"] = "5m";
  d["resources"] = {{"memory", "1G"}};
  TaskSpec spec = parse_ok(d);
  spec.timeout.reset();
  spec.resources.memory_bytes.reset();
  const json out = to_json(spec);
  EXPECT_FALSE(out.contains("timeout"));
  EXPECT_FALSE(out.contains("resources"));
}

Error load_error(const std::filesystem::path& file) {
  try {
    load_task_spec(file);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "load_task_spec(" << file << ") did not throw";
  return Error(ErrorKind::kInfrastructure, "none", "");
}

TEST(LoadTaskSpec, ReadsAValidFile) {
  testing::TempDir dir;
  testing::write_file(dir.path() / "task.json", minimal().dump());
  EXPECT_EQ(load_task_spec(dir.path() / "task.json").type, "command");
}

TEST(LoadTaskSpec, MissingFile) {
  testing::TempDir dir;
  const Error e = load_error(dir.path() / "nope.json");
  EXPECT_EQ(e.kind(), ErrorKind::kConfig);
  EXPECT_THAT(e.what(), HasSubstr("nope.json does not exist"));
}

TEST(LoadTaskSpec, Directory) {
  testing::TempDir dir;
  const Error e = load_error(dir.path());
  EXPECT_EQ(e.kind(), ErrorKind::kConfig);
  EXPECT_THAT(e.what(), HasSubstr("is a directory"));
}

TEST(LoadTaskSpec, NotJsonSaysLineAndColumn) {
  testing::TempDir dir;
  testing::write_file(dir.path() / "task.json", "{\n  \"type\": \"command\",\n  steps: []\n}\n");
  const Error e = load_error(dir.path() / "task.json");
  EXPECT_EQ(e.kind(), ErrorKind::kConfig);
  EXPECT_EQ(e.code(), "invalid_task_spec");
  EXPECT_THAT(e.what(), HasSubstr("is not valid JSON"));
  EXPECT_THAT(e.what(), HasSubstr("line 3, column 3"));
  EXPECT_THAT(e.what(), Not(HasSubstr("[json.exception")));
}

TEST(LoadTaskSpec, ListsEveryProblemOnePerLine) {
  testing::TempDir dir;
  testing::write_file(dir.path() / "task.json",
                      R"({"type": "command", "steps": [{"run": "x", "timeout": "10x"}],
                          "network": "wifi"})");
  const Error e = load_error(dir.path() / "task.json");
  EXPECT_EQ(e.kind(), ErrorKind::kConfig);
  EXPECT_EQ(e.code(), "invalid_task_spec");
  const std::string message = e.what();
  EXPECT_THAT(message, HasSubstr("task.json:\n"));
  EXPECT_THAT(message, HasSubstr("\n  $.steps[0].timeout: \"10x\" is not a duration"));
  EXPECT_THAT(message, HasSubstr("\n  $.network: must be"));
}

TEST(TaskSpec, Repository) {
  json d = minimal();
  d["secrets"] = {{"GIT_TOKEN", "t0ken"}};
  d["repository"] = {{"url", "https://git.example.com/r.git"},
                     {"ref", "v1.2"},
                     {"depth", 0},
                     {"credentialsSecret", "GIT_TOKEN"}};
  const TaskSpec spec = parse_ok(d);
  ASSERT_TRUE(spec.repository);
  EXPECT_EQ(spec.repository->url, "https://git.example.com/r.git");
  EXPECT_EQ(spec.repository->ref, "v1.2");
  EXPECT_EQ(spec.repository->depth, 0u);
  EXPECT_EQ(spec.repository->credentials_secret, "GIT_TOKEN");
  EXPECT_EQ(parse_ok(to_json(spec)).repository->ref, "v1.2");

  json plain = minimal();
  plain["repository"] = {{"url", "file:///srv/r.git"}};
  const TaskSpec defaults = parse_ok(plain);
  EXPECT_EQ(defaults.repository->ref, "");
  EXPECT_EQ(defaults.repository->depth, 1u);
  EXPECT_FALSE(parse_ok(minimal()).repository);

  const auto with = [](json repository) {
    json doc = minimal();
    doc["repository"] = std::move(repository);
    return doc;
  };
  expect_problem(with("https://x/r.git"), "$.repository", "must be an object");
  expect_problem(with({{"ref", "main"}}), "$.repository.url", "is required");
  expect_problem(with({{"url", "ssh://git@x/r.git"}}), "$.repository.url", "ssh is not supported");
  expect_problem(with({{"url", "git@github.com:o/r.git"}}), "$.repository.url",
                 "ssh is not supported");
  expect_problem(with({{"url", "ftp://x/r"}}), "$.repository.url", "is not a https://");
  expect_problem(with({{"url", "/srv/r.git"}}), "$.repository.url", "is not a https://");
  expect_problem(with({{"url", "file://srv/r.git"}}), "$.repository.url", "absolute path");
  expect_problem(with({{"url", "file:///a"}, {"ref", "--upload-pack=evil"}}), "$.repository.ref",
                 "is not a valid ref");
  expect_problem(with({{"url", "file:///a"}, {"depth", -1}}), "$.repository.depth", "whole number");
  expect_problem(with({{"url", "file:///a"}, {"depth", "1"}}), "$.repository.depth",
                 "whole number");
  expect_problem(with({{"url", "https://x/r"}, {"credentialsSecret", "NOPE"}}),
                 "$.repository.credentialsSecret", "is not in $.secrets");
  json clear = with({{"url", "http://x/r"}, {"credentialsSecret", "T"}});
  clear["secrets"] = {{"T", "v"}};
  expect_problem(clear, "$.repository.credentialsSecret", "only over https://");
}

TEST(TaskSpec, ReportInputsAreReadAndChecked) {
  const TaskSpec test = parse_ok({{"type", "test"},
                                  {"steps", {{{"run", "make check"}}}},
                                  {"reports", {"build/*.xml", "**/TEST-*.xml"}}});
  EXPECT_THAT(test.reports, ElementsAre("build/*.xml", "**/TEST-*.xml"));
  EXPECT_EQ(test.fail_on, "error");
  const TaskSpec scan = parse_ok({{"type", "security_scan"},
                                  {"steps", {{{"run", "scan"}}}},
                                  {"sarif", "out/scan.sarif"},
                                  {"failOn", "note"}});
  EXPECT_EQ(scan.sarif, "out/scan.sarif");
  EXPECT_EQ(scan.fail_on, "note");
  EXPECT_EQ(to_json(scan)["failOn"], "note");
  EXPECT_EQ(parse_ok(to_json(scan)).fail_on, "note");

  expect_problem({{"type", "test"}, {"steps", {{{"run", "x"}}}}}, "$.reports", "is required");
  expect_problem({{"type", "security_scan"}, {"steps", {{{"run", "x"}}}}}, "$.sarif",
                 "is required");
  json d = {{"type", "test"}, {"steps", {{{"run", "x"}}}}, {"reports", json::array()}};
  expect_problem(d, "$.reports", "not an empty array");
  d["reports"] = "out/*.xml";
  expect_problem(d, "$.reports", "must be a non-empty array");
  d["reports"] = {"ok/*.xml", "/abs/*.xml", "../up.xml", 3};
  EXPECT_THAT(problems_of(d),
              ElementsAre("$.reports[1]: \"/abs/*.xml\" is absolute; give a glob relative to "
                          "the workspace",
                          "$.reports[2]: \"../up.xml\" has a \"..\" component, which leads out "
                          "of the workspace",
                          "$.reports[3]: must be a string, not the number 3"));
  json s = {{"type", "security_scan"}, {"steps", {{{"run", "x"}}}}, {"sarif", "/tmp/s.sarif"}};
  expect_problem(s, "$.sarif", "is absolute");
  s["sarif"] = "s.sarif";
  s["failOn"] = "critical";
  expect_problem(s, "$.failOn", "must be \"error\", \"warning\" or \"note\"");
}

}  // namespace
}  // namespace tamma::protocol
