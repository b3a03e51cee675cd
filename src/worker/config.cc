#include "worker/config.h"
#include "common/json_parse.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/json_text.h"
#include "common/units.h"

namespace tamma::worker {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// The reason a value is refused, or nullopt when it was applied.
using Problem = std::optional<std::string>;

constexpr const char* kDefaultConfigFile = "/etc/tamma-worker/config.json";
// The name of the registration token's systemd credential (packaging/systemd).
constexpr const char* kTokenCredential = "registration-token";
constexpr std::uint64_t kMaxPids = 4'194'304;  // PID_MAX_LIMIT: pids.max refuses more
constexpr double kMaxCpus = 1024;
constexpr std::uint64_t kMaxSlots = 1024;
constexpr std::uint64_t kMaxArtifactFiles = 1'000'000;
// (uid_t)-1 means "unchanged" to setresuid, so it cannot name a user.
constexpr std::uint64_t kMaxId = 4'294'967'294;

std::string_view trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const auto begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kSpace) - begin + 1);
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return out;
}

// workspaceRoot -> WORKSPACE_ROOT
std::string upper_snake(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c >= 'A' && c <= 'Z') {
      out += '_';
      out += c;
    } else {
      out += static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    }
  }
  return out;
}

// workspaceRoot -> workspace-root
std::string kebab(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c >= 'A' && c <= 'Z') {
      out += '-';
      out += static_cast<char>(c - 'A' + 'a');
    } else {
      out += c;
    }
  }
  return out;
}

// ---- Value readers. Each takes the text form (a JSON string: environment, flags, or a string
// in the file) as well as the native JSON type the file may use.

Problem read_duration(const json& value, milliseconds& out) {
  std::string error;
  std::optional<milliseconds> duration;
  if (value.is_string()) {
    duration = parse_duration(value.get<std::string>(), &error);
  } else if (value.is_number()) {
    duration = duration_from_seconds(value.get<double>(), &error);
  } else {
    return "must be a duration such as \"30s\" or \"10m\" (a number is seconds), not " +
           describe_json(value);
  }
  if (!duration) return error;
  out = *duration;
  return std::nullopt;
}

// A JSON number that is a whole number, whatever its representation (100, 1e2, 100.0).
std::optional<std::uint64_t> whole_number(const json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer()) {
    const auto n = value.get<std::int64_t>();
    if (n >= 0) return static_cast<std::uint64_t>(n);
    return std::nullopt;
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::isfinite(d) && d >= 0 && d < 18446744073709551616.0 && std::floor(d) == d) {
      return static_cast<std::uint64_t>(d);
    }
  }
  return std::nullopt;
}

Problem read_size(const json& value, std::uint64_t& out) {
  std::optional<std::uint64_t> bytes;
  if (value.is_string()) {
    std::string error;
    bytes = parse_size(value.get<std::string>(), &error);
    if (!bytes) return error;
  } else if (value.is_number()) {
    bytes = whole_number(value);
    if (!bytes) return "must be a whole number of bytes, not " + describe_json(value);
  } else {
    return "must be a size such as \"512M\" or \"2G\", or a number of bytes, not " +
           describe_json(value);
  }
  if (*bytes == 0) return "must be more than 0 bytes, not " + describe_json(value);
  out = *bytes;
  return std::nullopt;
}

Problem read_bool(const json& value, bool& out) {
  if (value.is_boolean()) {
    out = value.get<bool>();
    return std::nullopt;
  }
  if (value.is_string()) {
    const std::string text = lower(trim(value.get<std::string>()));
    if (text == "true" || text == "1" || text == "yes") {
      out = true;
      return std::nullopt;
    }
    if (text == "false" || text == "0" || text == "no") {
      out = false;
      return std::nullopt;
    }
  }
  if (value.is_number_integer() && (value == 0 || value == 1)) {
    out = value == 1;
    return std::nullopt;
  }
  return "must be true or false (or 1/0, yes/no), not " + describe_json(value);
}

Problem read_count(const json& value, std::uint64_t min, std::uint64_t max, std::uint64_t& out) {
  std::optional<std::uint64_t> number;
  if (value.is_number()) {
    number = whole_number(value);
  } else if (value.is_string()) {
    const std::string_view text = trim(value.get_ref<const std::string&>());
    std::uint64_t parsed = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), parsed);
    if (ec == std::errc() && end == text.data() + text.size() && !text.empty()) number = parsed;
  }
  if (!number || *number < min || *number > max) {
    return fmt::format("must be a whole number from {} to {}, not {}", min, max,
                       describe_json(value));
  }
  out = *number;
  return std::nullopt;
}

