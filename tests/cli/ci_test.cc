// `tamma-worker run` under a CI system and on a console: the real binary with the variables a
// runner sets, checking the log grouping, annotations, job summary, JUnit file and progress.

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <sstream>

#include "support/test_support.h"

namespace tamma {
namespace {

using ::testing::ContainerEq;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using testing::ProcessResult;
using testing::read_file;
using ::testing::StartsWith;
using testing::TempDir;
using testing::write_file;
using json = nlohmann::json;

const std::string kSecret = "ci-s3cret-value-9911";

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class CiRun : public ::testing::Test {
 protected:
  void TearDown() override {
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(workspaces_.path())) {
      left.push_back(e.path().filename());
    }
    EXPECT_TRUE(left.empty()) << "workspace root not empty";
  }

  std::string task_file(const json& spec) {
    const auto file = files_.path() / ("task-" + std::to_string(++count_) + ".json");
    write_file(file, spec.dump());
    return file.string();
  }

  // The worker with a clean CI environment plus `env` (runner variables are unset first, so
  // a test that runs inside a real CI job still sees only what it sets).
  ProcessResult run(std::vector<std::string> args, std::vector<std::string> env,
                    const std::filesystem::path& cwd = "/") {
    std::string command = "cd '" + cwd.string() +
                          "' && unset GITHUB_ACTIONS GITLAB_CI GITHUB_STEP_SUMMARY "
                          "JENKINS_URL JENKINS_HOME BUILD_ID TAMMA_JUNIT_OUTPUT && exec env";
    for (const auto& e : env) command += " '" + e + "'";
    command += std::string(" '") + TAMMA_WORKER_BINARY + "' run --workspace-root '" +
               workspaces_.path().string() + "'";
    for (const auto& a : args) command += " '" + a + "'";
    return testing::run_process({"/bin/sh", "-c", command});
  }

  // A command task of two steps: the first tries to issue a workflow command and leaves its
  // last line open, the second prints the secret and fails.
  json two_steps() const {
    return {{"id", "ci-task"},
            {"type", "command"},
            {"secrets", {{"TOKEN", kSecret}}},
            {"steps",
             {{{"name", "one"}, {"run", "echo '::error::injected'; printf 'no newline'"}},
              {{"name", "two"}, {"run", "echo \"token $TOKEN\"; exit 3"}}}}};
  }

  // An external handler whose answer carries test failures and findings, as the test and
  // scan handlers report them; it mentions the secret it was given.
  std::string details_handler(const TempDir& dir) {
    const json answer = {
        {"status", "failed"},
        {"exitCode", 1},
        {"error",
         {{"code", "tests_failed"}, {"message", "1 of 2 tests failed"}, {"retryable", false}}},
        {"details",
         {{"tests",
           {{"total", 2},
            {"passed", 1},
            {"failed", 1},
            {"errors", 0},
            {"skipped", 0},
            {"durationMs", 5},
            {"reports", {"junit.xml"}},
            {"failures",
             {{{"suite", "calc"},
               {"name", "adds"},
               {"classname", "calc"},
               {"message", "want 4, got 5\nsee " + kSecret},
               {"file", "test/calc.c"},
               {"line", 7},
               {"kind", "failure"}}}}}},
          {"scan",
           {{"tool", "flawfinder"},
            {"failOn", "error"},
            {"total", 1},
            {"counts", {{"error", 0}, {"warning", 1}, {"note", 0}, {"none", 0}}},
            {"sarif", "scan.sarif"},
            {"findings",
             {{{"ruleId", "FF1004"},
               {"level", "warning"},
               {"message", "strcpy: no bounds"},
               {"file", "src/a.c"},
               {"line", 3}}}}}}}}};
    const auto handler = dir.path() / "handler.sh";
    write_file(handler, "#!/bin/sh\ncat >/dev/null\ncat <<'EOF'\n" + answer.dump() + "\nEOF\n");
    std::filesystem::permissions(handler, std::filesystem::perms::all);
    std::filesystem::permissions(dir.path(), std::filesystem::perms::others_exec,
                                 std::filesystem::perm_options::add);
    return handler.string();
  }

