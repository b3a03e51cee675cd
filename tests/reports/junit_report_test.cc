// The JUnit XML parser on each dialect it reads. GoogleTest and pytest reports made by the
// real tools are parsed end to end in tests/cli/task_types_test.cc; the Surefire, jest-junit
// and Vitest fixtures are hand-written samples of those tools' documented formats.

#include "reports/junit_report.h"

#include <limits>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "support/test_support.h"

namespace tamma::reports {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string fixture(const std::string& name) {
  return tamma::testing::read_file(std::string(TAMMA_SOURCE_DIR) + "/tests/reports/fixtures/" +
                                   name);
}

std::string error_code_of(std::string_view xml, std::string* message = nullptr) {
  try {
    parse_junit(xml, "out/junit.xml", "/workspace");
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return "";
}

TEST(JUnit, GoogleTestLocationComesFromTheMessageAndIsCutFromIt) {
  const std::string xml = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3" failures="1" disabled="1" errors="0" time="0.01" name="AllTests">
  <testsuite name="Calc" tests="3" failures="1" disabled="1" skipped="0" errors="0" time="0.01">
    <testcase name="Adds" file="/workspace/calc_test.cc" line="5" status="run" result="completed" time="0.001" classname="Calc" />
    <testcase name="Subtracts" file="/workspace/calc_test.cc" line="9" status="run" result="completed" time="0.002" classname="Calc">
      <failure message="/workspace/calc_test.cc:11&#x0A;Expected equality of these values:&#x0A;  1&#x0A;  2" type=""><![CDATA[/workspace/calc_test.cc:11
Expected equality of these values:
  1
  2]]></failure>
      <failure message="/workspace/calc_test.cc:12&#x0A;Value of: false" type=""><![CDATA[/workspace/calc_test.cc:12
Value of: false]]></failure>
    </testcase>
    <testcase name="DISABLED_Later" file="/workspace/calc_test.cc" line="14" status="notrun" result="suppressed" time="0" classname="Calc" />
  </testsuite>
</testsuites>)xml";
  const TestTotals totals = parse_junit(xml, "gtest.xml", "/workspace");
  EXPECT_EQ(totals.total, 3u);
  EXPECT_EQ(totals.passed, 1u);
  EXPECT_EQ(totals.failed, 1u);
  EXPECT_EQ(totals.skipped, 1u);
  EXPECT_EQ(totals.duration_ms, 3);
  ASSERT_EQ(totals.failures.size(), 1u);
  const TestFailure& f = totals.failures[0];
  EXPECT_EQ(f.suite, "Calc");
  EXPECT_EQ(f.name, "Subtracts");
  EXPECT_EQ(f.file, "calc_test.cc");
  EXPECT_EQ(f.line, 11);
  // Both assertions are kept, without their location lines.
  EXPECT_EQ(f.message, "Expected equality of these values:\n  1\n  2\nValue of: false");
  EXPECT_FALSE(f.error);
}

TEST(JUnit, PytestLocationIsTheLastTracebackFrame) {
  const std::string xml =
      R"xml(<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="0.050" timestamp="2026-11-24T19:00:00" hostname="h"><testcase classname="test_calc" name="test_adds" time="0.001" /><testcase classname="test_calc" name="test_subtracts" time="0.002"><failure message="assert 1 == 2&#10; +  where 1 = sub(3, 2)">def test_subtracts():
&gt;       assert sub(3, 2) == 2
E       assert 1 == 2

test_calc.py:9: AssertionError</failure></testcase><testcase classname="test_calc" name="test_fixture" time="0.001"><error message="failed on setup with &quot;ValueError: no db&quot;">@pytest.fixture
    def db():
&gt;       raise ValueError("no db")
E       ValueError: no db

helpers/db.py:4: ValueError</error></testcase><testcase classname="test_calc" name="test_later" time="0.000"><skipped type="pytest.skip" message="later">test_calc.py:15: later</skipped></testcase></testsuite></testsuites>)xml";
  const TestTotals totals = parse_junit(xml, "pytest.xml", "/workspace");
  EXPECT_EQ(totals.total, 4u);
  EXPECT_EQ(totals.passed, 1u);
  EXPECT_EQ(totals.failed, 1u);
  EXPECT_EQ(totals.errors, 1u);
  EXPECT_EQ(totals.skipped, 1u);
  ASSERT_EQ(totals.failures.size(), 2u);
  EXPECT_EQ(totals.failures[0].suite, "pytest");
  EXPECT_EQ(totals.failures[0].classname, "test_calc");
  EXPECT_EQ(totals.failures[0].file, "test_calc.py");
  EXPECT_EQ(totals.failures[0].line, 9);
  EXPECT_THAT(totals.failures[0].message, StartsWith("assert 1 == 2"));
  EXPECT_TRUE(totals.failures[1].error);
  EXPECT_EQ(totals.failures[1].file, "helpers/db.py");
  EXPECT_EQ(totals.failures[1].line, 4);
}