Problem read_cpus(const json& value, double& out) {
  std::optional<double> cpus;
  if (value.is_number()) {
    cpus = value.get<double>();
  } else if (value.is_string()) {
    const std::string text(trim(value.get<std::string>()));
    double parsed = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), parsed);
    if (ec == std::errc() && end == text.data() + text.size() && !text.empty()) cpus = parsed;
  }
  if (!cpus || !std::isfinite(*cpus) || *cpus <= 0 || *cpus > kMaxCpus) {
    return fmt::format("must be a positive number of CPUs (e.g. 1.5) of at most {}, not {}",
                       kMaxCpus, describe_json(value));
  }
  out = *cpus;
  return std::nullopt;
}

Problem check_absolute(std::string_view text) {
  if (text.empty()) return "must not be empty";
  if (text.front() != '/') return fmt::format("{} is not an absolute path", json_quote(text));
  return std::nullopt;
}

Problem read_path(const json& value, std::filesystem::path& out) {
  if (!value.is_string()) return "must be an absolute path, not " + describe_json(value);
  const std::string text = value.get<std::string>();
  if (auto problem = check_absolute(text)) return problem;
  out = text;
  return std::nullopt;
}

Problem read_choice(const json& value, std::initializer_list<std::string_view> choices,
                    std::string& out) {
  std::string names;
  for (auto choice : choices) names += (names.empty() ? "" : ", ") + std::string(choice);
  if (value.is_string()) {
    const std::string text = lower(trim(value.get<std::string>()));
    if (std::find(choices.begin(), choices.end(), text) != choices.end()) {
      out = text;
      return std::nullopt;
    }
  }
  return fmt::format("must be one of {}, not {}", names, describe_json(value));
}

// key -> value pairs: a JSON object of strings, or the text form "k=v,k=v".
Problem read_pairs(const json& value, std::vector<std::pair<std::string, std::string>>& out) {
  out.clear();
  if (value.is_object()) {
    for (const auto& [key, item] : value.items()) {
      if (key.empty()) return std::string("a name must not be empty");
      if (!item.is_string()) {
        return fmt::format("the value of {} must be a string, not {}", json_quote(key),
                           describe_json(item));
      }
      out.emplace_back(key, item.get<std::string>());
    }
    return std::nullopt;
  }
  if (!value.is_string()) {
    return "must be an object or \"name=value,name=value\", not " + describe_json(value);
  }
  const std::string text = value.get<std::string>();
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view item = trim(std::string_view(text).substr(start, end - start));
    start = end + 1;
    if (item.empty()) continue;  // a trailing comma is harmless
    const auto eq = item.find('=');
    if (eq == std::string_view::npos || trim(item.substr(0, eq)).empty()) {
      return fmt::format("{} is not name=value", json_quote(item));
    }
    out.emplace_back(std::string(trim(item.substr(0, eq))), std::string(trim(item.substr(eq + 1))));
  }
  return std::nullopt;
}

// Names of environment variables: a JSON array of strings, or the text form "NAME,NAME".
// Names only: the values are the worker's own, read when a task starts. The worker's own
// settings (TAMMA_*, among them TAMMA_TOKEN, a credential) cannot be handed to a task.
Problem read_variable_names(const json& value, std::vector<std::string>& out) {
  std::vector<std::string> items;
  if (value.is_array()) {
    for (const auto& item : value) {
      if (!item.is_string()) return "every name must be a string, not " + describe_json(item);
      items.emplace_back(trim(item.get<std::string>()));
    }
  } else if (value.is_string()) {
    const std::string text = value.get<std::string>();
    std::size_t start = 0;
    while (start <= text.size()) {
      auto end = text.find(',', start);
      if (end == std::string::npos) end = text.size();
      const std::string_view item = trim(std::string_view(text).substr(start, end - start));
      start = end + 1;
      if (!item.empty()) items.emplace_back(item);  // a trailing comma is harmless
    }
  } else {
    return "must be a list of variable names (or \"NAME,NAME\"), not " + describe_json(value);
  }
  std::vector<std::string> names;
  for (const auto& name : items) {
    const bool valid = !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '_';
                       });
    if (!valid) {
      return fmt::format(
          "{} is not a variable name (names only, as [A-Za-z_][A-Za-z0-9_]*: the value is "
          "taken from the worker's environment)",
          json_quote(name));
    }
    if (name.starts_with("TAMMA_")) {
      return fmt::format("{} is one of the worker's own settings, never passed to a task",
                         json_quote(name));
    }
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  out = std::move(names);
  return std::nullopt;
}

