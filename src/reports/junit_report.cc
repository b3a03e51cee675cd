#include "reports/junit_report.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include <fmt/format.h>
#include <pugixml.hpp>

#include "common/error.h"
#include "common/json_text.h"

namespace tamma::reports {
namespace {

using nlohmann::json;

constexpr int kMaxSuiteDepth = 64;

[[noreturn]] void malformed(const std::string& message) {
  throw Error(ErrorKind::kTaskFailed, "report_malformed", message);
}

std::pair<std::size_t, std::size_t> line_and_column(std::string_view text, std::ptrdiff_t offset) {
  const auto end = static_cast<std::size_t>(
      std::clamp<std::ptrdiff_t>(offset, 0, static_cast<std::ptrdiff_t>(text.size())));
  std::size_t line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < end; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return {line, end - line_start + 1};
}

std::string_view trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const auto begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kSpace) - begin + 1);
}

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const auto newline = text.find('\n');
    lines.push_back(text.substr(0, newline));
    if (newline == std::string_view::npos) break;
    text.remove_prefix(newline + 1);
  }
  return lines;
}

std::optional<std::int64_t> parse_line_number(std::string_view digits) {
  if (digits.empty() || digits.size() > 9) return std::nullopt;
  std::int64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n > 0 ? std::optional(n) : std::nullopt;
}

struct Location {
  std::string file;
  std::optional<std::int64_t> line;
};

// GoogleTest starts each failure message with a line that is only "path:line".
std::optional<Location> gtest_location(std::string_view message) {
  // The location line is always followed by the failure's text.
  if (message.find('\n') == std::string_view::npos) return std::nullopt;
  const std::string_view first = trim(message.substr(0, message.find('\n')));
  const auto colon = first.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  if (first.substr(0, colon).find(' ') != std::string_view::npos) return std::nullopt;
  const auto line = parse_line_number(first.substr(colon + 1));
  if (!line) return std::nullopt;
  return Location{std::string(first.substr(0, colon)), line};
}

// Whether a path a test framework printed is inside the task's workspace: relative to it (how
// pytest and most tools print the checkout's files) or absolute beneath it.
bool inside_workspace(std::string_view path, std::string_view workspace) {
  if (path.starts_with("file://")) path.remove_prefix(7);
  if (path.starts_with('/')) {
    return !workspace.empty() && path.size() > workspace.size() + 1 &&
           path.starts_with(workspace) && path[workspace.size()] == '/';
  }
  return !path.starts_with("../") && path != "..";
}

// pytest's traceback names each frame "path:line: ..." at the start of a line, innermost
// last. The innermost frame in the workspace is where the test failed as its author sees it
// (a frame of the standard library or site-packages is where the exception was raised, in a
// file that is not in the repository); without one, the innermost frame.
std::optional<Location> pytest_location(std::string_view text, std::string_view workspace) {
  // Plain values, not optionals: GCC 12 warns (wrongly) about an optional assigned in a loop.
  Location innermost;
  Location in_workspace;
  for (std::string_view line : lines_of(text)) {
    if (line.empty() || line.front() == ' ' || line.front() == '\t') continue;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) continue;
    if (line.substr(0, colon).find(' ') != std::string_view::npos) continue;
    // "path:line: Message" for the innermost frame, "path:line: " (or without its trailing
    // space) for the frames that lead to it.
    const auto second = line.find(':', colon + 1);
    if (second == std::string_view::npos) continue;
    if (second + 1 < line.size() && line[second + 1] != ' ') continue;
    if (auto n = parse_line_number(line.substr(colon + 1, second - colon - 1))) {
      innermost = Location{std::string(line.substr(0, colon)), n};
      if (inside_workspace(innermost.file, workspace)) in_workspace = innermost;
    }
  }
  if (in_workspace.line) return in_workspace;
  if (innermost.line) return innermost;
  return std::nullopt;
}

