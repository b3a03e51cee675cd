// The examples run as examples/README.md says: the real binary checks a git repository of
// this source tree's examples out into the sandbox and runs each task file unchanged.

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "support/test_support.h"

namespace tamma {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::ProcessResult;
using testing::TempDir;
using json = nlohmann::json;

class Examples : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* tool : {"/usr/bin/git", "/usr/bin/make", "/usr/bin/gcc"}) {
      if (::access(tool, X_OK) != 0) GTEST_SKIP() << tool << " is not installed (scripts/setup.sh)";
    }
    // A regular clone holding the examples, as the README's `--repository file://$PWD` sees
    // this repository.
    repo_ = files_.path() / "repo";
    fs::create_directories(repo_);
    fs::copy(fs::path(TAMMA_SOURCE_DIR) / "examples", repo_ / "examples",
             fs::copy_options::recursive);
    ProcessResult r = testing::run_process(
        {"/bin/sh", "-ec",
         "cd '" + repo_.string() +
             "' && git init -q && git add -A && git -c user.name=t -c user.email=t@example.com "
             "commit -qm examples"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  void TearDown() override {
    EXPECT_TRUE(fs::is_empty(workspaces_.path())) << "workspace root not empty";
  }

  json run(const std::string& example, int expected_exit, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{TAMMA_WORKER_BINARY,
                                  "run",
                                  "--json",
                                  "--workspace-root",
                                  workspaces_.path().string(),
                                  "--repository",
                                  "file://" + repo_.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back((fs::path(TAMMA_SOURCE_DIR) / "examples" / example / "task.json").string());
    ProcessResult r = testing::run_process(argv);
    EXPECT_EQ(r.exit_code, expected_exit) << r.err;
    return json::parse(r.out);
  }

  TempDir files_;
  TempDir workspaces_;
  fs::path repo_;
};

TEST_F(Examples, CBuildMakesTheBinaryAsArtifact) {
  const auto out = files_.path() / "out";
  const json result = run("c-build", 0, {"--artifacts-dir", out.string()});
  ASSERT_EQ(result["steps"].size(), 3u) << result.dump(2);
  EXPECT_EQ(result["steps"][0]["name"], "checkout");
  EXPECT_EQ(result["steps"][1]["name"], "compile");
  EXPECT_EQ(result["steps"][2]["name"], "check");
  ASSERT_EQ(result["artifacts"].size(), 1u);
  EXPECT_EQ(result["artifacts"][0]["path"], "examples/c-build/greet");
  const ProcessResult greet =
      testing::run_process({(out / "examples/c-build/greet").string(), "CI"});
  EXPECT_EQ(greet.out, "hello, CI\n");
}

TEST_F(Examples, CTestFailsOnItsOneFailingTest) {
  const json result = run("c-test", 1);
  ASSERT_EQ(result["steps"].size(), 2u) << result.dump(2);
  const std::string out = result["steps"][1]["stdout"];
  EXPECT_THAT(out, HasSubstr("ok   calc.adds\n"));
  EXPECT_THAT(out, HasSubstr("FAIL calc.clamps_to_the_upper_bound\n"));
  EXPECT_THAT(out, HasSubstr("1 of 3 tests failed\n"));
  EXPECT_EQ(result["details"]["tests"]["total"], 3) << result.dump(2);
  EXPECT_EQ(result["details"]["tests"]["failed"], 1);
  EXPECT_EQ(result["details"]["tests"]["failures"][0]["file"], "examples/c-test/tests/test_calc.c");
}

TEST_F(Examples, CScanFindsTheUnsafeCalls) {
  if (::access("/usr/bin/flawfinder", X_OK) != 0) GTEST_SKIP() << "flawfinder is not installed";
  const auto out = files_.path() / "out";
  ProcessResult r = testing::run_process(
      {TAMMA_WORKER_BINARY, "run", "--json", "--workspace-root", workspaces_.path().string(),
       "--repository", "file://" + repo_.string(), "--artifacts-dir", out.string(),
       (fs::path(TAMMA_SOURCE_DIR) / "examples/c-scan/task.json").string()});
  const json result = json::parse(r.out);
  ASSERT_EQ(result["steps"].size(), 2u) << result.dump(2);  // the checkout, the scanner
  // The scanner itself succeeded; its error-level findings with failOn "error" fail the task.
  EXPECT_EQ(result["steps"][1]["status"], "succeeded");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["details"]["scan"]["counts"]["error"], 3) << result.dump(2);
  std::vector<std::string> rules;
  for (const auto& finding : result["details"]["scan"]["findings"]) {
    if (finding["level"] == "error") rules.push_back(finding["ruleId"]);
  }
  EXPECT_EQ(rules.size(), 3u) << result.dump(2);
  // The SARIF file is still the artifact, for code-scanning uploads.
  EXPECT_TRUE(fs::is_regular_file(out / "scan.sarif"));
}

// The self-contained examples need no checkout: they write their own sources.
json run_standalone(const fs::path& workspace_root, const std::string& example, int expected_exit) {
  ProcessResult r = testing::run_process(
      {TAMMA_WORKER_BINARY, "run", "--json", "--workspace-root", workspace_root.string(),
       (fs::path(TAMMA_SOURCE_DIR) / "examples" / example / "task.json").string()});
  EXPECT_EQ(r.exit_code, expected_exit) << r.err;
  return json::parse(r.out);
}

TEST_F(Examples, PytestReportsItsOneFailingTest) {
  if (::access("/usr/bin/python3", X_OK) != 0 ||
      testing::run_process({"/usr/bin/python3", "-c", "import pytest"}).exit_code != 0) {
    GTEST_SKIP() << "python3-pytest is not installed (scripts/setup.sh)";
  }
  const json result = run_standalone(workspaces_.path(), "pytest", 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["details"]["tests"]["total"], 2) << result.dump(2);
  EXPECT_EQ(result["details"]["tests"]["failed"], 1);
  EXPECT_THAT(result["details"]["tests"]["failures"][0]["name"].get<std::string>(),
              HasSubstr("test_adds_wrongly"));
}

TEST_F(Examples, FlawfinderReportsStrcpyAndSystem) {
  if (::access("/usr/bin/flawfinder", X_OK) != 0) GTEST_SKIP() << "flawfinder is not installed";
  const json result = run_standalone(workspaces_.path(), "flawfinder", 1);
  EXPECT_EQ(result["status"], "failed");
  std::vector<std::string> errors;
  for (const auto& finding : result["details"]["scan"]["findings"]) {
    if (finding["level"] == "error") errors.push_back(finding["message"]);
  }
  EXPECT_THAT(errors, ::testing::Contains(HasSubstr("buffer/strcpy"))) << result.dump(2);
  EXPECT_THAT(errors, ::testing::Contains(HasSubstr("shell/system"))) << result.dump(2);
}

}  // namespace
}  // namespace tamma