// Default limits may be switched off: null in the file, "none" as text.
bool is_none(const json& value) {
  return value.is_null() || (value.is_string() && lower(trim(value.get<std::string>())) == "none");
}

template <typename T, typename Read>
Problem read_optional(const json& value, std::optional<T>& out, Read read) {
  if (is_none(value)) {
    out.reset();
    return std::nullopt;
  }
  T parsed{};
  if (auto problem = read(value, parsed)) return *problem + " (or \"none\" for no default)";
  out = parsed;
  return std::nullopt;
}

Problem read_token_file(const json& value, std::string& token) {
  std::filesystem::path file;
  if (auto problem = read_path(value, file)) return problem;
  std::ifstream in(file, std::ios::binary);
  if (!in) return fmt::format("cannot read {}: {}", file.string(), std::strerror(errno));
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  // Secret files written by editors or `echo` end with a newline that is not part of the token.
  const std::string_view trimmed = trim(text);
  if (trimmed.empty()) return fmt::format("{} holds no token (it is empty)", file.string());
  token = trimmed;
  return std::nullopt;
}

using Apply = Problem (*)(Config&, const json&);

struct Setting {
  std::string_view key;  // as in the file and ConfigOverrides::values
  Apply apply;
  std::string_view flag = {};  // when the command line does not spell it --kebab-case(key)
};