  TempDir files_;
  TempDir workspaces_;
  int count_ = 0;
};

TEST_F(CiRun, GithubGroupsEachStepAndTheTaskCannotIssueWorkflowCommands) {
  const auto summary = files_.path() / "summary.md";
  write_file(summary, "earlier step's summary\n");
  ProcessResult r = run({task_file(two_steps())},
                        {"GITHUB_ACTIONS=true", "GITHUB_STEP_SUMMARY=" + summary.string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 12u) << r.out;
  EXPECT_EQ(lines[0], "::group::[1/2 0%25] one");  // %25: the runner unescapes it to %
  EXPECT_THAT(lines[1], MatchesRegex("::stop-commands::tamma-[0-9a-f]{16}"));
  const std::string token1 = lines[1].substr(17);
  EXPECT_EQ(lines[2], "::error::injected");  // inert: commands are stopped
  EXPECT_EQ(lines[3], "no newline");
  EXPECT_EQ(lines[4], "::" + token1 + "::");
  EXPECT_EQ(lines[5], "::endgroup::");
  EXPECT_EQ(lines[6], "::group::[2/2 50%25] two");
  const std::string token2 = lines[7].substr(17);
  EXPECT_NE(token1, token2);
  EXPECT_EQ(lines[8], "token [MASKED]");
  EXPECT_EQ(lines[9], "::" + token2 + "::");
  EXPECT_EQ(lines[10], "::endgroup::");
  EXPECT_EQ(lines[11], "::error title=tamma-worker::task ci-task failed (exit code 3)");

  const std::string md = read_file(summary);
  EXPECT_THAT(md,
              StartsWith("earlier step's summary\n### ❌ tamma-worker: command `ci-task` failed"));
  EXPECT_THAT(md, HasSubstr("| status | failed (exit code 3) |"));
  EXPECT_THAT(md, HasSubstr("| one | succeeded (exit 0) |"));
  EXPECT_THAT(md, HasSubstr("| two | failed (exit 3) |"));
  EXPECT_THAT(md, HasSubstr("#### Usage\n\npeak memory "));
  EXPECT_THAT(r.out + r.err + md, Not(HasSubstr(kSecret)));
}

TEST_F(CiRun, GithubAnnotatesFailedTestsAndFindingsAndSummarizesThem) {
  TempDir handlers("/var/tmp");
  const auto summary = files_.path() / "summary.md";
  const json spec = {{"type", "unit"}, {"secrets", {{"TOKEN", kSecret}}}};
  ProcessResult r = run({"--handler", "unit=" + details_handler(handlers), task_file(spec)},
                        {"GITHUB_ACTIONS=true", "GITHUB_STEP_SUMMARY=" + summary.string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\n::error title=tamma-worker::task "));
  EXPECT_THAT(r.out, HasSubstr("\n::error file=test/calc.c,line=7,title=calc.adds::want 4, got "
                               "5%0Asee [MASKED]\n"));
  EXPECT_THAT(r.out,
              HasSubstr("\n::warning file=src/a.c,line=3,title=FF1004::strcpy: no bounds\n"));
  const std::string md = read_file(summary);
  EXPECT_THAT(md, HasSubstr("2 tests: 1 passed, 1 failed, 0 errors, 0 skipped"));
  EXPECT_THAT(md, HasSubstr("| calc.adds | test/calc.c:7 | want 4, got 5<br>see [MASKED] |"));
  EXPECT_THAT(md, HasSubstr("| warning | FF1004 | src/a.c:3 | strcpy: no bounds |"));
  EXPECT_THAT(r.out + r.err + md, Not(HasSubstr(kSecret)));
}

TEST_F(CiRun, GithubReportsARefusedSpecToo) {
  const auto summary = files_.path() / "summary.md";
  ProcessResult r = run({task_file({{"type", "command"}, {"steps", {{{"run", 5}}}}})},
                        {"GITHUB_ACTIONS=true", "GITHUB_STEP_SUMMARY=" + summary.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.out, StartsWith("::error title=tamma-worker::task error: invalid task spec:%0A  "
                                "$.steps[0].run: must be"));
  EXPECT_THAT(read_file(summary), StartsWith("### ❌ tamma-worker: error\n"));
}

TEST_F(CiRun, GithubWithJsonKeepsStdoutForTheResult) {
  ProcessResult r = run({"--json", task_file(two_steps())}, {"GITHUB_ACTIONS=true"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(json::parse(r.out)["status"], "failed");
  EXPECT_THAT(r.err, HasSubstr("::group::[1/2 0%25] one\n"));
}

TEST_F(CiRun, GitlabSectionsAndAJunitReportInTheWorkingDirectory) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "python3 is needed to parse the XML";
  TempDir cwd;
  ProcessResult r = run({task_file(two_steps())}, {"GITLAB_CI=true"}, cwd.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 7u) << r.out;
  EXPECT_THAT(lines[0],
              MatchesRegex("\x1b\\[0Ksection_start:[0-9]+:tamma_step_1\\[collapsed=true\\]"
                           "\r\x1b\\[0K\\[1/2 0%\\] one"));
  EXPECT_EQ(lines[1], "::error::injected");
  EXPECT_EQ(lines[2], "no newline");
  EXPECT_THAT(lines[3], MatchesRegex("\x1b\\[0Ksection_end:[0-9]+:tamma_step_1\r\x1b\\[0K"));
  EXPECT_EQ(lines[4].find("\x1b[0Ksection_start:"), 0u);
  EXPECT_EQ(lines[5], "token [MASKED]");
  EXPECT_EQ(lines[6].find("\x1b[0Ksection_end:"), 0u);

  const auto report = cwd.path() / "tamma-junit.xml";
  ASSERT_TRUE(std::filesystem::exists(report));
  const std::string xml = read_file(report);
  EXPECT_THAT(xml, Not(HasSubstr(kSecret)));
  ProcessResult parsed =
      testing::run_process({"/usr/bin/python3", "-c",
                            "import sys, xml.etree.ElementTree as E\n"
                            "for c in E.parse(sys.argv[1]).getroot().iter('testcase'):\n"
                            "  print(c.get('name'), [x.tag for x in c])\n",
                            report.string()});
  EXPECT_EQ(parsed.exit_code, 0) << parsed.err << xml;
  EXPECT_EQ(parsed.out, "one []\ntwo ['failure']\n");
}

TEST_F(CiRun, JunitOutFlagWritesTheParsedTestsAnywhere) {
  TempDir handlers("/var/tmp");
  const auto report = files_.path() / "out.xml";
  ProcessResult r = run({"--junit-out", report.string(), "--handler",
                         "unit=" + details_handler(handlers), task_file({{"type", "unit"}})},
                        {});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const std::string xml = read_file(report);
  EXPECT_THAT(
      xml,
      HasSubstr("<testcase classname=\"calc\" name=\"adds\" file=\"test/calc.c\" line=\"7\">"));
  // Plain output elsewhere: no workflow commands, no sections.
  EXPECT_THAT(r.out, Not(HasSubstr("::")));
  EXPECT_THAT(r.out, Not(HasSubstr("section_start")));
}

TEST_F(CiRun, ProgressOffATerminalIsOneLinePerStepStartAndEnd) {
  const json spec = {{"type", "command"},
                     {"steps",
                      {{{"name", "a"}, {"run", "true"}},
                       {{"name", "b"}, {"run", "true"}},
                       {{"name", "c"}, {"run", "true"}},
                       {{"name", "d"}, {"run", "true"}}}}};
  ProcessResult r = run({task_file(spec)}, {});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto lines = lines_of(r.err);
  ASSERT_EQ(lines.size(), 9u) << r.err;  // 4 starts, 4 ends, the final summary
  EXPECT_EQ(lines[0], "==> [1/4 0%] a");
  EXPECT_THAT(lines[1], StartsWith("==> a: succeeded, exit code 0 in "));
  EXPECT_EQ(lines[2], "==> [2/4 25%] b");
  EXPECT_EQ(lines[4], "==> [3/4 50%] c");
  EXPECT_EQ(lines[6], "==> [4/4 75%] d");
  EXPECT_THAT(lines[8], StartsWith("tamma-worker: task "));
  EXPECT_EQ(r.err.find('\r'), std::string::npos);
}

// A step whose output does not end in a newline: the worker's own lines still start lines of
// their own where stdout and stderr meet (2>&1, as a CI log has them), and nowhere is a
// newline added to a stream that did not need one.
TEST_F(CiRun, AStepEndingWithoutANewlineDoesNotGlueTheNextMarkerToIt) {
  const json spec = {{"type", "command"},
                     {"steps",
                      {{{"name", "a"}, {"run", "printf 'no newline'"}},
                       {{"name", "b"}, {"run", "printf 'last'"}}}}};
  const std::string file = task_file(spec);
  std::string command = std::string("unset GITHUB_ACTIONS GITLAB_CI; '") + TAMMA_WORKER_BINARY +
                        "' run --workspace-root '" + workspaces_.path().string() + "' '" + file +
                        "' 2>&1";
  ProcessResult merged = testing::run_process({"/bin/sh", "-c", command});
  EXPECT_EQ(merged.exit_code, 0) << merged.out;
  const auto lines = lines_of(merged.out);
  ASSERT_GE(lines.size(), 6u) << merged.out;
  EXPECT_EQ(lines[0], "==> [1/2 0%] a");
  EXPECT_EQ(lines[1], "no newline");
  EXPECT_THAT(lines[2], StartsWith("==> a: succeeded"));
  EXPECT_EQ(lines[3], "==> [2/2 50%] b");
  EXPECT_EQ(lines[4], "last");
  EXPECT_THAT(lines[5], StartsWith("==> b: succeeded"));

  // Apart, stdout is exactly what the task printed: the markers went to stderr.
  ProcessResult apart = run({file}, {});
  EXPECT_EQ(apart.exit_code, 0) << apart.err;
  EXPECT_EQ(apart.out, "no newlinelast");
}

// On a terminal (a pty here) the progress is one line redrawn in place, cleared before the
// task's own output and before the end-of-step line.
TEST_F(CiRun, ProgressOnATerminalRewritesOneLine) {
  const json spec = {
      {"type", "command"},
      {"steps",
       {{{"name", "first"}, {"run", "echo out >&2"}}, {{"name", "second"}, {"run", "true"}}}}};
  const std::string file = task_file(spec);
  int master = -1, slave = -1;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(slave, STDERR_FILENO);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDOUT_FILENO);
    ::close(master);
    ::execl(TAMMA_WORKER_BINARY, TAMMA_WORKER_BINARY, "run", "--workspace-root",
            workspaces_.path().c_str(), file.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(slave);
  std::string screen;
  char buffer[4096];
  for (;;) {
    pollfd p{master, POLLIN, 0};
    if (::poll(&p, 1, 120'000) <= 0) break;  // a safety limit, not an assertion
    const ssize_t n = ::read(master, buffer, sizeof buffer);
    if (n <= 0) break;  // EIO once the worker has exited and the pty has no writer
    screen.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(master);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << screen;
  // The pty turns \n into \r\n.
  EXPECT_THAT(screen, HasSubstr("\r\x1b[K[  0%] step 1/2: first ("));
  EXPECT_THAT(screen, HasSubstr("\r\x1b[Kout\r\n"));
  EXPECT_THAT(screen, HasSubstr("\r\x1b[K==> first: succeeded"));
  EXPECT_THAT(screen, HasSubstr("\r\x1b[K[ 50%] step 2/2: second ("));
  EXPECT_THAT(screen, Not(HasSubstr("==> [")));
}

}  // namespace
}  // namespace tamma