// The exception was raised in the standard library, outside the checkout: the annotation must
// name the test's own file, the innermost frame inside the workspace.
TEST(JUnit, PytestLocationIsTheInnermostFrameInsideTheWorkspace) {
  const std::string xml =
      R"xml(<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="1" time="0.01"><testcase classname="test_env_probe" name="test_locale" time="0.001"><failure message="locale.Error: unsupported locale setting">def test_locale():
&gt;       locale.setlocale(locale.LC_ALL, "xx_XX.UTF-8")

test_env_probe.py:55:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _

category = 6, locale = 'xx_XX.UTF-8'

    def setlocale(category, locale=None):
&gt;       return _setlocale(category, locale)
E       locale.Error: unsupported locale setting

/usr/lib/python3.11/locale.py:626: Error</failure></testcase></testsuite></testsuites>)xml";
  const TestTotals totals = parse_junit(xml, "pytest.xml", "/workspace");
  ASSERT_EQ(totals.failures.size(), 1u);
  EXPECT_EQ(totals.failures[0].file, "test_env_probe.py");
  EXPECT_EQ(totals.failures[0].line, 55);

  // Absolute paths count too: one beneath the workspace is inside, its sibling is not.
  const std::string absolute =
      R"xml(<testsuite name="pytest"><testcase classname="t" name="x"><failure message="boom">/workspace/tests/test_x.py:7: in test_x
    helper()
/workspace-other/lib.py:3: in helper
    raise ValueError("boom")
E   ValueError: boom
/usr/lib/python3.11/json/decoder.py:9: ValueError</failure></testcase></testsuite>)xml";
  const TestTotals t2 = parse_junit(absolute, "pytest.xml", "/workspace");
  ASSERT_EQ(t2.failures.size(), 1u);
  EXPECT_EQ(t2.failures[0].file, "tests/test_x.py");
  EXPECT_EQ(t2.failures[0].line, 7);

  // No frame in the workspace at all: the innermost one, as before.
  const std::string outside =
      R"xml(<testsuite name="pytest"><testcase classname="t" name="x"><failure message="boom">/opt/plugin/a.py:3: in f
    g()
/usr/lib/python3.11/b.py:9: ValueError</failure></testcase></testsuite>)xml";
  const TestTotals t3 = parse_junit(outside, "pytest.xml", "/workspace");
  ASSERT_EQ(t3.failures.size(), 1u);
  EXPECT_EQ(t3.failures[0].file, "/usr/lib/python3.11/b.py");
  EXPECT_EQ(t3.failures[0].line, 9);
}

// ctest --output-junit: an empty message attribute, the test's output in <system-out>.
std::string ctest_report(const std::string& output) {
  return R"xml(<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="Linux-c++" tests="2" failures="1" disabled="0" skipped="0" hostname="" time="0" timestamp="2026-12-04T10:00:00">
  <testcase name="calc_ok" classname="calc_ok" time="0.01" status="run"><system-out>ok</system-out></testcase>
  <testcase name="calc" classname="calc" time="0.01" status="fail">
    <failure message=""/>
    <system-out>)xml" +
         output + R"xml(</system-out>
  </testcase>
</testsuite>)xml";
}