const Setting kSettings[] = {
    {"workspaceRoot", [](Config& c, const json& v) { return read_path(v, c.workspace_root); }},
    {"defaultTimeout",
     [](Config& c, const json& v) { return read_duration(v, c.default_timeout); }},
    {"gracePeriod", [](Config& c, const json& v) { return read_duration(v, c.grace_period); }},
    {"outputLimit", [](Config& c, const json& v) { return read_size(v, c.output_limit_bytes); }},
    {"outputHardLimit",
     [](Config& c, const json& v) { return read_size(v, c.output_hard_limit_bytes); }},
    {"defaultMemory",
     [](Config& c, const json& v) {
       return read_optional<std::uint64_t>(v, c.default_memory_bytes, read_size);
     }},
    {"defaultCpus",
     [](Config& c, const json& v) { return read_optional<double>(v, c.default_cpus, read_cpus); }},
    {"defaultPids",
     [](Config& c, const json& v) {
       return read_optional<std::uint64_t>(v, c.default_pids, [](const json& j, std::uint64_t& n) {
         return read_count(j, 1, kMaxPids, n);
       });
     }},
    {"defaultDisk",
     [](Config& c, const json& v) {
       return read_optional<std::uint64_t>(v, c.default_disk_bytes, read_size);
     }},
    {"artifactMaxFileSize",
     [](Config& c, const json& v) { return read_size(v, c.artifact_max_file_bytes); }},
    {"artifactMaxTotalSize",
     [](Config& c, const json& v) { return read_size(v, c.artifact_max_total_bytes); }},
    {"artifactMaxFiles",
     [](Config& c, const json& v) {
       return read_count(v, 1, kMaxArtifactFiles, c.artifact_max_files);
     }},
    {"isolate", [](Config& c, const json& v) { return read_bool(v, c.isolate); }, "--no-isolate"},
    {"allowDegraded", [](Config& c, const json& v) { return read_bool(v, c.allow_degraded); }},
    {"isolation",
     [](Config& c, const json& v) {
       return read_choice(v, {"full", "rootless", "unprivileged"}, c.isolation);
     }},
    {"taskUid",
     [](Config& c, const json& v) {
       std::uint64_t id = 0;
       if (auto problem = read_count(v, 0, kMaxId, id)) return problem;
       c.task_uid = static_cast<uid_t>(id);
       return Problem();
     }},
    {"taskGid",
     [](Config& c, const json& v) {
       std::uint64_t id = 0;
       if (auto problem = read_count(v, 0, kMaxId, id)) return problem;
       c.task_gid = static_cast<gid_t>(id);
       return Problem();
     }},
    {"tmpSize", [](Config& c, const json& v) { return read_size(v, c.tmp_bytes); }},
    {"tmpOnTmpfs", [](Config& c, const json& v) { return read_bool(v, c.tmp_on_tmpfs); }},
    {"passEnv", [](Config& c, const json& v) { return read_variable_names(v, c.pass_env); }},
    {"networkPolicy",
     [](Config& c, const json& v) {
       const auto problems = egress::parse_network_policy(v, c.network_policy);
       std::string text;
       for (const auto& p : problems) text += (text.empty() ? "" : "; ") + p;
       return problems.empty() ? Problem() : Problem(text);
     }},
    {"handlers",
     [](Config& c, const json& v) {
       std::vector<std::pair<std::string, std::string>> pairs;
       if (auto problem = read_pairs(v, pairs)) return problem;
       // Checked whole before applying, so that a refused list leaves no half of it behind.
       for (const auto& [type, path] : pairs) {
         if (auto problem = check_absolute(path)) {
           return Problem(fmt::format("the handler for {}: {}", json_quote(type), *problem));
         }
       }
       // Merged by type: a handler given on the command line adds to those of the file.
       for (const auto& [type, path] : pairs) c.handlers[type] = path;
       return Problem();
     },
     "--handler"},
    {"orchestratorUrl",
     [](Config& c, const json& v) {
       if (!v.is_string())
         return Problem("must be an http:// or https:// URL, not " + describe_json(v));
       // One URL, or several replicas as "URL1,URL2,..." (the worker fails over between them).
       const std::string list(trim(v.get<std::string>()));
       std::size_t start = 0;
       while (start <= list.size() && !list.empty()) {
         const std::size_t comma = list.find(',', start);
         const std::string url(
             trim(list.substr(start, comma == std::string::npos ? comma : comma - start)));
         const bool http = url.starts_with("http://") && url.size() > 7;
         const bool https = url.starts_with("https://") && url.size() > 8;
         if (!http && !https) {
           return Problem(fmt::format("{} is not an http:// or https:// URL", json_quote(url)));
         }
         if (comma == std::string::npos) break;
         start = comma + 1;
       }
       c.orchestrator_url = list;
       return Problem();
     }},
    {"caFile",
     [](Config& c, const json& v) {
       if (!v.is_string()) return Problem("must be a path, not " + describe_json(v));
       const std::string path(trim(v.get<std::string>()));
       if (auto problem = check_absolute(path)) return Problem(*problem);
       c.ca_file = path;
       return Problem();
     },
     "--ca-file"},
    {"token",
     [](Config& c, const json& v) {
       if (!v.is_string()) return Problem("must be a string, not " + describe_json(v));
       // The value itself stays out of the message: it is a credential.
       if (trim(v.get<std::string>()).empty()) return Problem("must not be empty");
       c.token = trim(v.get<std::string>());
       return Problem();
     }},
    {"tokenFile", [](Config& c, const json& v) { return read_token_file(v, c.token); }},
    {"slots",
     [](Config& c, const json& v) {
       std::uint64_t slots = 0;
       if (auto problem = read_count(v, 1, kMaxSlots, slots)) return problem;
       c.slots = static_cast<unsigned>(slots);
       return Problem();
     }},
    {"labels",
     [](Config& c, const json& v) {
       std::vector<std::pair<std::string, std::string>> pairs;
       if (auto problem = read_pairs(v, pairs)) return problem;
       for (const auto& [key, value] : pairs) c.labels[key] = value;
       return Problem();
     },
     "--label"},
    {"logLevel",
     [](Config& c, const json& v) {
       return read_choice(v, {"trace", "debug", "info", "warn", "error", "off"}, c.log_level);
     }},
    {"logFormat",
     [](Config& c, const json& v) {
       std::string format;
       if (auto problem = read_choice(v, {"text", "json"}, format)) return problem;
       c.log_format = format == "json" ? LogFormat::kJson : LogFormat::kText;
       return Problem();
     }},
};

const Setting* find_setting(std::string_view key) {
  for (const auto& setting : kSettings) {
    if (setting.key == key) return &setting;
  }
  return nullptr;
}

std::string flag_of(const Setting& setting) {
  return setting.flag.empty() ? "--" + kebab(setting.key) : std::string(setting.flag);
}

// The seed's variables, read with the units it gave them; TAMMA_* ones win over these.
struct SeedVariable {
  std::string_view variable;
  std::string_view key;
  Apply apply;
};

