#include "protocol/task_spec.h"
#include "common/json_parse.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "common/error.h"
#include "common/json_text.h"
#include "common/units.h"
#include "egress/network_policy.h"

namespace tamma::protocol {
namespace {

using nlohmann::json;
using Problems = std::vector<ValidationProblem>;

// The types whose handler runs the spec's steps: for them a task without steps means nothing.
constexpr std::string_view kStepTypes[] = {"command", "build", "test", "security_scan"};

// PID_MAX_LIMIT: the kernel refuses a larger pids.max.
constexpr std::uint64_t kMaxPids = 4'194'304;
constexpr double kMaxCpus = 1024;
constexpr std::size_t kMaxIdLength = 128;

constexpr std::string_view kDurationHint =
    "a duration such as \"30s\", \"10m\", \"1h30m\", or a positive number of seconds";
constexpr std::string_view kSizeHint = "a size such as \"512M\", \"2G\", or a number of bytes";

bool is_variable_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

bool is_task_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength) return false;
  for (char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Names that are not plain identifiers are written as JSON strings, as jq would.
std::string member_path(const std::string& parent, std::string_view key) {
  if (is_variable_name(key)) return fmt::format("{}.{}", parent, key);
  return fmt::format("{}[{}]", parent, json_quote(key));
}

std::string index_path(const std::string& parent, std::size_t index) {
  return fmt::format("{}[{}]", parent, index);
}

void add(Problems& problems, std::string path, std::string message) {
  problems.push_back({std::move(path), std::move(message)});
}

// execve carries C strings: a NUL would silently cut the text short.
bool has_nul(std::string_view text) { return text.find('\0') != std::string_view::npos; }

std::optional<std::string> read_string(const json& value, const std::string& path,
                                       Problems& problems, std::string_view what) {
  if (!value.is_string()) {
    add(problems, path, fmt::format("must be {}, not {}", what, describe_json(value)));
    return std::nullopt;
  }
  std::string text = value.get<std::string>();
  if (text.empty()) {
    add(problems, path, "must not be empty");
    return std::nullopt;
  }
  if (has_nul(text)) {
    add(problems, path, "must not contain a NUL character");
    return std::nullopt;
  }
  return text;
}

std::optional<std::chrono::milliseconds> read_duration(const json& value, const std::string& path,
                                                       Problems& problems) {
  std::string error;
  std::optional<std::chrono::milliseconds> duration;
  if (value.is_string()) {
    duration = parse_duration(value.get<std::string>(), &error);
  } else if (value.is_number()) {
    duration = duration_from_seconds(value.get<double>(), &error);
  } else {
    error = fmt::format("must be {}, not {}", kDurationHint, describe_json(value));
  }
  if (!duration) add(problems, path, error);
  return duration;
}

// A JSON number that is a whole number in [1, max], whatever its representation (100, 1e2, 100.0).
std::optional<std::uint64_t> whole_number(const json& value, std::uint64_t max) {
  // Parsed non-negative integers are unsigned, but those built in C++ from an int are not.
  if (value.is_number_integer()) {
    if (value.get<std::int64_t>() < 0 && !value.is_number_unsigned()) return std::nullopt;
    const auto n = value.get<std::uint64_t>();
    if (n >= 1 && n <= max) return n;
    return std::nullopt;
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    // 2^64 itself is the first double out of range.
    if (std::isfinite(d) && d >= 1 && d < 18446744073709551616.0 && std::floor(d) == d &&
        static_cast<std::uint64_t>(d) <= max) {
      return static_cast<std::uint64_t>(d);
    }
  }
  return std::nullopt;
}

std::optional<std::uint64_t> read_size(const json& value, const std::string& path,
                                       Problems& problems) {
  if (value.is_string()) {
    std::string error;
    const auto bytes = parse_size(value.get<std::string>(), &error);
    if (!bytes) {
      add(problems, path, error);
    } else if (*bytes == 0) {
      add(problems, path, fmt::format("must be more than 0 bytes, not {}", describe_json(value)));
    } else {
      return bytes;
    }
    return std::nullopt;
  }
  if (value.is_number()) {
    if (auto bytes = whole_number(value, UINT64_MAX)) return bytes;
    add(problems, path,
        fmt::format("must be a positive whole number of bytes, not {}", describe_json(value)));
    return std::nullopt;
  }
  add(problems, path, fmt::format("must be {}, not {}", kSizeHint, describe_json(value)));
  return std::nullopt;
}

// `env` and `secrets`: NAME -> value objects.
std::map<std::string, std::string> read_variables(const json& value, const std::string& path,
                                                  Problems& problems, bool secret) {
  std::map<std::string, std::string> out;
  if (!value.is_object()) {
    add(problems, path,
        fmt::format("must be an object of NAME: \"value\" pairs, not {}", describe_json(value)));
    return out;
  }
  for (const auto& [name, item] : value.items()) {
    const std::string item_path = member_path(path, name);
    bool ok = true;
    if (!is_variable_name(name)) {
      add(problems, item_path,
          fmt::format("{} is not a valid variable name (letters, digits and _, not starting with "
                      "a digit)",
                      json_quote(name)));
      ok = false;
    }
    if (!item.is_string()) {
      add(problems, item_path, fmt::format("must be a string, not {}", describe_json(item)));
      continue;
    }
    const std::string text = item.get<std::string>();
    if (secret && text.empty()) {
      // An empty secret would mask nothing and most likely means a missing CI variable.
      add(problems, item_path, "a secret must not be empty");
      ok = false;
    }
    if (has_nul(text)) {
      add(problems, item_path, "must not contain a NUL character");
      ok = false;
    }
    if (ok) out[name] = text;
  }
  return out;
}

// Lexical normalization: the workspace is not there yet, so symlinks cannot be followed here
// (the sandbox's mount jail contains them at run time).
std::optional<std::string> normalize_workdir(std::string_view text, std::string& problem) {
  if (text.empty()) {
    problem = "must not be empty (use \".\" for the workspace itself)";
    return std::nullopt;
  }
  if (has_nul(text)) {
    problem = "must not contain a NUL character";
    return std::nullopt;
  }
  if (text.front() == '/') {
    problem =
        fmt::format("{} is absolute; give a path relative to the workspace", json_quote(text));
    return std::nullopt;
  }
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find('/', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view part = text.substr(start, end - start);
    if (part == "..") {
      if (parts.empty()) {
        problem = fmt::format("{} leads out of the workspace", json_quote(text));
        return std::nullopt;
      }
      parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = end + 1;
  }
  if (parts.empty()) return ".";
  std::string out;
  for (const auto& part : parts) {
    // Appended piece by piece: GCC 12's -Wrestrict misfires at -O3 on "/" + std::string.
    if (!out.empty()) out.push_back('/');
    out.append(part);
  }
  return out;
}

std::optional<Step> parse_step(const json& value, std::size_t index, const std::string& path,
                               Problems& problems) {
  const std::size_t before = problems.size();
  if (!value.is_object()) {
    add(problems, path,
        fmt::format("must be an object with \"run\" or \"argv\", not {}", describe_json(value)));
    return std::nullopt;
  }
  Step step;
  step.name = fmt::format("step-{}", index + 1);
  if (auto it = value.find("name"); it != value.end()) {
    if (auto name = read_string(*it, path + ".name", problems, "a string")) step.name = *name;
  }

  const auto run = value.find("run");
  const auto argv = value.find("argv");
  if (run != value.end() && argv != value.end()) {
    add(problems, path,
        "has both \"run\" and \"argv\"; give exactly one (\"run\" is a shell script, \"argv\" a "
        "command and its arguments)");
  } else if (run == value.end() && argv == value.end()) {
    add(problems, path, "needs \"run\" (a shell script) or \"argv\" (a command and its arguments)");
  } else if (run != value.end()) {
    step.run = read_string(*run, path + ".run", problems, "a shell script (a string)");
  } else if (!argv->is_array() || argv->empty()) {
    add(problems, path + ".argv",
        fmt::format("must be a non-empty array of strings (the command, then its arguments), not "
                    "{}",
                    argv->is_array() ? "an empty array" : describe_json(*argv)));
  } else {
    for (std::size_t i = 0; i < argv->size(); ++i) {
      const json& item = (*argv)[i];
      const std::string item_path = index_path(path + ".argv", i);
      if (!item.is_string()) {
        add(problems, item_path, fmt::format("must be a string, not {}", describe_json(item)));
        continue;
      }
      const std::string text = item.get<std::string>();
      if (i == 0 && text.empty()) {
        add(problems, item_path, "the command must not be empty");
      } else if (has_nul(text)) {
        add(problems, item_path, "must not contain a NUL character");
      } else {
        step.argv.push_back(text);
      }
    }
  }
  if (auto it = value.find("env"); it != value.end()) {
    step.env = read_variables(*it, path + ".env", problems, /*secret=*/false);
  }
  if (auto it = value.find("timeout"); it != value.end()) {
    step.timeout = read_duration(*it, path + ".timeout", problems);
  }
  if (problems.size() != before) return std::nullopt;
  return step;
}

void parse_resources(const json& value, Resources& resources, Problems& problems) {
  const std::string path = "$.resources";
  if (!value.is_object()) {
    add(problems, path,
        fmt::format("must be an object with memory, cpus, pids and disk, not {}",
                    describe_json(value)));
    return;
  }
  if (auto it = value.find("memory"); it != value.end()) {
    resources.memory_bytes = read_size(*it, path + ".memory", problems);
  }
  if (auto it = value.find("cpus"); it != value.end()) {
    const json& cpus = *it;
    if (cpus.is_number() && std::isfinite(cpus.get<double>()) && cpus.get<double>() > 0 &&
        cpus.get<double>() <= kMaxCpus) {
      resources.cpus = cpus.get<double>();
    } else {
      add(problems, path + ".cpus",
          fmt::format("must be a positive number of CPUs (e.g. 1.5) of at most {}, not {}",
                      kMaxCpus, describe_json(cpus)));
    }
  }
  if (auto it = value.find("pids"); it != value.end()) {
    resources.pids = whole_number(*it, kMaxPids);
    if (!resources.pids) {
      add(problems, path + ".pids",
          fmt::format("must be a positive whole number of processes of at most {}, not {}",
                      kMaxPids, describe_json(*it)));
    }
  }
  if (auto it = value.find("disk"); it != value.end()) {
    resources.disk_bytes = read_size(*it, path + ".disk", problems);
  }
}

// $.repository: only what git can fetch without keys the sandbox does not have.
std::optional<Repository> parse_repository(const json& value, const TaskSpec& spec,
                                           Problems& problems) {
  const std::string path = "$.repository";
  const std::size_t before = problems.size();
  if (!value.is_object()) {
    add(problems, path,
        fmt::format("must be an object with \"url\" and optionally \"ref\", \"depth\", "
                    "\"credentialsSecret\", not {}",
                    describe_json(value)));
    return std::nullopt;
  }
  Repository repo;
  if (auto it = value.find("url"); it == value.end()) {
    add(problems, path + ".url", "is required: the repository to check out");
  } else if (auto url = read_string(*it, path + ".url", problems, "a URL string")) {
    repo.url = *url;
    const auto scheme_end = url->find("://");
    const std::string scheme = scheme_end == std::string::npos ? "" : url->substr(0, scheme_end);
    if (scheme == "ssh" || (scheme.empty() && url->find(':') != std::string::npos)) {
      add(problems, path + ".url",
          "ssh is not supported (the sandbox holds no ssh keys); use an https URL with "
          "\"credentialsSecret\"");
    } else if (scheme != "https" && scheme != "http" && scheme != "git" && scheme != "file") {
      add(problems, path + ".url",
          fmt::format("{} is not a https://, http://, git:// or file:// URL", json_quote(*url)));
    } else if (scheme == "file" && (url->size() <= 7 || (*url)[7] != '/')) {
      add(problems, path + ".url", "a file:// URL needs an absolute path (file:///srv/repo.git)");
    } else if (url->find_first_of(" \t\r\n") != std::string::npos) {
      add(problems, path + ".url", "must not contain whitespace");
    }
  }
  if (auto it = value.find("ref"); it != value.end()) {
    if (auto ref = read_string(*it, path + ".ref", problems, "a branch, tag or commit")) {
      // A leading '-' would be read by git as an option.
      if (ref->front() == '-' || ref->find_first_of(" \t\r\n~^:?*[\\") != std::string::npos) {
        add(problems, path + ".ref", fmt::format("{} is not a valid ref", json_quote(*ref)));
      } else {
        repo.ref = *ref;
      }
    }
  }
  if (auto it = value.find("depth"); it != value.end()) {
    if (it->is_number_integer() && *it == 0) {
      repo.depth = 0;
    } else if (auto depth = whole_number(*it, 1'000'000)) {
      repo.depth = static_cast<std::uint32_t>(*depth);
    } else {
      add(problems, path + ".depth",
          fmt::format("must be a whole number of commits (1 = shallow, 0 = full history), not {}",
                      describe_json(*it)));
    }
  }
  if (auto it = value.find("credentialsSecret"); it != value.end()) {
    if (auto name = read_string(*it, path + ".credentialsSecret", problems, "a secret's name")) {
      repo.credentials_secret = *name;
      if (!spec.secrets.contains(*name)) {
        add(problems, path + ".credentialsSecret",
            fmt::format("{} is not in $.secrets", json_quote(*name)));
      } else if (repo.url.rfind("https://", 0) != 0) {
        add(problems, path + ".credentialsSecret",
            "credentials are sent only over https:// (never in clear over http, git or file)");
      }
    }
  }
  if (problems.size() != before) return std::nullopt;
  return repo;
}

// `reports`, `sarif` and `failOn`: checked whenever given; `test` needs reports and
// `security_scan` a SARIF file, since parsing them is what those types add to `command`.
void parse_report_inputs(const json& document, TaskSpec& spec, Problems& problems) {
  if (auto it = document.find("reports"); it != document.end()) {
    if (!it->is_array() || it->empty()) {
      add(problems, "$.reports",
          fmt::format("must be a non-empty array of JUnit XML globs relative to the workspace, "
                      "not {}",
                      it->is_array() ? "an empty array" : describe_json(*it)));
    } else {
      for (std::size_t i = 0; i < it->size(); ++i) {
        const json& item = (*it)[i];
        if (!item.is_string()) {
          add(problems, index_path("$.reports", i),
              fmt::format("must be a string, not {}", describe_json(item)));
        } else if (auto problem = workspace_glob_problem(item.get<std::string>())) {
          add(problems, index_path("$.reports", i), *problem);
        } else {
          spec.reports.push_back(item.get<std::string>());
        }
      }
    }
  } else if (spec.type == "test") {
    add(problems, "$.reports",
        "is required for a \"test\" task: an array of globs of the JUnit XML reports the steps "
        "write, e.g. [\"build/test-results/*.xml\"]");
  }
  if (auto it = document.find("sarif"); it != document.end()) {
    if (!it->is_string()) {
      add(problems, "$.sarif",
          fmt::format("must be the path of a SARIF file relative to the workspace, not {}",
                      describe_json(*it)));
    } else if (auto problem = workspace_glob_problem(it->get<std::string>())) {
      add(problems, "$.sarif", *problem);
    } else {
      spec.sarif = it->get<std::string>();
    }
  } else if (spec.type == "security_scan") {
    add(problems, "$.sarif",
        "is required for a \"security_scan\" task: the path of the SARIF 2.1.0 file the scanner "
        "writes, relative to the workspace");
  }
  if (auto it = document.find("failOn"); it != document.end()) {
    if (*it == "error" || *it == "warning" || *it == "note") {
      spec.fail_on = it->get<std::string>();
    } else {
      add(problems, "$.failOn",
          fmt::format("must be \"error\", \"warning\" or \"note\" (the lowest SARIF level that "
                      "fails the scan), not {}",
                      describe_json(*it)));
    }
  }
}

std::string joined(const auto& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

// "none", "host", or {"allow": ["host:port", ...]} (egress/destination.h).
void parse_network(const json& value, TaskSpec& spec, Problems& problems) {
  constexpr std::string_view kForms =
      "\"none\" (loopback only), \"host\", or {\"allow\": [\"registry.npmjs.org:443\", ...]}";
  if (value == "none") {
    spec.network = NetworkMode::kNone;
    return;
  }
  if (value == "host") {
    spec.network = NetworkMode::kHost;
    return;
  }
  if (!value.is_object()) {
    add(problems, "$.network", fmt::format("must be {}, not {}", kForms, describe_json(value)));
    return;
  }
  for (const auto& [key, _] : value.items()) {
    if (key != "allow") {
      add(problems, member_path("$.network", key), "unknown member (the only member is \"allow\")");
    }
  }
  auto allow = value.find("allow");
  if (allow == value.end()) {
    add(problems, "$.network.allow",
        "is required: the \"host:port\" destinations the task may reach");
    return;
  }
  if (!allow->is_array()) {
    add(problems, "$.network.allow",
        fmt::format("must be an array of \"host:port\" strings, not {}", describe_json(*allow)));
    return;
  }
  if (allow->empty()) {
    add(problems, "$.network.allow",
        "is empty: a task that needs no destination has \"network\": \"none\"");
    return;
  }
  if (allow->size() > egress::kMaxAllowEntries) {
    add(problems, "$.network.allow",
        fmt::format("has {} entries; at most {}", allow->size(), egress::kMaxAllowEntries));
    return;
  }
  std::vector<egress::Destination> destinations;
  for (std::size_t i = 0; i < allow->size(); ++i) {
    const std::string path = index_path("$.network.allow", i);
    const json& entry = (*allow)[i];
    if (!entry.is_string()) {
      add(problems, path,
          fmt::format("must be a \"host:port\" string, not {}", describe_json(entry)));
      continue;
    }
    auto parsed = egress::parse_destination(entry.get<std::string>());
    if (auto* problem = std::get_if<std::string>(&parsed)) {
      add(problems, path, *problem);
      continue;
    }
    auto& d = std::get<egress::Destination>(parsed);
    if (std::find(destinations.begin(), destinations.end(), d) == destinations.end()) {
      destinations.push_back(std::move(d));
    }
  }
  spec.network = NetworkMode::kAllowList;
  spec.network_allow = std::move(destinations);
}

}  // namespace

std::optional<std::string> workspace_glob_problem(std::string_view pattern) {
  if (pattern.empty()) return "must not be empty";
  if (has_nul(pattern)) return "must not contain a NUL character";
  if (pattern.front() == '/') {
    return fmt::format("{} is absolute; give a glob relative to the workspace",
                       json_quote(pattern));
  }
  std::size_t start = 0;
  while (start <= pattern.size()) {
    auto end = pattern.find('/', start);
    if (end == std::string_view::npos) end = pattern.size();
    if (pattern.substr(start, end - start) == "..") {
      return fmt::format("{} has a \"..\" component, which leads out of the workspace",
                         json_quote(pattern));
    }
    start = end + 1;
  }
  return std::nullopt;
}

ParseOutcome parse_task_spec(const nlohmann::json& document) {
  ParseOutcome outcome;
  Problems& problems = outcome.problems;
  if (!document.is_object()) {
    add(problems, "$",
        fmt::format("the task document must be a JSON object, not {}", describe_json(document)));
    return outcome;
  }
  TaskSpec spec;
  spec.raw = document;

  if (auto it = document.find("id"); it != document.end()) {
    if (!it->is_string()) {
      add(problems, "$.id", fmt::format("must be a string, not {}", describe_json(*it)));
    } else if (!is_task_id(it->get<std::string>())) {
      add(problems, "$.id",
          fmt::format("{} is not a valid task id (1 to {} of A-Z a-z 0-9 . _ -)",
                      json_quote(it->get<std::string>()), kMaxIdLength));
    } else {
      spec.id = it->get<std::string>();
    }
  }

  bool steps_required = false;
  if (auto it = document.find("type"); it == document.end()) {
    add(problems, "$.type",
        fmt::format("is required: {} or the type of an external handler", joined(kStepTypes)));
  } else if (auto type = read_string(*it, "$.type", problems, "a string")) {
    spec.type = *type;
    steps_required =
        std::find(std::begin(kStepTypes), std::end(kStepTypes), spec.type) != std::end(kStepTypes);
  }

  if (auto it = document.find("steps"); it != document.end()) {
    if (!it->is_array()) {
      add(problems, "$.steps",
          fmt::format("must be an array of steps, not {}", describe_json(*it)));
    } else if (it->empty() && steps_required) {
      add(problems, "$.steps", fmt::format("a \"{}\" task needs at least one step", spec.type));
    } else {
      for (std::size_t i = 0; i < it->size(); ++i) {
        if (auto step = parse_step((*it)[i], i, index_path("$.steps", i), problems)) {
          spec.steps.push_back(std::move(*step));
        }
      }
    }
  } else if (steps_required) {
    add(problems, "$.steps",
        fmt::format("is required for a \"{}\" task: an array of steps, each with \"run\" or "
                    "\"argv\"",
                    spec.type));
  }

  if (auto it = document.find("env"); it != document.end()) {
    spec.env = read_variables(*it, "$.env", problems, /*secret=*/false);
  }
  if (auto it = document.find("secrets"); it != document.end()) {
    spec.secrets = read_variables(*it, "$.secrets", problems, /*secret=*/true);
  }
  // One name with two values would leave it to chance whether the task sees the masked one.
  for (const auto& [name, value] : spec.secrets) {
    if (spec.env.contains(name)) {
      add(problems, member_path("$.secrets", name),
          fmt::format("{} is also set in $.env; a variable is either a secret or not", name));
    }
    for (std::size_t i = 0; i < spec.steps.size(); ++i) {
      if (spec.steps[i].env.contains(name)) {
        add(problems, member_path("$.secrets", name),
            fmt::format("{} is also set in $.steps[{}].env; a variable is either a secret or not",
                        name, i));
      }
    }
  }

  if (auto it = document.find("workdir"); it != document.end()) {
    if (!it->is_string()) {
      add(problems, "$.workdir",
          fmt::format("must be a path relative to the workspace, not {}", describe_json(*it)));
    } else {
      std::string problem;
      if (auto workdir = normalize_workdir(it->get<std::string>(), problem)) {
        spec.workdir = *workdir;
      } else {
        add(problems, "$.workdir", problem);
      }
    }
  }

  if (auto it = document.find("timeout"); it != document.end()) {
    spec.timeout = read_duration(*it, "$.timeout", problems);
  }
  if (auto it = document.find("resources"); it != document.end()) {
    parse_resources(*it, spec.resources, problems);
  }

  if (auto it = document.find("network"); it != document.end()) {
    parse_network(*it, spec, problems);
  }

  if (auto it = document.find("artifacts"); it != document.end()) {
    if (!it->is_array()) {
      add(problems, "$.artifacts",
          fmt::format("must be an array of globs relative to the workspace, not {}",
                      describe_json(*it)));
    } else {
      for (std::size_t i = 0; i < it->size(); ++i) {
        const json& item = (*it)[i];
        const std::string item_path = index_path("$.artifacts", i);
        if (!item.is_string()) {
          add(problems, item_path, fmt::format("must be a string, not {}", describe_json(item)));
        } else if (auto problem = workspace_glob_problem(item.get<std::string>())) {
          add(problems, item_path, *problem);
        } else {
          spec.artifacts.push_back(item.get<std::string>());
        }
      }
    }
  }

  if (auto it = document.find("artifactsWhen"); it != document.end()) {
    if (*it == "on_success" || *it == "on_failure" || *it == "always") {
      spec.artifacts_when = it->get<std::string>();
    } else {
      add(problems, "$.artifactsWhen",
          fmt::format("must be \"on_success\", \"on_failure\" or \"always\", not {}",
                      describe_json(*it)));
    }
  }

  if (auto it = document.find("repository"); it != document.end()) {
    spec.repository = parse_repository(*it, spec, problems);
  }
  parse_report_inputs(document, spec, problems);

  if (problems.empty()) outcome.spec = std::move(spec);
  return outcome;
}

TaskSpec load_task_spec(const std::filesystem::path& file) {
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    throw Error(ErrorKind::kConfig, "task_file_unreadable",
                fmt::format("cannot read task file {}: {}", file.string(), ec.message()));
  }
  if (!std::filesystem::exists(status)) {
    throw Error(ErrorKind::kConfig, "task_file_unreadable",
                fmt::format("task file {} does not exist", file.string()));
  }
  if (std::filesystem::is_directory(status)) {
    throw Error(ErrorKind::kConfig, "task_file_unreadable",
                fmt::format("task file {} is a directory", file.string()));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw Error(ErrorKind::kConfig, "task_file_unreadable",
                fmt::format("cannot read task file {}: {}", file.string(), std::strerror(errno)));
  }
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) {
    throw Error(ErrorKind::kConfig, "task_file_unreadable",
                fmt::format("cannot read task file {}: {}", file.string(), std::strerror(errno)));
  }

  json document;
  try {
    document = parse_json_text(text);
  } catch (const JsonTextError& e) {
    throw Error(ErrorKind::kConfig, "invalid_task_spec",
                fmt::format("task file {} is not valid JSON: {}", file.string(), e.what()));
  }

  ParseOutcome outcome = parse_task_spec(document);
  if (!outcome.problems.empty()) {
    std::string message = fmt::format("invalid task spec in {}:", file.string());
    for (const auto& problem : outcome.problems) {
      message += fmt::format("\n  {}: {}", problem.path, problem.message);
    }
    throw Error(ErrorKind::kConfig, "invalid_task_spec", message);
  }
  return std::move(*outcome.spec);
}

nlohmann::json to_json(const TaskSpec& spec) {
  // Fields the worker does not read (repository, reports, ...) are kept for external handlers;
  // the ones it does read are written back in their normalized form.
  json out = spec.raw.is_object() ? spec.raw : json::object();
  const auto set_or_erase = [](json& object, const char* key, bool present, auto&& make) {
    if (present) {
      object[key] = make();
    } else {
      object.erase(key);
    }
  };

  set_or_erase(out, "id", !spec.id.empty(), [&] { return spec.id; });
  out["type"] = spec.type;

  const json* raw_steps = nullptr;
  if (auto it = out.find("steps"); it != out.end() && it->is_array()) raw_steps = &*it;
  json steps = json::array();
  for (std::size_t i = 0; i < spec.steps.size(); ++i) {
    const Step& step = spec.steps[i];
    json item = raw_steps != nullptr && i < raw_steps->size() && (*raw_steps)[i].is_object()
                    ? (*raw_steps)[i]
                    : json::object();
    item["name"] = step.name;
    set_or_erase(item, "run", step.run.has_value(), [&] { return *step.run; });
    set_or_erase(item, "argv", !step.run.has_value(), [&] { return step.argv; });
    set_or_erase(item, "env", !step.env.empty(), [&] { return step.env; });
    set_or_erase(item, "timeout", step.timeout.has_value(),
                 [&] { return format_duration(*step.timeout); });
    steps.push_back(std::move(item));
  }
  set_or_erase(out, "steps", !spec.steps.empty(), [&] { return steps; });

  set_or_erase(out, "env", !spec.env.empty(), [&] { return spec.env; });
  set_or_erase(out, "secrets", !spec.secrets.empty(), [&] { return spec.secrets; });
  out["workdir"] = spec.workdir;
  set_or_erase(out, "timeout", spec.timeout.has_value(),
               [&] { return format_duration(*spec.timeout); });

  json resources =
      out.contains("resources") && out["resources"].is_object() ? out["resources"] : json::object();
  const Resources& r = spec.resources;
  set_or_erase(resources, "memory", r.memory_bytes.has_value(), [&] { return *r.memory_bytes; });
  set_or_erase(resources, "cpus", r.cpus.has_value(), [&] { return *r.cpus; });
  set_or_erase(resources, "pids", r.pids.has_value(), [&] { return *r.pids; });
  set_or_erase(resources, "disk", r.disk_bytes.has_value(), [&] { return *r.disk_bytes; });
  set_or_erase(out, "resources", !resources.empty(), [&] { return resources; });

  if (spec.network == NetworkMode::kAllowList) {
    json allow = json::array();
    for (const auto& d : spec.network_allow) allow.push_back(d.text());
    out["network"] = json{{"allow", std::move(allow)}};
  } else {
    out["network"] = spec.network == NetworkMode::kHost ? "host" : "none";
  }
  set_or_erase(out, "artifacts", !spec.artifacts.empty(), [&] { return spec.artifacts; });
  set_or_erase(out, "reports", !spec.reports.empty(), [&] { return spec.reports; });
  set_or_erase(out, "sarif", !spec.sarif.empty(), [&] { return spec.sarif; });
  set_or_erase(out, "artifactsWhen", spec.artifacts_when != "on_success",
               [&] { return spec.artifacts_when; });
  set_or_erase(out, "failOn", spec.fail_on != "error" || spec.type == "security_scan",
               [&] { return spec.fail_on; });
  return out;
}

}  // namespace tamma::protocol