// A failure the report gives no words for (CTest writes <failure message=""/> and puts the
// test's output in <system-out>): the first line of that output in a format a common test
// framework prints for a failed assertion, as a location and a message.
//   Unity        test/calc.c:12:test_adds:FAIL: Expected 4 Was 5
//   Check        test/calc.c:12:F:core:test_adds:0: Assertion 'x == 4' failed
//   GoogleTest   /src/calc_test.cc:12: Failure            (message: the lines that follow)
//   Catch2       /src/calc_test.cpp:12: FAILED:           (message: the lines that follow)
//   C assert()   calc_test: test/calc.c:12: main: Assertion `x == 4' failed.
//   CMocka       [   LINE   ] --- test/calc.c:12: error: Failure!
struct OutputFailure {
  Location where;
  std::string message;
};

std::optional<OutputFailure> failure_in_output(std::string_view output) {
  const auto lines = lines_of(output);
  // The lines after a location line, up to a blank one or the framework's own summary.
  const auto following = [&](std::size_t i) {
    std::string text;
    for (std::size_t k = i + 1; k < lines.size() && k <= i + 20; ++k) {
      const std::string_view t = trim(lines[k]);
      if (t.empty() || t.starts_with("[  FAILED") || t.starts_with("[       OK") ||
          t.starts_with("===") || t.starts_with("---")) {
        break;
      }
      text += (text.empty() ? "" : "\n") + std::string(lines[k]);
    }
    return text;
  };
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = trim(lines[i]);
    if (line.starts_with("[   LINE   ] --- ")) line.remove_prefix(17);  // CMocka
    if (const auto a = line.find(": Assertion `"); a != std::string_view::npos) {
      // glibc's assert(): "program: path:line: function: Assertion `x' failed."
      const std::string_view head = line.substr(0, a);
      const auto sep = head.find(": ");
      const std::string_view at = sep == std::string_view::npos ? head : head.substr(sep + 2);
      const auto c1 = at.find(':');
      const auto c2 = c1 == std::string_view::npos ? c1 : at.find(':', c1 + 1);
      if (c2 != std::string_view::npos && at.substr(0, c1).find(' ') == std::string_view::npos) {
        if (auto n = parse_line_number(at.substr(c1 + 1, c2 - c1 - 1))) {
          return OutputFailure{Location{std::string(at.substr(0, c1)), n},
                               std::string(trim(line.substr(a + 2)))};
        }
      }
      continue;
    }
    // "path:line:rest", the path without spaces.
    const auto first = line.find(':');
    if (first == std::string_view::npos || first == 0) continue;
    const std::string_view path = line.substr(0, first);
    if (path.find(' ') != std::string_view::npos) continue;
    const std::string_view rest = line.substr(first + 1);
    const auto second = rest.find(':');
    if (second == std::string_view::npos) continue;
    const auto number = parse_line_number(rest.substr(0, second));
    if (!number) continue;
    const std::string_view tail = rest.substr(second + 1);
    const std::string_view tail_trimmed = trim(tail);
    Location where{std::string(path), number};
    if (tail_trimmed == "Failure" || tail_trimmed == "FAILED:") {
      std::string message = following(i);
      return OutputFailure{where, message.empty() ? std::string(tail_trimmed) : message};
    }
    if (tail_trimmed.starts_with("error:")) {
      return OutputFailure{where, std::string(trim(tail_trimmed.substr(6)))};
    }
    // Unity "test:FAIL: message", "test:FAIL"; Check "F:tcase:test:iteration: message".
    const auto third = tail.find(':');
    if (third == std::string_view::npos) continue;
    const std::string_view field = tail.substr(0, third);
    const std::string_view after = tail.substr(third + 1);
    if (after.starts_with("FAIL")) {
      std::string_view message = after.substr(4);
      if (message.starts_with(':')) message.remove_prefix(1);
      message = trim(message);
      return OutputFailure{where, message.empty() ? std::string("FAIL") : std::string(message)};
    }
    if (field == "F" || field == "E") {
      // Check: the message follows the third colon after the kind.
      std::string_view message = after;
      for (int k = 0; k < 3; ++k) {
        const auto colon = message.find(':');
        if (colon == std::string_view::npos) {
          message = {};
          break;
        }
        message.remove_prefix(colon + 1);
      }
      if (!message.empty()) return OutputFailure{where, std::string(trim(message))};
    }
  }
  return std::nullopt;
}