const SeedVariable kSeedVariables[] = {
    {"MAX_EXECUTION_TIME", "defaultTimeout",
     [](Config& c, const json& v) {
       // Milliseconds when bare, as the seed read it; a duration with its unit is clearer.
       std::string text(trim(v.get<std::string>()));
       const bool bare = !text.empty() && std::all_of(text.begin(), text.end(), [](char ch) {
         return ch >= '0' && ch <= '9';
       });
       return read_duration(json(bare ? text + "ms" : text), c.default_timeout);
     }},
    {"MAX_MEMORY_USAGE", "defaultMemory",
     [](Config& c, const json& v) { return find_setting("defaultMemory")->apply(c, v); }},
    {"MAX_CPU_USAGE", "defaultCpus",
     [](Config& c, const json& v) {
       // The seed's own default was "200" meaning 200 %; a trailing % keeps that reading.
       std::string text(trim(v.get<std::string>()));
       if (!text.empty() && text.back() == '%') {
         double percent = 0;
         const auto [end, ec] =
             std::from_chars(text.data(), text.data() + text.size() - 1, percent);
         if (ec != std::errc() || end != text.data() + text.size() - 1) {
           return Problem(fmt::format("{} is not a percentage of a CPU", json_quote(text)));
         }
         text = fmt::format("{}", percent / 100.0);
       }
       return find_setting("defaultCpus")->apply(c, json(text));
     }},
    {"WORKSPACE_ROOT", "workspaceRoot",
     [](Config& c, const json& v) { return find_setting("workspaceRoot")->apply(c, v); }},
    {"ENABLE_SANDBOX", "isolate",
     [](Config& c, const json& v) { return find_setting("isolate")->apply(c, v); }},
};

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string unknown_setting(std::string_view key) {
  const Setting* closest = nullptr;
  std::size_t best = 3;  // farther than two edits is a different word, not a typo
  for (const auto& setting : kSettings) {
    const std::size_t distance = edit_distance(lower(key), lower(setting.key));
    if (distance < best) {
      best = distance;
      closest = &setting;
    }
  }
  if (closest != nullptr) {
    return fmt::format("unknown setting (did you mean \"{}\"?)", closest->key);
  }
  std::string names;
  for (const auto& setting : kSettings) {
    names += (names.empty() ? "" : ", ") + std::string(setting.key);
  }
  return "unknown setting (the settings are " + names + ")";
}

class Loader {
 public:
  explicit Loader(Config& config) : config_(config) {}

  void apply(std::string_view key, Apply apply, const json& value, const std::string& source) {
    if (auto problem = apply(config_, value)) {
      problems_.push_back(fmt::format("{} from {}: {}", key, source, *problem));
    }
  }

  void note(std::string problem) { problems_.push_back(std::move(problem)); }

  void throw_if_any() const {
    if (problems_.empty()) return;
    std::string message;
    for (const auto& problem : problems_) message += (message.empty() ? "" : "\n") + problem;
    throw Error(ErrorKind::kConfig, "invalid_config", message);
  }

 private:
  Config& config_;
  std::vector<std::string> problems_;
};

using Environment = std::map<std::string, std::string, std::less<>>;

// An empty variable counts as unset: service managers and CI systems often export NAME= for
// settings they leave to the default.
Environment parse_environment(const std::vector<std::string>& environ) {
  Environment out;
  for (const auto& entry : environ) {
    const auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == entry.size()) continue;
    out.emplace(entry.substr(0, eq), entry.substr(eq + 1));  // the first wins, as for getenv
  }
  return out;
}

std::filesystem::path default_workspace_root(const Environment& env) {
  if (auto it = env.find("TMPDIR"); it != env.end() && it->second.front() == '/') {
    return std::filesystem::path(it->second) / "tamma-worker";
  }
  return "/tmp/tamma-worker";
}

[[noreturn]] void config_file_error(const std::string& message) {
  throw Error(ErrorKind::kConfig, "invalid_config", message);
}

json parse_config_text(std::string_view text, const std::string& file) {
  json document;
  try {
    document = parse_json_text(text);
  } catch (const JsonTextError& e) {
    config_file_error(fmt::format("config file {} is not valid JSON: {}", file, e.what()));
  }
  if (!document.is_object()) {
    config_file_error(fmt::format("config file {} must hold a JSON object of settings, not {}",
                                  file, describe_json(document)));
  }
  return document;
}

json read_config_file(const std::filesystem::path& file, const std::string& named_by) {
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    config_file_error(
        fmt::format("config file {} ({}): {}", file.string(), named_by, ec.message()));
  }
  if (!std::filesystem::exists(status)) {
    config_file_error(fmt::format("config file {} ({}) does not exist", file.string(), named_by));
  }
  if (std::filesystem::is_directory(status)) {
    config_file_error(fmt::format("config file {} ({}) is a directory", file.string(), named_by));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    config_file_error(
        fmt::format("cannot read config file {}: {}", file.string(), std::strerror(errno)));
  }
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return parse_config_text(text, file.string());
}

