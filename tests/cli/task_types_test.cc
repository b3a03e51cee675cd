// The build, test and security_scan task types end to end through `tamma-worker run`: real
// make/gcc builds, JUnit XML from real GoogleTest and pytest runs, SARIF from a real
// flawfinder scan, each in the sandbox; the result document and the exit code are checked.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <random>

#include "support/test_support.h"

namespace tamma {
namespace {

using ::testing::HasSubstr;
using testing::ProcessResult;
using testing::read_file;
using testing::TempDir;
using testing::write_file;
using json = nlohmann::json;

bool on_path(const std::string& tool) {
  return testing::run_process({"/bin/sh", "-c", "command -v " + tool}).exit_code == 0;
}

class TaskTypes : public ::testing::Test {
 protected:
  void SetUp() override {
    workspaces_ = std::make_unique<TempDir>();
    std::random_device rd;
    marker_ = "tamma-marker-" + std::to_string(rd());
  }

  void TearDown() override {
    // Nothing of a task may survive it: no process, no workspace.
    EXPECT_TRUE(testing::processes_with(marker_).empty()) << "leaked processes of " << marker_;
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(workspaces_->path())) {
      left.push_back(e.path().filename());
    }
    EXPECT_TRUE(left.empty()) << "workspace root not empty: " << (left.empty() ? "" : left[0]);
  }

  json run(const json& spec, int expected_exit, std::vector<std::string> extra = {},
           std::vector<std::string> env = {}) {
    auto path = files_.path() / ("task-" + std::to_string(++count_) + ".json");
    write_file(path, spec.dump());
    std::vector<std::string> argv{
        TAMMA_WORKER_BINARY,         "run", "--json", "--quiet", "--workspace-root",
        workspaces_->path().string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(path.string());
    ProcessResult r = testing::run_process(argv, env, std::chrono::minutes(5));
    last_stderr_ = r.err;
    EXPECT_EQ(r.exit_code, expected_exit) << r.err << r.out;
    try {
      return json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "stdout is not a result document: " << e.what() << "\n" << r.out << r.err;
      return json::object();
    }
  }

  std::unique_ptr<TempDir> workspaces_;
  TempDir files_;
  std::string marker_;
  std::string last_stderr_;
  int count_ = 0;
};

// ---- build ----

constexpr const char* kMakeProject =
    "mkdir -p src out && cat > src/hello.c <<'EOF'\n"
    "#include <stdio.h>\n"
    "int main(void) { puts(\"hello from the build\"); return 0; }\n"
    "EOF\n"
    "printf 'out/hello: src/hello.c\\n\\t$(CC) -O2 -o $@ $<\\n"
    "out/VERSION:\\n\\techo 1.2.3 > $@\\n"
    "all: out/hello out/VERSION\\n' > Makefile\n"
    "make CC=gcc all\n";

TEST_F(TaskTypes, BuildRunsMakeAndGccAndCollectsArtifactsWithChecksums) {
  if (!on_path("gcc") || !on_path("make")) GTEST_SKIP() << "LOUD SKIP: gcc or make missing";
  TempDir out;
  const json spec = {{"type", "build"},
                     {"steps",
                      {{{"name", "make"}, {"run", std::string(kMakeProject) + "# " + marker_}},
                       // A link out of the workspace that a glob matches is never collected.
                       {{"name", "plant a link"}, {"run", "ln -s /etc/passwd out/passwd"}},
                       {{"name", "smoke"}, {"run", "./out/hello"}}}},
                     {"artifacts", {"out/*"}}};
  const json result = run(spec, 0, {"--artifacts-dir", out.path().string()});
  EXPECT_EQ(result["status"], "succeeded");
  EXPECT_EQ(result["steps"][2]["stdout"], "hello from the build\n");
  ASSERT_EQ(result["artifacts"].size(), 2u) << result["artifacts"].dump();
  EXPECT_EQ(result["artifacts"][0]["path"], "out/VERSION");
  EXPECT_EQ(result["artifacts"][0]["size"], 6);
  EXPECT_EQ(result["artifacts"][0]["sha256"],
            "d82f34ae9aa41bc4a0cb529a1ac0898fed09d6b479fb1cc44cb66c34f15ee84d");
  EXPECT_EQ(result["artifacts"][1]["path"], "out/hello");
  // The manifest's checksum is the copied file's.
  const ProcessResult sum =
      testing::run_process({"/usr/bin/sha256sum", (out.path() / "out/hello").string()});
  EXPECT_EQ(sum.out.substr(0, 64), result["artifacts"][1]["sha256"]);
  EXPECT_EQ(read_file(out.path() / "out/VERSION"), "1.2.3\n");
  EXPECT_FALSE(std::filesystem::exists(out.path() / "out/passwd"));
  // The copied binary runs: it is the build's output, byte for byte.
  EXPECT_EQ(testing::run_process({(out.path() / "out/hello").string()}).out,
            "hello from the build\n");
}

TEST_F(TaskTypes, BuildWhoseArtifactGlobMatchesNothingFailsNamingIt) {
  const json spec = {{"type", "build"},
                     {"steps", {{{"run", "mkdir -p dist && echo x > dist/a.txt"}}}},
                     {"artifacts", {"dist/*.txt", "dist/*.tar.gz"}}};
  const json result = run(spec, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["error"]["code"], "artifacts_missing");
  EXPECT_THAT(result["error"]["message"].get<std::string>(),
              HasSubstr("artifact glob \"dist/*.tar.gz\" matched no file"));
  EXPECT_TRUE(result["artifacts"].empty());
}

TEST_F(TaskTypes, ArtifactOverTheSizeLimitFailsAndNothingIsCopied) {
  TempDir out;
  const json spec = {{"type", "build"},
                     {"steps",
                      {{{"run",
                         "mkdir -p dist && head -c 4096 /dev/zero > dist/big.bin "
                         "&& echo small > dist/small.txt"}}}},
                     {"artifacts", {"dist/*"}}};
  const json result =
      run(spec, 1, {"--artifacts-dir", out.path().string()}, {"TAMMA_ARTIFACT_MAX_FILE_SIZE=1K"});
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["error"]["code"], "artifact_limit_exceeded");
  EXPECT_THAT(result["error"]["message"].get<std::string>(),
              HasSubstr("artifact \"dist/big.bin\" is 4KiB (4096 bytes), more than "
                        "artifactMaxFileSize"));
  EXPECT_TRUE(std::filesystem::is_empty(out.path()));