// A JVM stack trace: "at com.example.CalcTest.adds(CalcTest.java:42)". The frame of the test
// class itself (or one of its nested classes) is the one that says where the test failed.
std::optional<Location> java_location(std::string_view text, std::string_view classname) {
  if (classname.empty()) return std::nullopt;
  for (std::string_view line : lines_of(text)) {
    line = trim(line);
    if (!line.starts_with("at ")) continue;
    line.remove_prefix(3);
    const auto open = line.find('(');
    const auto close = line.find(')', open == std::string_view::npos ? 0 : open);
    if (open == std::string_view::npos || close == std::string_view::npos) continue;
    const std::string_view method = line.substr(0, open);
    const auto dot = method.rfind('.');
    if (dot == std::string_view::npos) continue;
    const std::string_view owner = method.substr(0, dot);
    if (owner != classname && !(owner.starts_with(classname) && owner.size() > classname.size() &&
                                owner[classname.size()] == '$')) {
      continue;
    }
    const std::string_view where = line.substr(open + 1, close - open - 1);
    const auto colon = where.rfind(':');
    if (colon == std::string_view::npos) continue;
    if (auto n = parse_line_number(where.substr(colon + 1))) {
      return Location{std::string(where.substr(0, colon)), n};
    }
  }
  return std::nullopt;
}

// A JavaScript stack trace (Jest "at fn (path:line:col)", Vitest "❯ path:line:col"): the first
// frame that is not in node_modules or node's own code.
std::optional<Location> javascript_location(std::string_view text) {
  for (std::string_view line : lines_of(text)) {
    line = trim(line);
    if (line.ends_with(")")) {
      const auto open = line.rfind('(');
      if (open == std::string_view::npos) continue;
      line = line.substr(open + 1, line.size() - open - 2);
    } else if (line.starts_with("at ")) {
      line.remove_prefix(3);
    } else if (line.starts_with("\xE2\x9D\xAF ")) {  // ❯
      line.remove_prefix(4);
    } else {
      continue;
    }
    // path:line:column
    const auto last = line.rfind(':');
    if (last == std::string_view::npos || last == 0) continue;
    const auto middle = line.rfind(':', last - 1);
    if (middle == std::string_view::npos || middle == 0) continue;
    if (!parse_line_number(line.substr(last + 1))) continue;
    const auto n = parse_line_number(line.substr(middle + 1, last - middle - 1));
    const std::string_view path = line.substr(0, middle);
    if (!n || path.find(' ') != std::string_view::npos) continue;
    if (path.find("node_modules/") != std::string_view::npos || path.starts_with("node:") ||
        path.starts_with("internal/")) {
      continue;
    }
    return Location{std::string(path), n};
  }
  return std::nullopt;
}

double parse_seconds(const char* text) {
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  if (end == text || !std::isfinite(value) || value < 0) return 0;
  return value;
}

// A report may claim any time (time="9e15"): durations stop at the largest int64 rather than
// overflowing, which would be undefined behaviour, not a duration.
std::int64_t milliseconds_of(double seconds) {
  const double ms = std::round(seconds * 1000.0);
  return ms >= 9.2e18 ? std::numeric_limits<std::int64_t>::max() : static_cast<std::int64_t>(ms);
}

std::int64_t add_durations(std::int64_t a, std::int64_t b) {
  return b > std::numeric_limits<std::int64_t>::max() - a ? std::numeric_limits<std::int64_t>::max()
                                                          : a + b;
}

struct FailureElement {
  pugi::xml_node node;
  std::string message;  // the message attribute, else the element's text
  std::string text;
};

