// CI formatters: GitHub workflow-command escaping, annotations and job summary, GitLab
// sections, JUnit report (checked as XML by python3's parser), secrets masked throughout.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/test_support.h"
#include "worker/ci_output.h"

namespace tamma::worker::ci {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;
using protocol::TaskStatus;

const std::string kSecret = "hunter2-s3cret";

// A failed test task with the details the test handler reports (agreed schema).
protocol::TaskResult failed_test_result() {
  protocol::TaskResult result;
  result.task_id = "t-1";
  result.type = "test";
  result.status = TaskStatus::kFailed;
  result.exit_code = 1;
  result.duration_ms = 1234;
  protocol::StepResult build;
  build.name = "build";
  build.duration_ms = 800;
  build.exit_code = 0;
  protocol::StepResult test;
  test.name = "unit | tests";
  test.status = TaskStatus::kFailed;
  test.exit_code = 1;
  test.duration_ms = 400;
  test.stderr_capture.text = "assertion <failed> & \x01 bad byte \xff " + kSecret + "\n";
  result.steps = {build, test};
  result.error = protocol::TaskError{"test_failed", "1 test failed", false};
  result.details = {{"tests",
                     {{"total", 3},
                      {"passed", 1},
                      {"failed", 1},
                      {"errors", 1},
                      {"skipped", 0},
                      {"durationMs", 20},
                      {"reports", {"out/junit.xml"}},
                      {"failures",
                       {{{"suite", "math"},
                         {"name", "adds, carefully"},
                         {"classname", "math.Add"},
                         {"message", "expected 4\nbut got 5: 100% wrong, token " + kSecret},
                         {"file", "src/add:test.c"},
                         {"line", 12},
                         {"kind", "failure"}},
                        {{"suite", "io"},
                         {"name", "reads"},
                         {"classname", ""},
                         {"message", "segfault"},
                         {"file", nullptr},
                         {"line", nullptr},
                         {"kind", "error"}}}}}},
                    {"scan",
                     {{"tool", "flawfinder"},
                      {"failOn", "error"},
                      {"total", 3},
                      {"counts", {{"error", 1}, {"warning", 1}, {"note", 1}, {"none", 0}}},
                      {"sarif", "out/scan.sarif"},
                      {"findings",
                       {{{"ruleId", "FF1001"},
                         {"level", "error"},
                         {"message", "buffer <overflow>"},
                         {"file", "a.c"},
                         {"line", 3}},
                        {{"ruleId", "FF1002"},
                         {"level", "warning"},
                         {"message", "race"},
                         {"file", "b.c"},
                         {"line", nullptr}},
                        {{"ruleId", "FF1003"},
                         {"level", "note"},
                         {"message", "style"},
                         {"file", nullptr},
                         {"line", nullptr}}}}}},
                    {"checkout",
                     {{"url", "https://git.example.com/r.git"},
                      {"ref", "main"},
                      {"commit", std::string(40, 'a')},
                      {"depth", 1}}}};
  return result;
}

TEST(CiOutput, DetectsTheRunner) {
  const auto env = [](std::map<std::string, std::string> vars) {
    return [vars](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  EXPECT_EQ(detect(env({})), System::kNone);
  EXPECT_EQ(detect(env({{"GITHUB_ACTIONS", "true"}})), System::kGithub);
  EXPECT_EQ(detect(env({{"GITLAB_CI", "true"}})), System::kGitlab);
  EXPECT_EQ(detect(env({{"GITLAB_CI", "false"}})), System::kNone);
  EXPECT_EQ(detect(env({{"JENKINS_URL", "https://ci.example.com/"}, {"BUILD_NUMBER", "7"}})),
            System::kJenkins);
  EXPECT_EQ(detect(env({{"JENKINS_HOME", "/var/lib/jenkins"}, {"BUILD_ID", "7"}})),
            System::kJenkins);
  EXPECT_EQ(detect(env({{"JENKINS_HOME", "/var/lib/jenkins"}})), System::kNone);
  EXPECT_EQ(detect(env({{"JENKINS_URL", ""}})), System::kNone);
}

TEST(CiOutput, GithubEscaping) {
  EXPECT_EQ(github_escape_data("100%\r\nok: a,b"), "100%25%0D%0Aok: a,b");
  EXPECT_EQ(github_escape_property("100%\r\nok: a,b"), "100%25%0D%0Aok%3A a%2Cb");
}

TEST(CiOutput, GithubAnnotationsForFailuresAndFindings) {
  const SecretMasker masker({kSecret});
  const std::string out = github_annotations(failed_test_result(), masker);
  EXPECT_THAT(
      out, HasSubstr("::error title=tamma-worker::task t-1 failed (exit code 1): 1 test failed\n"));
  EXPECT_THAT(out, HasSubstr("::error file=src/add%3Atest.c,line=12,title=math.Add.adds%2C "
                             "carefully::expected 4%0Abut got 5: 100%25 wrong, token [MASKED]\n"));
  EXPECT_THAT(out, HasSubstr("::error title=io.reads::segfault\n"));
  EXPECT_THAT(out, HasSubstr("::error file=a.c,line=3,title=FF1001::buffer <overflow>\n"));
  EXPECT_THAT(out, HasSubstr("::warning file=b.c,title=FF1002::race\n"));
  EXPECT_THAT(out, HasSubstr("::notice title=FF1003::style\n"));
  EXPECT_THAT(out, Not(HasSubstr(kSecret)));
  // One line per annotation: the multi-line message stayed on its line.
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 6);
}

TEST(CiOutput, HintsBecomeNoticesAndSummaryRows) {
  protocol::TaskResult result;
  result.task_id = "t";
  result.status = protocol::TaskStatus::kFailed;
  result.hints.push_back("the task has no network: 3 attempts, one says: a,b");
  EXPECT_THAT(github_annotations(result, SecretMasker({}), 50),
              HasSubstr("::notice title=tamma-worker::the task has no network: 3 attempts, one "
                        "says: a,b\n"));
  EXPECT_THAT(github_summary(result, SecretMasker({}), 50),
              HasSubstr("| hint | the task has no network: 3 attempts, one says: a,b |\n"));
}

TEST(CiOutput, GithubAnnotationsAreCapped) {
  protocol::TaskResult result;
  result.task_id = "t";
  result.details["tests"]["failures"] = json::array();
  for (int i = 0; i < 7; ++i)
    result.details["tests"]["failures"].push_back({{"name", std::to_string(i)}});
  const std::string out = github_annotations(result, SecretMasker({}), 5);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 6);
  EXPECT_THAT(out, HasSubstr("2 more failed tests"));
}

// 604 findings, of which the result lists 200 (reports::kMaxListed) and the annotations show
// 50: 554 not annotated, 150 of them in the result document and 404 only in the SARIF file.
TEST(CiOutput, WhatIsLeftOutIsCountedWithWhatTheResultItselfLeftOut) {
  protocol::TaskResult result;
  result.task_id = "t";
  result.type = "security_scan";
  result.status = TaskStatus::kFailed;
  json findings = json::array();
  for (int i = 0; i < 200; ++i) {
    std::string rule = "R";  // appended: `"R" + std::to_string(i)` trips GCC 12's -Wrestrict
    rule += std::to_string(i);
    findings.push_back({{"ruleId", rule}, {"level", "warning"}});
  }
  result.details["scan"] = {
      {"tool", "semgrep"}, {"total", 604}, {"findings", findings}, {"findingsOmitted", 404}};
  const std::string out = github_annotations(result, SecretMasker({}), 50);
  EXPECT_THAT(out, HasSubstr("::notice title=tamma-worker::554 more findings: 150 in the result "
                             "document, 404 only in the SARIF report\n"));
  const std::string md = github_summary(result, SecretMasker({}), 50);
  EXPECT_THAT(md, HasSubstr("554 more findings: 150 in the result document, 404 only in the "
                            "SARIF report"));

  // All listed ones shown, some left out by the result: only those are counted.
  protocol::TaskResult tests;
  tests.task_id = "t";
  tests.details["tests"] = {{"failures", json::array({{{"name", "a"}}})}, {"failuresOmitted", 3}};
  EXPECT_THAT(github_annotations(tests, SecretMasker({}), 50),
              HasSubstr("::notice title=tamma-worker::3 more failed tests are only in the JUnit "
                        "reports\n"));
  EXPECT_THAT(github_annotations(tests, SecretMasker({}), 50), Not(HasSubstr("result document")));
}

// A test's name and message are whatever bytes the framework wrote; what GitHub and GitLab read
// must be UTF-8, with each invalid byte shown as U+FFFD.
TEST(CiOutput, InvalidUtf8NeverReachesACiSystem) {
  protocol::TaskResult result = failed_test_result();
  result.details["tests"]["failures"].push_back({{"name", "caf\xe9 \xc3"},
                                                 {"message", "got \xff\xfe, expected \xe2\x82"},
                                                 {"file", "x\x80.c"}});
  const auto valid = [](const std::string& text) {
    // Every byte sequence a well-formed UTF-8 decoder accepts, nothing else.
    std::size_t i = 0;
    while (i < text.size()) {
      const auto c = static_cast<unsigned char>(text[i]);
      std::size_t n = c < 0x80         ? 1
                      : (c >> 5) == 6  ? 2
                      : (c >> 4) == 14 ? 3
                      : (c >> 3) == 30 ? 4
                                       : 0;
      if (n == 0 || i + n > text.size()) return false;
      for (std::size_t k = 1; k < n; ++k) {
        if ((static_cast<unsigned char>(text[i + k]) >> 6) != 2) return false;
      }
      i += n;
    }
    return true;
  };
  const SecretMasker masker({kSecret});
  const std::string annotations = github_annotations(result, masker);
  EXPECT_TRUE(valid(annotations)) << annotations;
  EXPECT_THAT(annotations, HasSubstr("caf\xEF\xBF\xBD"));
  EXPECT_TRUE(valid(github_summary(result, masker)));
  const std::string junit = junit_report(result, masker);
  EXPECT_TRUE(valid(junit));
  EXPECT_TRUE(valid(gitlab_section_start("s", "step \xff build", 1)));
}

TEST(CiOutput, GithubSummary) {
  const std::string md = github_summary(failed_test_result(), SecretMasker({kSecret}));
  EXPECT_THAT(md, HasSubstr("### ❌ tamma-worker: test `t-1` failed"));
  EXPECT_THAT(md, HasSubstr("| status | failed (exit code 1) |"));
  EXPECT_THAT(md, HasSubstr("| error | `test_failed`: 1 test failed |"));
  EXPECT_THAT(md, HasSubstr("| checkout | https://git.example.com/r.git at main → aaaa"));
  // The step name's '|' does not break the table.
  EXPECT_THAT(md, HasSubstr("| unit \\| tests | failed (exit 1) |"));
  EXPECT_THAT(md, HasSubstr("3 tests: 1 passed, 1 failed, 1 errors, 0 skipped"));
  EXPECT_THAT(md,
              HasSubstr("| math.Add.adds, carefully | src/add:test.c:12 | expected 4<br>but got "
                        "5: 100% wrong, token [MASKED] |"));
  EXPECT_THAT(md, HasSubstr("| io.reads (error) |  | segfault |"));
  EXPECT_THAT(md, HasSubstr("#### Findings (flawfinder)\n\n3 findings: 1 errors, 1 warnings, 1 "
                            "notes (fails on error)"));
  EXPECT_THAT(md, HasSubstr("| error | FF1001 | a.c:3 | buffer &lt;overflow&gt; |"));
  EXPECT_THAT(md, Not(HasSubstr(kSecret)));
}

TEST(CiOutput, GitlabSections) {
  EXPECT_EQ(gitlab_section_start("step 1/x", "[1/2] build\nnow", 1700000000),
            "\x1b[0Ksection_start:1700000000:step_1_x[collapsed=true]\r\x1b[0K[1/2] build now\n");
  EXPECT_EQ(gitlab_section_end("step 1/x", 1700000001),
            "\x1b[0Ksection_end:1700000001:step_1_x\r\x1b[0K\n");
}

// Parses the report with python3's XML parser and prints what the test checks.
std::string parse_with_python(const std::string& xml) {
  testing::TempDir dir;
  const auto file = dir.path() / "junit.xml";
  testing::write_file(file, xml);
  const auto r = testing::run_process(
      {"/usr/bin/python3", "-c",
       "import sys, xml.etree.ElementTree as E\n"
       "root = E.parse(sys.argv[1]).getroot()\n"
       "print(root.tag, root.get('tests'), root.get('failures'), root.get('errors'))\n"
       "for s in root:\n"
       "  print('suite', s.get('name'), s.get('tests'), s.get('failures'), s.get('errors'))\n"
       "  for c in s:\n"
       "    f = [x for x in c]\n"
       "    print('case', c.get('classname'), c.get('name'), c.get('file'), c.get('line'),\n"
       "          [(x.tag, x.get('message')) for x in f], repr(f[0].text if f else None))\n",
       file.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err << xml;
  return r.out;
}

TEST(CiOutput, JunitReportIsWellFormedAndComplete) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "python3 is needed to parse the XML";
  const std::string xml = junit_report(failed_test_result(), SecretMasker({kSecret}));
  EXPECT_THAT(xml, Not(HasSubstr(kSecret)));
  const std::string parsed = parse_with_python(xml);
  EXPECT_THAT(parsed, HasSubstr("testsuites 5 2 1\n"));
  EXPECT_THAT(parsed, HasSubstr("suite t-1.steps 2 1 0\n"));
  EXPECT_THAT(parsed, HasSubstr("case t-1 build None None [] None\n"));
  EXPECT_THAT(parsed,
              HasSubstr("case t-1 unit | tests None None [('failure', 'failed (exit 1)')] "
                        "'assertion <failed> & \xEF\xBF\xBD bad byte \xEF\xBF\xBD [MASKED]\\n'\n"));
  EXPECT_THAT(parsed, HasSubstr("suite t-1.tests 3 1 1\n"));
  EXPECT_THAT(parsed, HasSubstr("case math.Add adds, carefully src/add:test.c 12 [('failure', "
                                "'expected 4\\nbut got 5: 100% wrong, token [MASKED]')]"));
  EXPECT_THAT(parsed, HasSubstr("case io reads None None [('error', 'segfault')]"));
}

TEST(CiOutput, JunitReportWithoutTestDetailsHasOneCasePerStep) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "python3 is needed to parse the XML";
  protocol::TaskResult result = failed_test_result();
  result.details = nullptr;
  const std::string parsed = parse_with_python(junit_report(result, SecretMasker({})));
  EXPECT_THAT(parsed, HasSubstr("testsuites 2 1 0\n"));
  EXPECT_THAT(parsed, Not(HasSubstr(".tests")));
}

}  // namespace
}  // namespace tamma::worker::ci
