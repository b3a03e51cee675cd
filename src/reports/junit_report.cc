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

// pytest's traceback names each frame "path:line: ..." at the start of a line; the last one
// is where the assertion or exception happened.
std::optional<Location> pytest_location(std::string_view text) {
  std::optional<Location> found;
  for (std::string_view line : lines_of(text)) {
    if (line.empty() || line.front() == ' ' || line.front() == '\t') continue;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) continue;
    if (line.substr(0, colon).find(' ') != std::string_view::npos) continue;
    const auto second = line.find(": ", colon + 1);
    if (second == std::string_view::npos) continue;
    if (auto n = parse_line_number(line.substr(colon + 1, second - colon - 1))) {
      found = Location{std::string(line.substr(0, colon)), n};
    }
  }
  return found;
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
    if (!where) where = pytest_location(elements.front().text);
    if (!where) where = java_location(elements.front().text, failure.classname);
    if (!where) where = javascript_location(all_text);
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