// Without a message attribute (jest-junit) the text is the message and then its stack: the
// message is what comes before the first frame.
std::string message_before_stack(std::string_view text) {
  std::string out;
  for (std::string_view line : lines_of(text)) {
    const std::string_view trimmed = trim(line);
    if (trimmed.starts_with("at ") || trimmed.starts_with("\xE2\x9D\xAF ")) break;
    out += std::string(line) + "\n";
  }
  return std::string(trim(out));
}

FailureElement read_failure(pugi::xml_node node) {
  FailureElement element{node, node.attribute("message").as_string(), node.text().as_string()};
  if (trim(element.message).empty()) element.message = message_before_stack(element.text);
  return element;
}

class Parser {
 public:
  Parser(const std::string& name, const std::string& workspace, TestTotals& totals)
      : name_(name), workspace_(workspace), totals_(totals) {}

  void visit(pugi::xml_node parent, const std::string& suite, int depth = 0) {
    // pugixml parses any depth without recursion; this walk recurses, so a hostile report
    // must not take the worker's stack.
    if (depth > kMaxSuiteDepth) {
      malformed(
          fmt::format("test report {} nests suites deeper than {} levels", name_, kMaxSuiteDepth));
    }
    for (pugi::xml_node child : parent.children()) {
      const std::string_view tag = child.name();
      if (tag == "testsuites") {
        visit(child, "", depth + 1);
      } else if (tag == "testsuite") {
        visit(child, child.attribute("name").as_string(), depth + 1);
      } else if (tag == "testcase") {
        testcase(child, suite);
      }
    }
  }

 private:
  void testcase(pugi::xml_node node, const std::string& suite) {
    ++totals_.total;
    totals_.duration_ms = add_durations(
        totals_.duration_ms, milliseconds_of(parse_seconds(node.attribute("time").as_string("0"))));
    std::vector<FailureElement> failures;
    std::vector<FailureElement> errors;
    bool skipped = false;
    for (pugi::xml_node child : node.children()) {
      const std::string_view tag = child.name();
      if (tag == "failure") failures.push_back(read_failure(child));
      if (tag == "error") errors.push_back(read_failure(child));
      if (tag == "skipped") skipped = true;
    }
    // GoogleTest writes disabled tests as status="notrun".
    if (std::string_view(node.attribute("status").as_string()) == "notrun") skipped = true;

    // A test that failed and then errored in its teardown failed: its own result comes first.
    const bool is_error = failures.empty() && !errors.empty();
    const auto& elements = failures.empty() ? errors : failures;
    if (elements.empty()) {
      if (skipped) {
        ++totals_.skipped;
      } else {
        ++totals_.passed;
      }
      return;
    }
    if (is_error) {
      ++totals_.errors;
    } else {
      ++totals_.failed;
    }

    TestFailure failure;
    failure.suite = suite;
    failure.name = node.attribute("name").as_string();
    failure.classname = node.attribute("classname").as_string();
    failure.error = is_error;
    std::optional<Location> where;
    std::string message;
    for (const auto& element : elements) {
      std::string text = element.message;
      if (auto gtest = gtest_location(text)) {
        if (!where) where = gtest;
        // The location is given apart; the message is what follows it.
        const auto newline = text.find('\n');
        text = newline == std::string::npos ? std::string() : text.substr(newline + 1);
      }
      if (!text.empty()) message += (message.empty() ? "" : "\n") + text;
    }
    const std::string all_text = elements.front().message + "\n" + elements.front().text;
    if (!where) where = pytest_location(elements.front().text, workspace_);
    if (!where) where = java_location(elements.front().text, failure.classname);
    if (!where) where = javascript_location(all_text);
    if (trim(message).empty() || !where) {
      // The element says nothing, or not where (CTest writes <failure message=""/>): the
      // test's captured output may, in its framework's words.
      for (const char* stream : {"system-out", "system-err"}) {
        const auto found = failure_in_output(node.child(stream).text().as_string());
        if (!found) continue;
        if (trim(message).empty()) message = found->message;
        if (!where) where = found->where;
        break;
      }
    }
    if (!where && node.attribute("file")) {
      // The test's own position: jest-junit (addFileAttribute), pytest's xunit1 family.
      where = Location{node.attribute("file").as_string(), std::nullopt};
      if (auto n = parse_line_number(node.attribute("line").as_string())) {
        // pytest writes the 0-based line of the test function.
        where->line = suite == "pytest" ? *n + 1 : *n;
      } else if (std::string_view(node.attribute("line").as_string()) == "0" && suite == "pytest") {
        where->line = 1;
      }
    }
    failure.message = cap_message(message);
    if (where) {
      failure.file = workspace_relative(where->file, workspace_);
      failure.line = where->line;
    }
    totals_.failures.push_back(std::move(failure));
  }