  const json total = run(spec, 1, {}, {"TAMMA_ARTIFACT_MAX_TOTAL_SIZE=4K"});
  EXPECT_EQ(total["error"]["code"], "artifact_limit_exceeded");
  EXPECT_THAT(total["error"]["message"].get<std::string>(), HasSubstr("artifactMaxTotalSize"));
}

// artifactsWhen, GitLab's artifacts:when: the logs and reports of a failed build are what its
// author needs most. What exists is collected; a glob the failed step never got to is not an
// error of its own, and the task keeps its own outcome.
TEST_F(TaskTypes, ArtifactsOfAFailedTaskAreCollectedWhenAskedFor) {
  TempDir out;
  json spec = {
      {"type", "build"},
      {"steps", {{{"run", "mkdir -p logs && echo 'cc: error' > logs/build.log && exit 2"}}}},
      {"artifacts", {"logs/*.log", "dist/*.tar.gz"}}};

  // Default (on_success): nothing of a failed task is collected.
  json result = run(spec, 1, {"--artifacts-dir", out.path().string()});
  EXPECT_EQ(result["exitCode"], 2);
  EXPECT_TRUE(result["artifacts"].empty());
  EXPECT_TRUE(std::filesystem::is_empty(out.path()));

  for (const char* when : {"always", "on_failure"}) {
    spec["artifactsWhen"] = when;
    result = run(spec, 1, {"--artifacts-dir", out.path().string()});
    EXPECT_EQ(result["status"], "failed") << when;
    EXPECT_EQ(result["exitCode"], 2) << when;
    EXPECT_TRUE(result["error"].is_null()) << when << ": " << result["error"].dump();
    ASSERT_EQ(result["artifacts"].size(), 1u) << when << ": " << result.dump(2);
    EXPECT_EQ(result["artifacts"][0]["path"], "logs/build.log");
    EXPECT_EQ(read_file(out.path() / "logs/build.log"), "cc: error\n");
    std::filesystem::remove_all(out.path() / "logs");
  }
}

TEST_F(TaskTypes, OnFailureArtifactsAreNotCollectedFromASucceededTask) {
  const json spec = {{"type", "build"},
                     {"steps", {{{"run", "mkdir -p logs && echo fine > logs/build.log"}}}},
                     {"artifacts", {"logs/*.log", "never/*"}},
                     {"artifactsWhen", "on_failure"}};
  const json result = run(spec, 0);
  EXPECT_EQ(result["status"], "succeeded");
  EXPECT_TRUE(result["artifacts"].empty());
}

// A limit broken by the artifacts of a failed task is said in details.artifacts; the task's
// own outcome (here a timeout, exit code 3) is kept. The file is written by a step of its own
// and only the next step has the deadline: on a slow host (a TCG VM beside two builds) a
// task-wide 1 s deadline sometimes passed before `head` had written anything.
TEST_F(TaskTypes, ArtifactLimitOnAFailedTaskKeepsTheTasksOwnOutcome) {
  const json spec = {
      {"type", "build"},
      {"steps",
       {{{"run", "head -c 4096 /dev/zero > big.bin"}}, {{"run", "sleep 30"}, {"timeout", "1s"}}}},
      {"artifacts", {"*.bin"}},
      {"artifactsWhen", "always"}};
  const json result = run(spec, 3, {}, {"TAMMA_ARTIFACT_MAX_FILE_SIZE=1K"});
  EXPECT_EQ(result["status"], "timeout");
  EXPECT_EQ(result["error"]["code"], "timeout");
  EXPECT_TRUE(result["artifacts"].empty());
  EXPECT_EQ(result["details"]["artifacts"]["code"], "artifact_limit_exceeded") << result.dump(2);
  EXPECT_THAT(result["details"]["artifacts"]["message"].get<std::string>(),
              HasSubstr("artifactMaxFileSize"));
}

TEST_F(TaskTypes, ArtifactGlobsLeavingTheWorkspaceAreRefusedBeforeAnythingRuns) {
  const json spec = {{"type", "build"},
                     {"steps", {{{"run", "echo never # " + marker_}}}},
                     {"artifacts", {"../etc/*", "/etc/passwd"}}};
  const json result = run(spec, 2);
  EXPECT_EQ(result["status"], "error");
  const std::string message = result["error"]["message"];
  EXPECT_THAT(message, HasSubstr("$.artifacts[0]: \"../etc/*\" has a \"..\" component"));
  EXPECT_THAT(message, HasSubstr("$.artifacts[1]: \"/etc/passwd\" is absolute"));
  EXPECT_TRUE(result["steps"].empty());
}

// ---- test ----

constexpr const char* kGtestProgram =
    "cat > calc_test.cc <<'EOF'\n"
    "#include <gtest/gtest.h>\n"
    "int add(int a, int b) { return a + b; }\n"
    "TEST(Calc, Adds) { EXPECT_EQ(add(1, 2), 3); }\n"
    "TEST(Calc, AddsWrongly) {\n"
    "  EXPECT_EQ(add(2, 2), 5) << \"two and two\";\n"
    "}\n"
    "TEST(Calc, Skips) { GTEST_SKIP() << \"later\"; }\n"
    "TEST(Calc, DISABLED_NotYet) {}\n"
    "EOF\n"
    "g++ -std=c++17 calc_test.cc -o calc_test -lgtest -lgtest_main -pthread\n";

TEST_F(TaskTypes, GoogleTestFailuresFailTheTaskEvenWhenTheStepExits0) {
  if (!on_path("g++") || !std::filesystem::exists("/usr/include/gtest/gtest.h")) {
    GTEST_SKIP() << "LOUD SKIP: g++ or the GoogleTest headers are missing";
  }
  const json spec = {
      {"type", "test"},
      {"steps",
       {{{"name", "compile"}, {"run", kGtestProgram}},
        // The runner's exit code is ignored here: the report alone must fail the task.
        {{"name", "run"},
         {"run", "./calc_test --gtest_output=xml:reports/gtest.xml || true # " + marker_}}}},
      {"reports", {"reports/*.xml"}}};
  const json result = run(spec, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["steps"][1]["status"], "succeeded");
  EXPECT_EQ(result["error"]["code"], "tests_failed");
  EXPECT_THAT(result["error"]["message"].get<std::string>(),
              HasSubstr("1 of 4 tests failed; first: Calc.AddsWrongly at calc_test.cc:5"));
  const json& tests = result["details"]["tests"];
  EXPECT_EQ(tests["total"], 4);
  EXPECT_EQ(tests["passed"], 1);
  EXPECT_EQ(tests["failed"], 1);
  EXPECT_EQ(tests["errors"], 0);
  EXPECT_EQ(tests["skipped"], 2);
  EXPECT_EQ(tests["reports"], json({"reports/gtest.xml"}));
  ASSERT_EQ(tests["failures"].size(), 1u);
  const json& f = tests["failures"][0];
  EXPECT_EQ(f["suite"], "Calc");
  EXPECT_EQ(f["name"], "AddsWrongly");
  EXPECT_EQ(f["file"], "calc_test.cc");
  EXPECT_EQ(f["line"], 5);
  EXPECT_EQ(f["kind"], "failure");
  EXPECT_THAT(f["message"].get<std::string>(), HasSubstr("two and two"));
}

constexpr const char* kPytestProject =
    "cat > test_calc.py <<'EOF'\n"
    "def add(a, b):\n"
    "    return a + b\n"
    "\n"
    "def test_adds():\n"
    "    assert add(1, 2) == 3\n"
    "\n"
    "def test_adds_wrongly():\n"
    "    assert add(2, 2) == 5\n"
    "EOF\n";

TEST_F(TaskTypes, PytestFailureInAFailingStepIsStillReported) {
  if (testing::run_process({"/usr/bin/python3", "-c", "import pytest"}).exit_code != 0) {
    GTEST_SKIP() << "LOUD SKIP: python3-pytest is missing";
  }
  const json spec = {
      {"type", "test"},
      {"steps",
       {{{"name", "pytest"},
         {"run", std::string(kPytestProject) +
                     "python3 -m pytest -p no:cacheprovider --junitxml=out/pytest.xml "
                     "test_calc.py # " +
                     marker_}}}},
      {"reports", {"out/*.xml"}}};
  const json result = run(spec, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["exitCode"], 1);  // pytest's own exit code
  EXPECT_EQ(result["error"]["code"], "tests_failed");
  const json& tests = result["details"]["tests"];
  EXPECT_EQ(tests["total"], 2);
  EXPECT_EQ(tests["passed"], 1);
  EXPECT_EQ(tests["failed"], 1);
  ASSERT_EQ(tests["failures"].size(), 1u);
  const json& f = tests["failures"][0];
  EXPECT_EQ(f["suite"], "pytest");
  EXPECT_EQ(f["classname"], "test_calc");
  EXPECT_EQ(f["name"], "test_adds_wrongly");
  EXPECT_EQ(f["file"], "test_calc.py");
  EXPECT_EQ(f["line"], 8);
  EXPECT_THAT(f["message"].get<std::string>(), HasSubstr("assert 4 == 5"));
}

// The exception comes from the standard library (locale.py, outside the checkout): the failure
// names the test's own line, which is what a GitHub annotation can point at.
TEST_F(TaskTypes, PytestFailureRaisedInTheStandardLibraryNamesTheTestsOwnLine) {
  if (testing::run_process({"/usr/bin/python3", "-c", "import pytest"}).exit_code != 0) {
    GTEST_SKIP() << "LOUD SKIP: python3-pytest is missing";
  }
  const json spec = {
      {"type", "test"},
      {"steps",
       {{{"name", "pytest"},
         {"run",
          "printf 'import locale\\n\\ndef test_locale():\\n    locale.setlocale(locale.LC_ALL, "
          "\"xx_XX.UTF-8\")\\n' > test_env_probe.py && python3 -m pytest -p no:cacheprovider "
          "--junitxml=out/pytest.xml test_env_probe.py # " +
              marker_}}}},
      {"reports", {"out/*.xml"}}};
  const json result = run(spec, 1);
  const json& tests = result["details"]["tests"];
  ASSERT_EQ(tests["failures"].size(), 1u) << result.dump(2);
  EXPECT_EQ(tests["failures"][0]["file"], "test_env_probe.py");
  EXPECT_EQ(tests["failures"][0]["line"], 4);
  EXPECT_THAT(tests["failures"][0]["message"].get<std::string>(), HasSubstr("locale"));
}

// A CMake project whose tests print as Unity does (one "file:line:test:FAIL: message" line per
// failed assertion) and as glibc's assert() does, run by the real ctest with --output-junit:
// CTest writes <failure message=""/>, and the failures still come with a message and a line.
constexpr const char* kCtestProject =
    "mkdir -p test && cat > CMakeLists.txt <<'EOF'\n"
    "cmake_minimum_required(VERSION 3.21)\n"
    "project(calc C)\n"
    "enable_testing()\n"
    "add_executable(test_calc test/test_calc.c)\n"
    "add_test(NAME calc COMMAND test_calc)\n"
    "add_executable(test_assert test/test_assert.c)\n"
    "add_test(NAME calc_assert COMMAND test_assert)\n"
    "add_test(NAME calc_ok COMMAND test_calc ok)\n"
    "EOF\n"
    "cat > test/test_calc.c <<'EOF'\n"
    "#include <stdio.h>\n"
    "#include <string.h>\n"
    "static short wrap(short x) { return (short)(x + 1); }\n"
    "int main(int argc, char** argv) {\n"
    "  if (argc > 1 && strcmp(argv[1], \"ok\") == 0) { puts(\"test/test_calc.c:5:test_ok:PASS\"); "
    "return 0; }\n"
    "  printf(\"test/test_calc.c:7:test_adds:PASS\\n\");\n"
    "  if (wrap(32766) != 32766) printf(\"%s:%d:test_wraps:FAIL: Expected %d Was %d\\n\", "
    "\"test/test_calc.c\", __LINE__, 32766, wrap(32766));\n"
    "  printf(\"\\n-----------------------\\n2 Tests 1 Failures 0 Ignored\\nFAIL\\n\");\n"
    "  return 1;\n"
    "}\n"
    "EOF\n"
    "cat > test/test_assert.c <<'EOF'\n"
    "#include <assert.h>\n"
    "int main(void) { int four = 2 + 2; assert(four == 5); return 0; }\n"
    "EOF\n"
    "cmake -S . -B build -G 'Unix Makefiles' >/dev/null && cmake --build build >/dev/null\n";

TEST_F(TaskTypes, CtestFailuresWithoutAMessageTakeItFromTheTestsOutput) {
  if (!on_path("cmake") || !on_path("ctest") || !on_path("gcc")) {
    GTEST_SKIP() << "LOUD SKIP: cmake, ctest or gcc is missing";
  }
  const json spec = {
      {"type", "test"},
      {"steps",
       {{{"name", "ctest"},
         {"run", std::string(kCtestProject) +
                     "cd build && ctest --output-junit ../out/ctest.xml # " + marker_}}}},
      {"reports", {"out/*.xml"}}};
  const json result = run(spec, 1);
  const json& tests = result["details"]["tests"];
  EXPECT_EQ(tests["total"], 3) << result.dump(2);
  EXPECT_EQ(tests["failed"], 2);
  ASSERT_EQ(tests["failures"].size(), 2u) << result.dump(2);
  std::map<std::string, json> by_name;
  for (const auto& f : tests["failures"]) by_name[f["name"].get<std::string>()] = f;
  EXPECT_EQ(by_name["calc"]["file"], "test/test_calc.c");
  EXPECT_EQ(by_name["calc"]["line"], 7);
  EXPECT_EQ(by_name["calc"]["message"], "Expected 32766 Was 32767");
  EXPECT_EQ(by_name["calc_assert"]["file"], "test/test_assert.c");
  EXPECT_EQ(by_name["calc_assert"]["line"], 2);
  EXPECT_THAT(by_name["calc_assert"]["message"].get<std::string>(),
              HasSubstr("Assertion `four == 5' failed."));
  EXPECT_THAT(result["error"]["message"].get<std::string>(), HasSubstr("at test/test_"));
}

TEST_F(TaskTypes, PassingPytestSucceedsWithItsTotals) {
  if (testing::run_process({"/usr/bin/python3", "-c", "import pytest"}).exit_code != 0) {
    GTEST_SKIP() << "LOUD SKIP: python3-pytest is missing";
  }
  const json spec = {{"type", "test"},
                     {"steps",
                      {{{"run",
                         "printf 'def test_ok():\\n    assert True\\n' > test_ok.py && "
                         "python3 -m pytest -p no:cacheprovider --junitxml=r/p.xml "
                         "test_ok.py"}}}},
                     {"reports", {"r/p.xml"}}};
  const json result = run(spec, 0);
  EXPECT_EQ(result["status"], "succeeded");
  EXPECT_TRUE(result["error"].is_null());
  EXPECT_EQ(result["details"]["tests"]["total"], 1);
  EXPECT_EQ(result["details"]["tests"]["passed"], 1);
  EXPECT_TRUE(result["details"]["tests"]["failures"].empty());
}

TEST_F(TaskTypes, TestTaskWithoutReportsFailsWithReportsMissing) {
  const json spec = {{"type", "test"},
                     {"steps", {{{"run", "echo tests ran but wrote nothing"}}}},
                     {"reports", {"build/test-results/*.xml"}}};
  const json result = run(spec, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["error"]["code"], "reports_missing");
  EXPECT_THAT(result["error"]["message"].get<std::string>(),
              HasSubstr("\"build/test-results/*.xml\""));
  EXPECT_TRUE(result["details"].is_null());
}

TEST_F(TaskTypes, FailingStepWithoutReportsKeepsItsOwnFailure) {
  const json spec = {{"type", "test"},
                     {"steps", {{{"run", "echo does not compile >&2; exit 2"}}}},
                     {"reports", {"out/*.xml"}}};
  const json result = run(spec, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["exitCode"], 2);
  EXPECT_TRUE(result["error"].is_null());
}

TEST_F(TaskTypes, MalformedReportFailsNamingTheFileAndPosition) {
  const json spec = {{"type", "test"},
                     {"steps",
                      {{{"run",
                         "mkdir -p out && printf '<testsuites>\\n<testsuite name=\"a\">\\n"
                         "<testcase name=\"x\">\\n</testsuites>\\n' > out/junit.xml"}}}},
                     {"reports", {"out/*.xml"}}};
  const json result = run(spec, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["error"]["code"], "report_malformed");
  const std::string message = result["error"]["message"];
  EXPECT_THAT(message, HasSubstr("test report out/junit.xml is not well-formed XML"));
  EXPECT_THAT(message, HasSubstr("at line 4, column"));
}

TEST_F(TaskTypes, ReportReachedThroughASymlinkIsNotRead) {
  const json spec = {{"type", "test"},
                     {"steps", {{{"run", "mkdir -p out && ln -s /etc/passwd out/junit.xml"}}}},
                     {"reports", {"out/*.xml"}}};
  const json result = run(spec, 1);
  // A link is never matched: the report is missing, and nothing of /etc/passwd is read.
  EXPECT_EQ(result["error"]["code"], "reports_missing");
  EXPECT_EQ(result.dump().find("root:x:0:0"), std::string::npos);
}

TEST_F(TaskTypes, SecretsInReportMessagesAreMasked) {
  const std::string secret = "rep0rt-s3cret-value";
  const json spec = {
      {"type", "test"},
      {"secrets", {{"TOKEN", secret}}},
      {"steps",
       {{{"run",
          "mkdir -p out && printf '<testsuite name=\"s\"><testcase name=\"t\"><failure "
          "message=\"login with %s refused\"/></testcase></testsuite>' \"$TOKEN\" > "
          "out/junit.xml"}}}},
      {"reports", {"out/*.xml"}}};
  const json result = run(spec, 1);
  EXPECT_EQ(result.dump().find(secret), std::string::npos) << result.dump();
  EXPECT_EQ(last_stderr_.find(secret), std::string::npos) << last_stderr_;
  EXPECT_EQ(result["details"]["tests"]["failures"][0]["message"], "login with [MASKED] refused");
  EXPECT_THAT(result["error"]["message"].get<std::string>(), HasSubstr("[MASKED]"));
}

// ---- security_scan ----

constexpr const char* kVulnerableC =
    "cat > vuln.c <<'EOF'\n"
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "int main(int argc, char** argv) {\n"
    "  char buf[16];\n"
    "  strcpy(buf, argv[1]);\n"
    "  return system(buf);\n"
    "}\n"
    "EOF\n";

// Only a fixed-size array: flawfinder's note level, nothing above.
constexpr const char* kNoteOnlyC =
    "cat > note.c <<'EOF'\n"
    "int main(void) {\n"
    "  char buf[16];\n"
    "  buf[0] = 0;\n"
    "  return buf[0];\n"
    "}\n"
    "EOF\n";

bool have_flawfinder() { return on_path("flawfinder"); }

TEST_F(TaskTypes, FlawfinderErrorsFailAScanAtTheDefaultThreshold) {
  if (!have_flawfinder()) GTEST_SKIP() << "LOUD SKIP: flawfinder is missing";
  const json spec = {{"type", "security_scan"},
                     {"steps",
                      {{{"name", "flawfinder"},
                        {"run", std::string(kVulnerableC) +
                                    "flawfinder --sarif vuln.c > scan.sarif # " + marker_}}}},
                     {"sarif", "scan.sarif"}};
  const json result = run(spec, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["error"]["code"], "findings_over_threshold");
  EXPECT_THAT(result["error"]["message"].get<std::string>(),
              HasSubstr("Flawfinder found 2 findings at or above \"error\" (2 error)"));
  const json& scan = result["details"]["scan"];
  EXPECT_EQ(scan["tool"], "Flawfinder");
  EXPECT_EQ(scan["failOn"], "error");
  EXPECT_EQ(scan["sarif"], "scan.sarif");
  EXPECT_EQ(scan["total"], 3);
  EXPECT_EQ(scan["counts"], json({{"error", 2}, {"warning", 0}, {"note", 1}, {"none", 0}}));
  ASSERT_EQ(scan["findings"].size(), 3u);
  // Most severe first: strcpy (line 5) and system (line 6), then the array (line 4).
  EXPECT_EQ(scan["findings"][0]["level"], "error");
  EXPECT_EQ(scan["findings"][0]["file"], "vuln.c");
  EXPECT_EQ(scan["findings"][0]["line"], 5);
  EXPECT_THAT(scan["findings"][0]["message"].get<std::string>(), HasSubstr("strcpy"));
  EXPECT_EQ(scan["findings"][1]["line"], 6);
  EXPECT_EQ(scan["findings"][2]["level"], "note");
  EXPECT_EQ(scan["findings"][2]["line"], 4);
  EXPECT_FALSE(scan["findings"][0]["ruleId"].get<std::string>().empty());
}

TEST_F(TaskTypes, FailOnSetsTheLowestLevelThatFailsTheScan) {
  if (!have_flawfinder()) GTEST_SKIP() << "LOUD SKIP: flawfinder is missing";
  json spec = {
      {"type", "security_scan"},
      {"steps", {{{"run", std::string(kNoteOnlyC) + "flawfinder --sarif note.c > out.sarif"}}}},
      {"sarif", "out.sarif"},
      {"failOn", "warning"}};
  const json passed = run(spec, 0);
  EXPECT_EQ(passed["status"], "succeeded");
  EXPECT_EQ(passed["details"]["scan"]["counts"]["note"], 1);
  EXPECT_EQ(passed["details"]["scan"]["failOn"], "warning");

  spec["failOn"] = "note";
  const json failed = run(spec, 1);
  EXPECT_EQ(failed["status"], "failed");
  EXPECT_EQ(failed["error"]["code"], "findings_over_threshold");
  EXPECT_THAT(failed["error"]["message"].get<std::string>(),
              HasSubstr("1 finding at or above \"note\""));

  spec["failOn"] = "critical";
  const json refused = run(spec, 2);
  EXPECT_THAT(refused["error"]["message"].get<std::string>(), HasSubstr("$.failOn"));
}

TEST_F(TaskTypes, MalformedOrMissingSarifFailsTheScan) {
  json spec = {{"type", "security_scan"},
               {"steps", {{{"run", "printf '{\"version\": \"2.1.0\",\\n \"runs\": [' > s.sarif"}}}},
               {"sarif", "s.sarif"}};
  const json malformed = run(spec, 1);
  EXPECT_EQ(malformed["error"]["code"], "report_malformed");
  EXPECT_THAT(malformed["error"]["message"].get<std::string>(),
              HasSubstr("SARIF file s.sarif is not valid JSON: parse error at line 2"));

  spec["steps"] = {{{"run", "true"}}};
  const json missing = run(spec, 1);
  EXPECT_EQ(missing["error"]["code"], "reports_missing");
  EXPECT_THAT(missing["error"]["message"].get<std::string>(),
              HasSubstr("SARIF file \"s.sarif\" does not exist"));
}

TEST_F(TaskTypes, FailingScannerStepStillReportsItsFindings) {
  const json spec = {{"type", "security_scan"},
                     {"steps",
                      {{{"run",
                         "printf '{\"version\":\"2.1.0\",\"runs\":[{\"tool\":{\"driver\":{\"name\":"
                         "\"bandit\"}},\"results\":[{\"ruleId\":\"B602\",\"level\":\"error\","
                         "\"message\":{\"text\":\"shell=True\"}}]}]}' > s.sarif; exit 3"}}}},
                     {"sarif", "s.sarif"}};
  const json result = run(spec, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["exitCode"], 3);
  EXPECT_EQ(result["error"]["code"], "findings_over_threshold");
  EXPECT_EQ(result["details"]["scan"]["counts"]["error"], 1);
  EXPECT_EQ(result["details"]["scan"]["findings"][0]["ruleId"], "B602");
}

TEST_F(TaskTypes, TimedOutTestStepKeepsTheTimeoutButReportsWhatItWrote) {
  const json spec = {{"type", "test"},
                     // The report is written by a step of its own and only the next step has
                     // the deadline: a slow machine (a VM under emulation) may take most of a
                     // second to start a shell.
                     {"steps",
                      {{{"run",
                         "printf '<testsuite name=\"s\"><testcase name=\"a\"/>"
                         "</testsuite>' > junit.xml"}},
                       {{"run", "sleep 60 # " + marker_}, {"timeout", "1s"}}}},
                     {"reports", {"*.xml"}}};
  const json result = run(spec, 3, {"--grace-period", "1s"});
  EXPECT_EQ(result["status"], "timeout");
  EXPECT_EQ(result["error"]["code"], "timeout");
  EXPECT_EQ(result["details"]["tests"]["total"], 1);
}

TEST_F(TaskTypes, ScanHasNoNetworkUnlessTheSpecAsksForIt) {
  const json spec = {{"type", "security_scan"},
                     {"steps",
                      {{{"run",
                         "awk 'NR > 2 { print $1 }' /proc/net/dev; printf "
                         "'{\"version\":\"2.1.0\",\"runs\":[]}' > s.sarif"}}}},
                     {"sarif", "s.sarif"}};
  const json result = run(spec, 0);
  EXPECT_EQ(result["steps"][0]["stdout"], "lo:\n");
  EXPECT_EQ(result["details"]["scan"]["total"], 0);
}

TEST_F(TaskTypes, ReportInputsAreRequiredAndChecked) {
  const json test = run({{"type", "test"}, {"steps", {{{"run", "true"}}}}}, 2);
  EXPECT_THAT(test["error"]["message"].get<std::string>(), HasSubstr("$.reports: is required"));
  const json scan = run(
      {{"type", "security_scan"}, {"steps", {{{"run", "true"}}}}, {"sarif", "../scan.sarif"}}, 2);
  EXPECT_THAT(scan["error"]["message"].get<std::string>(),
              HasSubstr("$.sarif: \"../scan.sarif\" has a \"..\" component"));
}

}  // namespace
}  // namespace tamma