TEST(JUnit, ACtestFailureWithoutAMessageTakesItFromTheFrameworksOwnLine) {
  struct Case {
    const char* framework;
    std::string output;
    std::string file;
    std::int64_t line;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"Unity",
       "test/test_calc.c:12:test_adds:PASS\ntest/test_calc.c:20:test_wraps:FAIL: Expected 32766 "
       "Was 32767\n\n-----------------------\n2 Tests 1 Failures 0 Ignored\nFAIL\n",
       "test/test_calc.c", 20, "Expected 32766 Was 32767"},
      {"Unity without a message", "test/test_calc.c:20:test_wraps:FAIL\n", "test/test_calc.c", 20,
       "FAIL"},
      {"Check",
       "Running suite(s): calc\n0%: Checks: 1, Failures: 1, Errors: 0\n"
       "test/check_calc.c:14:F:core:test_adds:0: Assertion 'add(2, 2) == 5' failed\n",
       "test/check_calc.c", 14, "Assertion 'add(2, 2) == 5' failed"},
      {"GoogleTest",
       "[ RUN      ] Calc.Adds\n/workspace/calc_test.cc:5: Failure\nExpected equality of these "
       "values:\n  add(2, 2)\n    Which is: 4\n  5\n[  FAILED  ] Calc.Adds (0 ms)\n",
       "calc_test.cc", 5, "Expected equality of these values:\n  add(2, 2)\n    Which is: 4\n  5"},
      {"Catch2",
       "/workspace/test.cpp:9: FAILED:\n  REQUIRE( add(2, 2) == 5 )\nwith expansion:\n  4 == 5\n\n",
       "test.cpp", 9, "REQUIRE( add(2, 2) == 5 )\nwith expansion:\n  4 == 5"},
      {"assert()", "calc_test: test/calc.c:31: main: Assertion `add(2, 2) == 5' failed.\n",
       "test/calc.c", 31, "Assertion `add(2, 2) == 5' failed."},
      {"CMocka",
       "[ RUN      ] test_adds\n[ ERROR    ] --- 0x4 != 0x5\n[   LINE   ] --- "
       "test/calc.c:22: error: Failure!\n[  FAILED  ] test_adds\n",
       "test/calc.c", 22, "Failure!"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.framework);
    std::string escaped;
    for (char ch : c.output) {
      if (ch == '<') {
        escaped += "&lt;";
      } else if (ch == '&') {
        escaped += "&amp;";
      } else {
        escaped += ch;
      }
    }
    const TestTotals totals = parse_junit(ctest_report(escaped), "ctest.xml", "/workspace");
    EXPECT_EQ(totals.total, 2u);
    EXPECT_EQ(totals.failed, 1u);
    ASSERT_EQ(totals.failures.size(), 1u);
    EXPECT_EQ(totals.failures[0].name, "calc");
    EXPECT_EQ(totals.failures[0].file, c.file);
    EXPECT_EQ(totals.failures[0].line, c.line);
    EXPECT_EQ(totals.failures[0].message, c.message);
  }

  // Output in no known format: the failure stays without a message, never a made-up one.
  const TestTotals plain = parse_junit(ctest_report("starting\nsomething went wrong at 10:00:00\n"),
                                       "ctest.xml", "/workspace");
  ASSERT_EQ(plain.failures.size(), 1u);
  EXPECT_EQ(plain.failures[0].message, "");
  EXPECT_EQ(plain.failures[0].file, "");
}

TEST(JUnit, PytestXunit1AttributesCountLinesFromZero) {
  // No traceback location: the testcase's own attributes are all there is.
  const std::string xml =
      R"xml(<testsuites><testsuite name="pytest" tests="1"><testcase classname="t" name="test_x" file="tests/test_x.py" line="41"><failure message="boom">boom</failure></testcase></testsuite></testsuites>)xml";
  const TestTotals totals = parse_junit(xml, "p.xml", "/workspace");
  ASSERT_EQ(totals.failures.size(), 1u);
  EXPECT_EQ(totals.failures[0].file, "tests/test_x.py");
  EXPECT_EQ(totals.failures[0].line, 42);
}

TEST(JUnit, SurefireLocationIsTheTestClassFrame) {
  const TestTotals totals = parse_junit(fixture("surefire-TEST-com.example.CalcTest.xml"),
                                        "TEST-com.example.CalcTest.xml", "/workspace");
  EXPECT_EQ(totals.total, 5u);
  EXPECT_EQ(totals.passed, 2u);  // the flaky test passed on its rerun
  EXPECT_EQ(totals.failed, 1u);
  EXPECT_EQ(totals.errors, 1u);
  EXPECT_EQ(totals.skipped, 1u);
  ASSERT_EQ(totals.failures.size(), 2u);
  EXPECT_EQ(totals.failures[0].suite, "com.example.CalcTest");
  EXPECT_EQ(totals.failures[0].name, "subtracts");
  EXPECT_EQ(totals.failures[0].message, "expected: <4> but was: <5>");
  EXPECT_EQ(totals.failures[0].file, "CalcTest.java");
  EXPECT_EQ(totals.failures[0].line, 27);
  // A frame of a nested class of the test class counts as the test's.
  EXPECT_TRUE(totals.failures[1].error);
  EXPECT_EQ(totals.failures[1].file, "CalcTest.java");
  EXPECT_EQ(totals.failures[1].line, 41);
}