  const std::string& name_;
  const std::string& workspace_;
  TestTotals& totals_;
};

}  // namespace

void TestTotals::add(TestTotals other) {
  total += other.total;
  passed += other.passed;
  failed += other.failed;
  errors += other.errors;
  skipped += other.skipped;
  duration_ms = add_durations(duration_ms, other.duration_ms);
  for (auto& failure : other.failures) failures.push_back(std::move(failure));
}

std::string cap_message(std::string text) {
  text = std::string(trim(text));
  if (text.size() <= kMaxMessageBytes) return valid_utf8(text);
  std::size_t cut = kMaxMessageBytes;
  // Never cut a UTF-8 sequence in two.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  const std::size_t dropped = text.size() - cut;
  text.resize(cut);
  return valid_utf8(text) + fmt::format("\n[... {} more bytes]", dropped);
}

std::string workspace_relative(std::string path, const std::string& workspace) {
  if (path.starts_with("file://")) path.erase(0, 7);
  if (!workspace.empty() && path.starts_with(workspace + "/")) path.erase(0, workspace.size() + 1);
  if (path.starts_with("./")) path.erase(0, 2);
  return valid_utf8(path);
}

TestTotals parse_junit(std::string_view xml, const std::string& name,
                       const std::string& workspace) {
  pugi::xml_document document;
  const pugi::xml_parse_result parsed = document.load_buffer(
      xml.data(), xml.size(), pugi::parse_default | pugi::parse_ws_pcdata_single);
  if (!parsed) {
    const auto [line, column] = line_and_column(xml, parsed.offset);
    malformed(fmt::format("test report {} is not well-formed XML: {} at line {}, column {}", name,
                          parsed.description(), line, column));
  }
  const pugi::xml_node root = document.document_element();
  const std::string_view tag = root.name();
  if (tag != "testsuites" && tag != "testsuite") {
    malformed(
        fmt::format("test report {} is not JUnit XML: its root element is <{}>, not "
                    "<testsuites> or <testsuite>",
                    name, valid_utf8(tag)));
  }
  TestTotals totals;
  Parser(name, workspace, totals).visit(document, "");
  return totals;
}

json to_details(const TestTotals& totals, const std::vector<std::string>& reports) {
  json failures = json::array();
  for (std::size_t i = 0; i < totals.failures.size() && i < kMaxListed; ++i) {
    const auto& f = totals.failures[i];
    failures.push_back({{"suite", valid_utf8(f.suite)},
                        {"name", valid_utf8(f.name)},
                        {"classname", valid_utf8(f.classname)},
                        {"message", f.message},
                        {"file", f.file},
                        {"line", f.line ? json(*f.line) : json(nullptr)},
                        {"kind", f.error ? "error" : "failure"}});
  }
  json report_paths = json::array();
  for (const auto& path : reports) report_paths.push_back(valid_utf8(path));
  return {{"total", totals.total},
          {"passed", totals.passed},
          {"failed", totals.failed},
          {"errors", totals.errors},
          {"skipped", totals.skipped},
          {"durationMs", totals.duration_ms},
          {"reports", std::move(report_paths)},
          {"failures", std::move(failures)},
          {"failuresOmitted",
           totals.failures.size() > kMaxListed ? totals.failures.size() - kMaxListed : 0}};
}

}  // namespace tamma::reports
