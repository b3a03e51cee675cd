#include "worker/ci_output.h"

#include <chrono>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "common/json_text.h"
#include "common/units.h"

namespace tamma::worker::ci {
namespace {

using nlohmann::json;
using protocol::TaskStatus;

// Details come from files the task wrote: any member may be missing or of another type.
std::string text_of(const json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::optional<std::int64_t> number_of(const json& object, const char* key) {
  if (!object.is_object()) return std::nullopt;
  auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return std::nullopt;
  return it->get<std::int64_t>();
}

const json& member(const json& object, const char* key) {
  static const json null;
  if (!object.is_object()) return null;
  auto it = object.find(key);
  return it == object.end() ? null : *it;
}

const json& array_member(const json& object, const char* key) {
  static const json empty = json::array();
  const json& value = member(object, key);
  return value.is_array() ? value : empty;
}

std::string duration_text(std::int64_t ms) {
  return ms > 0 ? format_duration(std::chrono::milliseconds(ms)) : "0ms";
}

std::string step_outcome(const protocol::StepResult& step) {
  std::string how(protocol::to_string(step.status));
  if (step.exit_code) how += fmt::format(" (exit {})", *step.exit_code);
  if (step.signal) how += fmt::format(" (signal {})", *step.signal);
  if (step.limit != protocol::LimitKind::kNone) {
    how += fmt::format(" ({} limit)", protocol::to_string(step.limit));
  }
  return how;
}

// Markdown table cells: no line breaks, no column separators, no HTML from the task.
std::string cell(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '|':
        out += "\\|";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '`':
        out += "&#96;";
        break;
      case '\r':
        break;
      case '\n':
        out += "<br>";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string xml_escape(std::string_view raw) {
  // Task output is whatever bytes the task wrote; an XML document must be valid UTF-8.
  const std::string text = valid_utf8(raw);
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      // As references, so that a parser keeps them inside attribute values too.
      case '\n':
        out += "&#10;";
        break;
      case '\r':
        out += "&#13;";
        break;
      case '\t':
        out += "&#9;";
        break;
      default:
        // XML 1.0 has no place for other control characters, not even escaped.
        if (c < 0x20) {
          out += "\xEF\xBF\xBD";
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

std::string location(const json& item) {
  std::string file = text_of(item, "file");
  if (file.empty()) return "";
  if (auto line = number_of(item, "line")) file += fmt::format(":{}", *line);
  return file;
}

std::string annotation(std::string_view command, const json& item, const std::string& title,
                       const std::string& message, const SecretMasker& masker) {
  std::vector<std::string> properties;
  if (const std::string file = text_of(item, "file"); !file.empty()) {
    properties.push_back("file=" + github_escape_property(masker.mask(file)));
    if (auto line = number_of(item, "line")) properties.push_back(fmt::format("line={}", *line));
  }
  if (!title.empty()) properties.push_back("title=" + github_escape_property(masker.mask(title)));
  std::string out = fmt::format("::{}", command);
  for (std::size_t i = 0; i < properties.size(); ++i) out += (i ? "," : " ") + properties[i];
  return out + "::" + github_escape_data(masker.mask(message)) + "\n";
}

std::string test_name(const json& failure) {
  std::string name = text_of(failure, "classname");
  if (name.empty()) name = text_of(failure, "suite");
  const std::string test = text_of(failure, "name");
  return name.empty() ? test : name + "." + test;
}

std::string level_command(const std::string& level) {
  if (level == "error") return "error";
  if (level == "warning") return "warning";
  return "notice";
}

// How many more there are than were shown: those listed in the result document, and those
// the result itself left out (it lists at most reports::kMaxListed), which only the tool's own
// report files hold.
std::string more_than_shown(std::size_t listed, std::uint64_t omitted, const char* what,
                            const char* reports) {
  if (omitted == 0) return fmt::format("{} more {} are in the result document", listed, what);
  if (listed == 0) return fmt::format("{} more {} are only in the {}", omitted, what, reports);
  return fmt::format("{} more {}: {} in the result document, {} only in the {}", listed + omitted,
                     what, listed, omitted, reports);
}

std::uint64_t omitted_of(const json& details, const char* key) {
  const auto n = number_of(details, key).value_or(0);
  return n > 0 ? static_cast<std::uint64_t>(n) : 0;
}

}  // namespace

System detect(const std::function<const char*(const char*)>& getenv) {
  const auto is_true = [&](const char* name) {
    const char* value = getenv(name);
    return value != nullptr && std::strcmp(value, "true") == 0;
  };
  if (is_true("GITHUB_ACTIONS")) return System::kGithub;
  if (is_true("GITLAB_CI")) return System::kGitlab;
  const auto is_set = [&](const char* name) {
    const char* value = getenv(name);
    return value != nullptr && *value != '\0';
  };
  if (is_set("JENKINS_URL") || (is_set("JENKINS_HOME") && is_set("BUILD_ID"))) {
    return System::kJenkins;
  }
  return System::kNone;
}

std::string github_escape_data(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '%':
        out += "%25";
        break;
      case '\r':
        out += "%0D";
        break;
      case '\n':
        out += "%0A";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string github_escape_property(std::string_view text) {
  std::string out;
  for (char c : github_escape_data(text)) {
    switch (c) {
      case ':':
        out += "%3A";
        break;
      case ',':
        out += "%2C";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string github_annotations(const protocol::TaskResult& result, const SecretMasker& masker,
                               std::size_t limit) {
  std::string out;
  if (result.status != TaskStatus::kSucceeded) {
    std::string message = result.task_id.empty() ? "task" : "task " + result.task_id;
    message += fmt::format(" {}", protocol::to_string(result.status));
    if (result.exit_code) message += fmt::format(" (exit code {})", *result.exit_code);
    if (result.error) message += ": " + result.error->message;
    out += annotation("error", json(), "tamma-worker", message, masker);
  }
  for (const auto& hint : result.hints) {
    out += annotation("notice", json(), "tamma-worker", hint, masker);
  }
  const json& tests = member(result.details, "tests");
  std::size_t shown = 0, left_out = 0;
  for (const auto& failure : array_member(tests, "failures")) {
    if (shown == limit) {
      ++left_out;
      continue;
    }
    ++shown;
    std::string message = text_of(failure, "message");
    if (message.empty()) message = text_of(failure, "kind") == "error" ? "error" : "failed";
    out += annotation("error", failure, test_name(failure), message, masker);
  }
  if (const auto omitted = omitted_of(tests, "failuresOmitted"); left_out > 0 || omitted > 0) {
    out += "::notice title=tamma-worker::" +
           more_than_shown(left_out, omitted, "failed tests", "JUnit reports") + "\n";
  }
  const json& scan = member(result.details, "scan");
  shown = left_out = 0;
  for (const auto& finding : array_member(scan, "findings")) {
    if (shown == limit) {
      ++left_out;
      continue;
    }
    ++shown;
    out += annotation(level_command(text_of(finding, "level")), finding, text_of(finding, "ruleId"),
                      text_of(finding, "message"), masker);
  }
  if (const auto omitted = omitted_of(scan, "findingsOmitted"); left_out > 0 || omitted > 0) {
    out += "::notice title=tamma-worker::" +
           more_than_shown(left_out, omitted, "findings", "SARIF report") + "\n";
  }
  // Test names and messages are whatever bytes the tools wrote: GitHub takes UTF-8 only.
  return valid_utf8(out);
}

std::string github_summary(const protocol::TaskResult& result, const SecretMasker& masker,
                           std::size_t limit) {
  const auto m = [&](std::string_view text) { return cell(masker.mask(text)); };
  const bool ok = result.status == TaskStatus::kSucceeded;
  // A refused spec has neither type nor id.
  std::string out = fmt::format("### {} tamma-worker:", ok ? "✅" : "❌");
  if (!result.type.empty()) out += " " + m(result.type);
  if (!result.task_id.empty()) out += " `" + m(result.task_id) + "`";
  out += fmt::format(" {}\n\n", protocol::to_string(result.status));
  out += "| | |\n|---|---|\n";
  std::string status(protocol::to_string(result.status));
  if (result.exit_code) status += fmt::format(" (exit code {})", *result.exit_code);
  if (result.signal) status += fmt::format(" (signal {})", *result.signal);
  out += fmt::format("| status | {} |\n", status);
  out += fmt::format("| duration | {} |\n", duration_text(result.duration_ms));
  if (result.error) {
    out += fmt::format("| error | `{}`: {} |\n", m(result.error->code), m(result.error->message));
  }
  if (const json& checkout = member(result.details, "checkout"); checkout.is_object()) {
    std::string commit = text_of(checkout, "commit");
    out += fmt::format("| checkout | {} at {}{} |\n", m(text_of(checkout, "url")),
                       m(text_of(checkout, "ref")), commit.empty() ? "" : " → " + m(commit));
  }
  for (const auto& d : result.degradations) out += fmt::format("| degraded | {} |\n", m(d));
  for (const auto& h : result.hints) out += fmt::format("| hint | {} |\n", m(h));

  if (!result.steps.empty()) {
    out +=
        "\n#### Steps\n\n| step | status | duration | peak memory | CPU |\n|---|---|---|---|---|\n";
    for (const auto& step : result.steps) {
      out += fmt::format("| {} | {} | {} | {} | {} |\n", m(step.name), step_outcome(step),
                         duration_text(step.duration_ms), format_size(step.usage.peak_memory_bytes),
                         duration_text(static_cast<std::int64_t>(step.usage.cpu_user_ms +
                                                                 step.usage.cpu_system_ms)));
    }
  }
  const auto& u = result.usage;
  out += fmt::format("\n#### Usage\n\npeak memory {}, CPU {} (user {}, system {}), disk {}{}{}{}\n",
                     format_size(u.peak_memory_bytes),
                     duration_text(static_cast<std::int64_t>(u.cpu_user_ms + u.cpu_system_ms)),
                     duration_text(static_cast<std::int64_t>(u.cpu_user_ms)),
                     duration_text(static_cast<std::int64_t>(u.cpu_system_ms)),
                     format_size(u.disk_bytes),
                     u.oom_kills ? fmt::format(", {} OOM kills", u.oom_kills) : "",
                     u.pids_limit_hits ? fmt::format(", {} refused forks", u.pids_limit_hits) : "",
                     u.exact ? "" : " (inexact)");

  if (const json& tests = member(result.details, "tests"); tests.is_object()) {
    const auto count = [&](const char* key) { return number_of(tests, key).value_or(0); };
    out +=
        fmt::format("\n#### Tests\n\n{} tests: {} passed, {} failed, {} errors, {} skipped ({})\n",
                    count("total"), count("passed"), count("failed"), count("errors"),
                    count("skipped"), duration_text(count("durationMs")));
    const json& failures = array_member(tests, "failures");
    if (!failures.empty()) {
      out += "\n| test | location | message |\n|---|---|---|\n";
      std::size_t shown = 0;
      for (const auto& failure : failures) {
        if (shown++ == limit) break;
        out += fmt::format("| {}{} | {} | {} |\n", m(test_name(failure)),
                           text_of(failure, "kind") == "error" ? " (error)" : "",
                           m(location(failure)), m(text_of(failure, "message")));
      }
    }
    const std::size_t listed = failures.size() > limit ? failures.size() - limit : 0;
    if (const auto omitted = omitted_of(tests, "failuresOmitted"); listed > 0 || omitted > 0) {
      out += "\n" + more_than_shown(listed, omitted, "failed tests", "JUnit reports") + "\n";
    }
  }
  if (const json& scan = member(result.details, "scan"); scan.is_object()) {
    const json& counts = member(scan, "counts");
    const auto count = [&](const char* key) { return number_of(counts, key).value_or(0); };
    out += fmt::format("\n#### Findings ({})\n\n{} findings: {} errors, {} warnings, {} notes",
                       m(text_of(scan, "tool")), number_of(scan, "total").value_or(0),
                       count("error"), count("warning"), count("note"));
    if (const std::string fail_on = text_of(scan, "failOn"); !fail_on.empty()) {
      out += fmt::format(" (fails on {})", m(fail_on));
    }
    out += "\n";
    const json& findings = array_member(scan, "findings");
    if (!findings.empty()) {
      out += "\n| level | rule | location | message |\n|---|---|---|---|\n";
      std::size_t shown = 0;
      for (const auto& finding : findings) {
        if (shown++ == limit) break;
        out += fmt::format("| {} | {} | {} | {} |\n", m(text_of(finding, "level")),
                           m(text_of(finding, "ruleId")), m(location(finding)),
                           m(text_of(finding, "message")));
      }
    }
    const std::size_t listed = findings.size() > limit ? findings.size() - limit : 0;
    if (const auto omitted = omitted_of(scan, "findingsOmitted"); listed > 0 || omitted > 0) {
      out += "\n" + more_than_shown(listed, omitted, "findings", "SARIF report") + "\n";
    }
  }
  return valid_utf8(out + "\n");
}

std::string gitlab_section_start(std::string_view name, std::string_view header,
                                 std::int64_t unix_seconds, bool collapsed) {
  std::string clean;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    clean += ok ? c : '_';
  }
  std::string plain_header;
  for (char c : header) plain_header += (c == '\r' || c == '\n' || c == '\x1b') ? ' ' : c;
  return fmt::format("\x1b[0Ksection_start:{}:{}{}\r\x1b[0K{}\n", unix_seconds, clean,
                     collapsed ? "[collapsed=true]" : "", valid_utf8(plain_header));
}

std::string gitlab_section_end(std::string_view name, std::int64_t unix_seconds) {
  std::string clean;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    clean += ok ? c : '_';
  }
  return fmt::format("\x1b[0Ksection_end:{}:{}\r\x1b[0K\n", unix_seconds, clean);
}

std::string junit_report(const protocol::TaskResult& result, const SecretMasker& masker) {
  const auto x = [&](std::string_view text) { return xml_escape(masker.mask(text)); };
  const auto seconds = [](std::int64_t ms) { return fmt::format("{:.3f}", ms / 1000.0); };

  std::size_t step_failures = 0;
  for (const auto& step : result.steps) step_failures += step.status != TaskStatus::kSucceeded;
  std::string steps = fmt::format(
      "  <testsuite name=\"{}.steps\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" "
      "time=\"{}\">\n",
      x(result.task_id), result.steps.size(), step_failures, seconds(result.duration_ms));
  for (const auto& step : result.steps) {
    steps += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                         x(result.task_id), x(step.name), seconds(step.duration_ms));
    if (step.status == TaskStatus::kSucceeded) {
      steps += "/>\n";
      continue;
    }
    // The end of stderr says why; the whole log is in the job's output.
    constexpr std::size_t kTail = 4096;
    const std::string& err = step.stderr_capture.text;
    std::string tail = err.size() > kTail ? err.substr(err.size() - kTail) : err;
    steps += fmt::format(">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n",
                         x(step_outcome(step)), protocol::to_string(step.status), x(tail));
    steps += "    </testcase>\n";
  }
  steps += "  </testsuite>\n";

  std::string tests_suite;
  std::size_t total = result.steps.size(), failures = step_failures, errors = 0;
  if (const json& tests = member(result.details, "tests"); tests.is_object()) {
    const auto count = [&](const char* key) {
      return static_cast<std::size_t>(std::max<std::int64_t>(0, number_of(tests, key).value_or(0)));
    };
    total += count("total");
    failures += count("failed");
    errors += count("errors");
    // The result lists failing tests one by one; passing ones only as counts.
    tests_suite = fmt::format(
        "  <testsuite name=\"{}.tests\" tests=\"{}\" failures=\"{}\" errors=\"{}\" "
        "skipped=\"{}\" time=\"{}\">\n",
        x(result.task_id), count("total"), count("failed"), count("errors"), count("skipped"),
        seconds(number_of(tests, "durationMs").value_or(0)));
    for (const auto& failure : array_member(tests, "failures")) {
      std::string classname = text_of(failure, "classname");
      if (classname.empty()) classname = text_of(failure, "suite");
      tests_suite += fmt::format("    <testcase classname=\"{}\" name=\"{}\"", x(classname),
                                 x(text_of(failure, "name")));
      if (const std::string file = text_of(failure, "file"); !file.empty()) {
        tests_suite += fmt::format(" file=\"{}\"", x(file));
        if (auto line = number_of(failure, "line"))
          tests_suite += fmt::format(" line=\"{}\"", *line);
      }
      const char* element = text_of(failure, "kind") == "error" ? "error" : "failure";
      tests_suite += fmt::format(">\n      <{} message=\"{}\">{}</{}>\n    </testcase>\n", element,
                                 x(text_of(failure, "message")), x(location(failure)), element);
    }
    tests_suite += "  </testsuite>\n";
  }
  // Says UTF-8, so it must be: a step's stderr is whatever bytes it wrote, and its tail may
  // begin inside a character.
  return fmt::format(
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"tamma-worker\" "
             "tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{}\">\n",
             total, failures, errors, seconds(result.duration_ms)) +
         valid_utf8(steps + tests_suite) + "</testsuites>\n";
}

}  // namespace tamma::worker::ci