TEST(JUnit, JestJunitLocationIsTheFirstFrameOutsideNodeModules) {
  const TestTotals totals = parse_junit(fixture("jest-junit.xml"), "junit.xml", "/workspace");
  EXPECT_EQ(totals.total, 4u);
  EXPECT_EQ(totals.passed, 2u);
  EXPECT_EQ(totals.failed, 1u);
  EXPECT_EQ(totals.skipped, 1u);
  ASSERT_EQ(totals.failures.size(), 1u);
  const TestFailure& f = totals.failures[0];
  EXPECT_EQ(f.suite, "sum");
  EXPECT_EQ(f.name, "sum handles negatives");
  EXPECT_EQ(f.file, "src/sum.test.js");
  EXPECT_EQ(f.line, 9);
  // The message is the text before the stack.
  EXPECT_EQ(f.message,
            "Error: expect(received).toBe(expected) // Object.is equality\n\nExpected: -3\n"
            "Received: -1");
}

TEST(JUnit, VitestLocationFollowsTheMarker) {
  const TestTotals totals = parse_junit(fixture("vitest-junit.xml"), "junit.xml", "/workspace");
  EXPECT_EQ(totals.total, 2u);
  ASSERT_EQ(totals.failures.size(), 1u);
  EXPECT_EQ(totals.failures[0].name, "sum > subtracts");
  EXPECT_EQ(totals.failures[0].file, "src/sum.test.ts");
  EXPECT_EQ(totals.failures[0].line, 9);
  EXPECT_EQ(totals.failures[0].message, "expected -1 to be -3 // Object.is equality");
}

TEST(JUnit, TestcaseFileAttributeIsTheFallback) {
  const std::string xml =
      R"xml(<testsuite name="s"><testcase name="t" file="/workspace/a/b.test.js"><failure>it broke</failure></testcase></testsuite>)xml";
  const TestTotals totals = parse_junit(xml, "j.xml", "/workspace");
  ASSERT_EQ(totals.failures.size(), 1u);
  EXPECT_EQ(totals.failures[0].suite, "s");
  EXPECT_EQ(totals.failures[0].file, "a/b.test.js");
  EXPECT_FALSE(totals.failures[0].line);
  EXPECT_EQ(totals.failures[0].message, "it broke");
}

TEST(JUnit, NestedSuitesAreCountedOnce) {
  const std::string xml =
      R"xml(<testsuites><testsuite name="outer"><testsuite name="inner"><testcase name="a"/><testcase name="b"><failure message="x"/></testcase></testsuite><testcase name="c" time="1.5"/></testsuite></testsuites>)xml";
  const TestTotals totals = parse_junit(xml, "n.xml", "/workspace");
  EXPECT_EQ(totals.total, 3u);
  EXPECT_EQ(totals.failed, 1u);
  EXPECT_EQ(totals.duration_ms, 1500);
  ASSERT_EQ(totals.failures.size(), 1u);
  EXPECT_EQ(totals.failures[0].suite, "inner");
}

// Found by fuzz/junit_fuzz: two tests of 9e15 s each overflowed the int64 sum (undefined).
TEST(JUnit, HugeTimesStopAtTheLargestDurationInsteadOfOverflowing) {
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  const std::string xml =
      R"xml(<testsuite><testcase name="a" time="9e15"/><testcase name="b" time="9e15"/><testcase name="c" time="1e308"/></testsuite>)xml";
  TestTotals totals = parse_junit(xml, "t.xml", "/workspace");
  EXPECT_EQ(totals.total, 3u);
  EXPECT_EQ(totals.duration_ms, kMax);
  totals.add(parse_junit(xml, "u.xml", "/workspace"));
  EXPECT_EQ(totals.duration_ms, kMax);
}