std::optional<std::pair<std::filesystem::path, std::string>> locate_config_file(
    const ConfigOverrides& overrides, const Environment& env) {
  if (overrides.config_file) return std::pair{*overrides.config_file, std::string("flag --config")};
  if (auto it = env.find("TAMMA_CONFIG_PATH"); it != env.end()) {
    return std::pair{std::filesystem::path(it->second),
                     std::string("environment TAMMA_CONFIG_PATH")};
  }
  std::error_code ec;
  if (std::filesystem::exists(kDefaultConfigFile, ec)) {
    return std::pair{std::filesystem::path(kDefaultConfigFile), std::string("the default path")};
  }
  return std::nullopt;
}

// token and tokenFile at one level would leave it to the order of keys which one is used.
template <typename Contains>
void check_one_token(Loader& loader, Contains contains, std::string_view token_name,
                     std::string_view file_name, const std::string& source) {
  if (contains(token_name) && contains(file_name)) {
    loader.note(
        fmt::format("token from {}: set either {} or {}, not both", source, token_name, file_name));
  }
}

void apply_config_file(Loader& loader, const json& document, const std::string& file) {
  const std::string source = "config file " + file;
  check_one_token(
      loader, [&](std::string_view key) { return document.contains(key); }, "token", "tokenFile",
      source);
  for (const auto& [key, value] : document.items()) {
    if (const Setting* setting = find_setting(key)) {
      loader.apply(key, setting->apply, value, source);
    } else {
      loader.note(fmt::format("{} from {}: {}", key, source, unknown_setting(key)));
    }
  }
}

}  // namespace

Config config_from_file_text(std::string_view text, const std::string& file) {
  Config config;
  config.workspace_root = default_workspace_root({});
  Loader loader(config);
  apply_config_file(loader, parse_config_text(text, file), file);
  loader.throw_if_any();
  return config;
}

Config load_config(const ConfigOverrides& overrides, const std::vector<std::string>& environ) {
  const Environment env = parse_environment(environ);
  Config config;
  config.workspace_root = default_workspace_root(env);
  Loader loader(config);

  if (auto located = locate_config_file(overrides, env)) {
    const auto& [file, named_by] = *located;
    apply_config_file(loader, read_config_file(file, named_by), file.string());
  }

  // systemd's LoadCredential=registration-token:FILE (the packaged unit): the token from
  // $CREDENTIALS_DIRECTORY, read as if TAMMA_TOKEN_FILE named it, so TAMMA_TOKEN and
  // TAMMA_TOKEN_FILE still win. Never the command line, where ps would show it.
  if (auto it = env.find("CREDENTIALS_DIRECTORY"); it != env.end()) {
    const std::filesystem::path credential = std::filesystem::path(it->second) / kTokenCredential;
    std::error_code ec;
    if (std::filesystem::exists(credential, ec)) {
      loader.apply("tokenFile", find_setting("tokenFile")->apply, json(credential.string()),
                   fmt::format("systemd credential {} ($CREDENTIALS_DIRECTORY)", kTokenCredential));
    }
  }

  for (const auto& seed : kSeedVariables) {
    if (auto it = env.find(seed.variable); it != env.end()) {
      loader.apply(seed.key, seed.apply, json(it->second),
                   fmt::format("environment {}", seed.variable));
    }
  }
  check_one_token(
      loader, [&](std::string_view name) { return env.contains(name); }, "TAMMA_TOKEN",
      "TAMMA_TOKEN_FILE", "environment");
  for (const auto& setting : kSettings) {
    const std::string variable = "TAMMA_" + upper_snake(setting.key);
    if (auto it = env.find(variable); it != env.end()) {
      loader.apply(setting.key, setting.apply, json(it->second), "environment " + variable);
    }
  }

  check_one_token(
      loader, [&](std::string_view key) { return overrides.values.contains(std::string(key)); },
      "token", "tokenFile", "flags");
  for (const auto& [key, value] : overrides.values) {
    if (const Setting* setting = find_setting(key)) {
      loader.apply(key, setting->apply, json(value), "flag " + flag_of(*setting));
    } else {
      loader.note(fmt::format("{} from flag --{}: {}", key, kebab(key), unknown_setting(key)));
    }
  }

  loader.throw_if_any();
  return config;
}

}  // namespace tamma::worker
