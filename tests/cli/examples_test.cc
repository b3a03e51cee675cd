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
  // Read by the test handler where it is built in (the agreed details schema).
  if (result["details"].contains("tests")) {
    EXPECT_EQ(result["details"]["tests"]["failed"], 1);
    EXPECT_EQ(result["details"]["tests"]["failures"][0]["file"],
              "examples/c-test/tests/test_calc.c");
  }
}

TEST_F(Examples, CScanFindsTheUnsafeCalls) {
  if (::access("/usr/bin/flawfinder", X_OK) != 0) GTEST_SKIP() << "flawfinder is not installed";
  const auto out = files_.path() / "out";
  ProcessResult r = testing::run_process(
      {TAMMA_WORKER_BINARY, "run", "--json", "--workspace-root", workspaces_.path().string(),
       "--repository", "file://" + repo_.string(), "--artifacts-dir", out.string(),
       (fs::path(TAMMA_SOURCE_DIR) / "examples/c-scan/task.json").string()});
  const json result = json::parse(r.out);
  ASSERT_GE(result["steps"].size(), 2u) << result.dump(2);
  EXPECT_EQ(result["steps"][1]["status"], "succeeded");
  if (result["details"].contains("scan")) {
    // The security_scan handler: error-level findings and failOn "error" fail the task.
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_GE(result["details"]["scan"]["counts"]["error"].get<int>(), 3);
  } else {
    // Steps only: the SARIF file is the artifact.
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const json sarif = json::parse(testing::read_file(out / "scan.sarif"));
    std::vector<std::string> rules;
    for (const auto& finding : sarif["runs"][0]["results"]) {
      if (finding["level"] == "error") rules.push_back(finding["ruleId"]);
    }
    EXPECT_EQ(rules.size(), 3u) << sarif.dump(2);
  }
}

}  // namespace
}  // namespace tamma