TEST(JUnit, MalformedXmlNamesTheFileLineAndColumn) {
  std::string message;
  EXPECT_EQ(error_code_of("<testsuites>\n  <testsuite name=\"a\">\n    <testcase name=\"x\">\n"
                          "  </testsuite>\n</testsuites>\n",
                          &message),
            "report_malformed");
  EXPECT_THAT(message, HasSubstr("out/junit.xml"));
  EXPECT_THAT(message, HasSubstr("line 4, column"));
  EXPECT_EQ(error_code_of("", &message), "report_malformed");
  EXPECT_THAT(message, HasSubstr("out/junit.xml"));
  EXPECT_EQ(error_code_of("<html><body>404</body></html>", &message), "report_malformed");
  EXPECT_THAT(message, HasSubstr("root element is <html>"));
  // Truncated mid-write, as by a killed test runner.
  EXPECT_EQ(error_code_of("<testsuites><testsuite name=\"a\"><testcase na", &message),
            "report_malformed");
  EXPECT_THAT(message, HasSubstr("line 1, column"));
}

TEST(JUnit, SuitesNestedWithoutEndAreRefusedNotRecursedInto) {
  std::string xml;
  for (int i = 0; i < 100000; ++i) xml += "<testsuite>";
  for (int i = 0; i < 100000; ++i) xml += "</testsuite>";
  std::string message;
  EXPECT_EQ(error_code_of(xml, &message), "report_malformed");
  EXPECT_THAT(message, HasSubstr("nests suites deeper than 64 levels"));
}

TEST(JUnit, AOneLineMessageWithAColonIsNotALocation) {
  const std::string xml =
      R"xml(<testsuite><testcase name="t"><failure message="GET http://localhost:8080"/></testcase></testsuite>)xml";
  const TestTotals totals = parse_junit(xml, "c.xml", "/workspace");
  ASSERT_EQ(totals.failures.size(), 1u);
  EXPECT_EQ(totals.failures[0].file, "");
  EXPECT_EQ(totals.failures[0].message, "GET http://localhost:8080");
}

TEST(JUnit, LongMessagesAreCutAndSaidSo) {
  const std::string xml = "<testsuite><testcase name=\"t\"><failure message=\"" +
                          std::string(10000, 'x') + "\"/></testcase></testsuite>";
  const TestTotals totals = parse_junit(xml, "l.xml", "/workspace");
  ASSERT_EQ(totals.failures.size(), 1u);
  EXPECT_LT(totals.failures[0].message.size(), kMaxMessageBytes + 64);
  EXPECT_THAT(totals.failures[0].message, HasSubstr("[... 5904 more bytes]"));
}

TEST(JUnit, InvalidUtf8BecomesReplacementCharacters) {
  const std::string xml =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?><testsuite><testcase "
      "name=\"t\"><failure message=\"bad \xff byte\"/></testcase></testsuite>";
  const TestTotals totals = parse_junit(xml, "u.xml", "/workspace");
  ASSERT_EQ(totals.failures.size(), 1u);
  EXPECT_EQ(totals.failures[0].message, "bad \xEF\xBF\xBD byte");
}

TEST(JUnit, DetailsListAtMostTheCapAndSayHowManyWereLeftOut) {
  std::string xml = "<testsuite name=\"big\">";
  for (int i = 0; i < 250; ++i) {
    xml += "<testcase name=\"t" + std::to_string(i) + "\"><failure message=\"m\"/></testcase>";
  }
  xml += "<testcase name=\"ok\"/></testsuite>";
  const TestTotals totals = parse_junit(xml, "b.xml", "/workspace");
  const auto details = to_details(totals, {"b.xml"});
  EXPECT_EQ(details["total"], 251);
  EXPECT_EQ(details["failed"], 250);
  EXPECT_EQ(details["passed"], 1);
  EXPECT_EQ(details["failures"].size(), kMaxListed);
  EXPECT_EQ(details["failuresOmitted"], 50);
  EXPECT_EQ(details["reports"], nlohmann::json({"b.xml"}));
  const auto& first = details["failures"][0];
  for (const char* key : {"suite", "name", "classname", "message", "file", "line", "kind"}) {
    EXPECT_TRUE(first.contains(key)) << key;
  }
  EXPECT_TRUE(first["line"].is_null());
  EXPECT_EQ(first["kind"], "failure");
}

}  // namespace
}  // namespace tamma::reports
