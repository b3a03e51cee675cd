#include "protocol/task_result.h"

#include <signal.h>
#include <string.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include <fmt/format.h>

#include "common/error.h"
#include "common/json_text.h"

namespace tamma::protocol {
namespace {

using nlohmann::json;

struct StatusName {
  TaskStatus status;
  std::string_view name;
};
constexpr StatusName kStatusNames[] = {
    {TaskStatus::kSucceeded, "succeeded"}, {TaskStatus::kFailed, "failed"},
    {TaskStatus::kTimeout, "timeout"},     {TaskStatus::kLimitExceeded, "limit_exceeded"},
    {TaskStatus::kCancelled, "cancelled"}, {TaskStatus::kError, "error"},
};

struct LimitName {
  LimitKind limit;
  std::string_view name;
};
constexpr LimitName kLimitNames[] = {
    {LimitKind::kNone, "none"}, {LimitKind::kMemory, "memory"}, {LimitKind::kPids, "pids"},
    {LimitKind::kDisk, "disk"}, {LimitKind::kOutput, "output"}, {LimitKind::kCpu, "cpu"},
};

json optional_int(const std::optional<int>& value) { return value ? json(*value) : json(nullptr); }

json signal_name_json(const std::optional<int>& signal) {
  if (!signal) return nullptr;
  // Real-time signals have no abbreviation of their own; glibc names them relative to SIGRTMIN.
  if (*signal >= SIGRTMIN && *signal <= SIGRTMAX) {
    return *signal == SIGRTMIN ? std::string("SIGRTMIN")
                               : fmt::format("SIGRTMIN+{}", *signal - SIGRTMIN);
  }
  if (const char* abbreviation = sigabbrev_np(*signal)) {
    return std::string("SIG") + abbreviation;
  }
  return nullptr;
}

json limit_json(LimitKind limit) {
  return limit == LimitKind::kNone ? json(nullptr) : json(std::string(to_string(limit)));
}

json usage_json(const ResourceUsage& usage) {
  json out = {
      {"peakMemoryBytes", usage.peak_memory_bytes},
      {"cpuUserMs", usage.cpu_user_ms},
      {"cpuSystemMs", usage.cpu_system_ms},
      {"cpuMs", usage.cpu_user_ms + usage.cpu_system_ms},
      {"diskBytes", usage.disk_bytes},
      {"oomKills", usage.oom_kills},
      {"pidsLimitHits", usage.pids_limit_hits},
      {"cpuThrottledMs", usage.cpu_throttled_ms},
      {"networkUnreachable", usage.network_unreachable},
      {"exact", usage.exact},
  };
  // Only tasks with an allow-list have it; other results keep their shape.
  if (!usage.egress.empty()) {
    json egress = json::array();
    for (const auto& e : usage.egress) {
      egress.push_back({{"destination", valid_utf8(e.destination)},
                        {"bytesOut", e.bytes_out},
                        {"bytesIn", e.bytes_in},
                        {"connections", e.connections}});
    }
    out["egress"] = std::move(egress);
  }
  return out;
}

json step_json(const StepResult& step) {
  return {
      {"name", valid_utf8(step.name)},
      {"status", to_string(step.status)},
      {"exitCode", optional_int(step.exit_code)},
      {"signal", optional_int(step.signal)},
      {"signalName", signal_name_json(step.signal)},
      {"durationMs", step.duration_ms},
      {"limit", limit_json(step.limit)},
      {"stdout", valid_utf8(step.stdout_capture.text)},
      {"stderr", valid_utf8(step.stderr_capture.text)},
      {"stdoutBytes", step.stdout_capture.total_bytes},
      {"stderrBytes", step.stderr_capture.total_bytes},
      {"stdoutDropped", step.stdout_capture.dropped_bytes},
      {"stderrDropped", step.stderr_capture.dropped_bytes},
      {"usage", usage_json(step.usage)},
  };
}

// Reads a handler's answer, noting every malformed field with its path rather than stopping at
// the first: the handler's author fixes them all in one round.
class Reader {
 public:
  std::vector<std::string> problems;

  void problem(const std::string& path, const std::string& message) {
    problems.push_back(fmt::format("{}: {}", path, message));
  }

  // Each reader returns nullopt when the field is absent or null (where allowed) or malformed.
  std::optional<std::string> string(const json& object, const std::string& path, const char* key) {
    const json* value = find(object, key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_string()) {
      problem(path + "." + key, "must be a string, not " + describe_json(*value));
      return std::nullopt;
    }
    return value->get<std::string>();
  }

  std::optional<std::uint64_t> count(const json& object, const std::string& path, const char* key) {
    const json* value = find(object, key);
    if (value == nullptr) return std::nullopt;
    // Parsed non-negative integers are unsigned, but those built in C++ from an int are not.
    if (value->is_number_unsigned() ||
        (value->is_number_integer() && value->get<std::int64_t>() >= 0)) {
      return value->get<std::uint64_t>();
    }
    // Python's json writes 12.0 for a float that happens to be whole.
    if (value->is_number_float()) {
      const double d = value->get<double>();
      if (d >= 0 && d < 18446744073709551616.0 && std::floor(d) == d) {
        return static_cast<std::uint64_t>(d);
      }
    }
    problem(path + "." + key, "must be a non-negative whole number, not " + describe_json(*value));
    return std::nullopt;
  }

  std::optional<int> int_or_null(const json& object, const std::string& path, const char* key) {
    const json* value = find(object, key);
    if (value == nullptr || value->is_null()) return std::nullopt;
    const bool in_range = value->is_number_integer() &&
                          (value->is_number_unsigned() ? value->get<std::uint64_t>() <= INT_MAX
                                                       : value->get<std::int64_t>() >= INT_MIN &&
                                                             value->get<std::int64_t>() <= INT_MAX);
    if (!in_range) {
      problem(path + "." + key, "must be an integer or null, not " + describe_json(*value));
      return std::nullopt;
    }
    return static_cast<int>(value->get<std::int64_t>());
  }

  std::optional<int> signal_or_null(const json& object, const std::string& path, const char* key) {
    auto signal = int_or_null(object, path, key);
    if (signal && (*signal < 1 || *signal > SIGRTMAX)) {
      problem(path + "." + key,
              fmt::format("{} is not a signal number (1 to {})", *signal, SIGRTMAX));
      return std::nullopt;
    }
    return signal;
  }

  std::optional<bool> boolean(const json& object, const std::string& path, const char* key) {
    const json* value = find(object, key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_boolean()) {
      problem(path + "." + key, "must be true or false, not " + describe_json(*value));
      return std::nullopt;
    }
    return value->get<bool>();
  }

  std::optional<TaskStatus> status(const json& object, const std::string& path) {
    const json* value = find(object, "status");
    if (value == nullptr) {
      problem(path + ".status", "is required: " + status_names());
      return std::nullopt;
    }
    if (value->is_string()) {
      if (auto status = task_status_from_string(value->get<std::string>())) return status;
    }
    problem(path + ".status",
            fmt::format("must be one of {}, not {}", status_names(), describe_json(*value)));
    return std::nullopt;
  }

  LimitKind limit(const json& object, const std::string& path) {
    const json* value = find(object, "limit");
    if (value == nullptr || value->is_null()) return LimitKind::kNone;
    if (value->is_string()) {
      for (const auto& [limit, name] : kLimitNames) {
        if (name == value->get<std::string>()) return limit;
      }
    }
    problem(path + ".limit",
            "must be null or one of memory, pids, disk, output, cpu, not " + describe_json(*value));
    return LimitKind::kNone;
  }

  ResourceUsage usage(const json& object, const std::string& path) {
    ResourceUsage usage;
    const json* value = find(object, "usage");
    if (value == nullptr || value->is_null()) return usage;
    const std::string here = path + ".usage";
    if (!value->is_object()) {
      problem(here, "must be an object, not " + describe_json(*value));
      return usage;
    }
    usage.peak_memory_bytes = count(*value, here, "peakMemoryBytes").value_or(0);
    usage.cpu_user_ms = count(*value, here, "cpuUserMs").value_or(0);
    usage.cpu_system_ms = count(*value, here, "cpuSystemMs").value_or(0);
    usage.disk_bytes = count(*value, here, "diskBytes").value_or(0);
    usage.oom_kills = count(*value, here, "oomKills").value_or(0);
    usage.pids_limit_hits = count(*value, here, "pidsLimitHits").value_or(0);
    usage.cpu_throttled_ms = count(*value, here, "cpuThrottledMs").value_or(0);
    usage.network_unreachable = count(*value, here, "networkUnreachable").value_or(0);
    usage.exact = boolean(*value, here, "exact").value_or(true);
    return usage;
  }

  std::int64_t duration(const json& object, const std::string& path) {
    auto ms = count(object, path, "durationMs").value_or(0);
    return ms > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(ms);
  }

  const json* array(const json& object, const std::string& path, const char* key) {
    const json* value = find(object, key);
    if (value == nullptr || value->is_null()) return nullptr;
    if (!value->is_array()) {
      problem(path + "." + key, "must be an array, not " + describe_json(*value));
      return nullptr;
    }
    return value;
  }

  // An array of strings at `key` of the document's root (degradations, hints).
  std::vector<std::string> strings(const json& object, const std::string& path, const char* key) {
    std::vector<std::string> out;
    if (const json* items = array(object, path, key)) {
      for (std::size_t i = 0; i < items->size(); ++i) {
        const json& item = (*items)[i];
        if (item.is_string()) {
          out.push_back(item.get<std::string>());
        } else {
          problem(fmt::format("{}.{}[{}]", path, key, i),
                  "must be a string, not " + describe_json(item));
        }
      }
    }
    return out;
  }

 private:
  static const json* find(const json& object, const char* key) {
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
  }

  static std::string status_names() {
    std::string out;
    for (const auto& [status, name] : kStatusNames) {
      out += (out.empty() ? "" : ", ") + std::string(name);
    }
    return out;
  }
};

StepResult read_step(Reader& reader, const json& value, std::size_t index,
                     const std::string& path) {
  StepResult step;
  step.name = fmt::format("step-{}", index + 1);
  if (!value.is_object()) {
    reader.problem(path, "must be an object, not " + describe_json(value));
    return step;
  }
  if (auto name = reader.string(value, path, "name")) step.name = *name;
  step.status = reader.status(value, path).value_or(TaskStatus::kError);
  step.exit_code = reader.int_or_null(value, path, "exitCode");
  step.signal = reader.signal_or_null(value, path, "signal");
  step.duration_ms = reader.duration(value, path);
  step.limit = reader.limit(value, path);
  step.stdout_capture.text = reader.string(value, path, "stdout").value_or("");
  step.stderr_capture.text = reader.string(value, path, "stderr").value_or("");
  step.stdout_capture.total_bytes =
      reader.count(value, path, "stdoutBytes").value_or(step.stdout_capture.text.size());
  step.stderr_capture.total_bytes =
      reader.count(value, path, "stderrBytes").value_or(step.stderr_capture.text.size());
  step.stdout_capture.dropped_bytes = reader.count(value, path, "stdoutDropped").value_or(0);
  step.stderr_capture.dropped_bytes = reader.count(value, path, "stderrDropped").value_or(0);
  step.usage = reader.usage(value, path);
  return step;
}

bool is_sha256_hex(std::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string_view to_string(TaskStatus status) {
  for (const auto& [value, name] : kStatusNames) {
    if (value == status) return name;
  }
  return "error";
}

std::optional<TaskStatus> task_status_from_string(std::string_view text) {
  for (const auto& [value, name] : kStatusNames) {
    if (name == text) return value;
  }
  return std::nullopt;
}

std::string_view to_string(LimitKind limit) {
  for (const auto& [value, name] : kLimitNames) {
    if (value == limit) return name;
  }
  return "none";
}

nlohmann::json to_json(const TaskResult& result) {
  json steps = json::array();
  for (const auto& step : result.steps) steps.push_back(step_json(step));
  json artifacts = json::array();
  for (const auto& artifact : result.artifacts) {
    json item = {
        {"path", valid_utf8(artifact.path)}, {"size", artifact.size}, {"sha256", artifact.sha256}};
    if (!artifact.link.empty()) item["link"] = valid_utf8(artifact.link);
    artifacts.push_back(std::move(item));
  }
  json degradations = json::array();
  for (const auto& text : result.degradations) degradations.push_back(valid_utf8(text));
  json hints = json::array();
  for (const auto& text : result.hints) hints.push_back(valid_utf8(text));
  json error = nullptr;
  if (result.error) {
    error = {{"code", valid_utf8(result.error->code)},
             {"message", valid_utf8(result.error->message)},
             {"retryable", result.error->retryable}};
  }
  json out = {
      {"taskId", valid_utf8(result.task_id)},
      {"type", valid_utf8(result.type)},
      {"status", to_string(result.status)},
      {"exitCode", optional_int(result.exit_code)},
      {"signal", optional_int(result.signal)},
      {"signalName", signal_name_json(result.signal)},
      {"durationMs", result.duration_ms},
      {"steps", std::move(steps)},
      {"usage", usage_json(result.usage)},
      {"limit", limit_json(result.limit)},
      {"artifacts", std::move(artifacts)},
      {"error", std::move(error)},
      {"degradations", std::move(degradations)},
      {"hints", std::move(hints)},
      {"details", result.details},
  };
  if (!result.egress_refused.empty() || result.egress_refused_dropped > 0) {
    json refused = json::array();
    for (const auto& r : result.egress_refused) {
      refused.push_back({{"destination", valid_utf8(r.destination)},
                         {"reason", valid_utf8(r.reason)},
                         {"protocol", r.protocol},
                         {"at", r.at}});
    }
    out["egressRefused"] = std::move(refused);
    if (result.egress_refused_dropped > 0)
      out["egressRefusedDropped"] = result.egress_refused_dropped;
  }
  return out;
}

TaskResult task_result_from_json(const nlohmann::json& document) {
  Reader reader;
  TaskResult result;
  const std::string root = "$";
  if (!document.is_object()) {
    throw Error(
        ErrorKind::kInfrastructure, "invalid_handler_result",
        "invalid result document: $: must be a JSON object, not " + describe_json(document));
  }
  result.status = reader.status(document, root).value_or(TaskStatus::kError);
  result.task_id = reader.string(document, root, "taskId").value_or("");
  result.type = reader.string(document, root, "type").value_or("");
  result.exit_code = reader.int_or_null(document, root, "exitCode");
  result.signal = reader.signal_or_null(document, root, "signal");
  result.duration_ms = reader.duration(document, root);
  result.limit = reader.limit(document, root);
  result.usage = reader.usage(document, root);

  if (const json* steps = reader.array(document, root, "steps")) {
    for (std::size_t i = 0; i < steps->size(); ++i) {
      result.steps.push_back(read_step(reader, (*steps)[i], i, fmt::format("$.steps[{}]", i)));
    }
  }

  if (const json* artifacts = reader.array(document, root, "artifacts")) {
    for (std::size_t i = 0; i < artifacts->size(); ++i) {
      const json& item = (*artifacts)[i];
      const std::string path = fmt::format("$.artifacts[{}]", i);
      if (!item.is_object()) {
        reader.problem(path,
                       "must be an object with path, size and sha256, not " + describe_json(item));
        continue;
      }
      Artifact artifact;
      if (auto file = reader.string(item, path, "path")) {
        artifact.path = *file;
      } else if (!item.contains("path")) {
        reader.problem(path + ".path", "is required");
      }
      artifact.size = reader.count(item, path, "size").value_or(0);
      if (auto digest = reader.string(item, path, "sha256")) {
        if (is_sha256_hex(*digest)) {
          artifact.sha256 = *digest;
        } else {
          reader.problem(path + ".sha256", "must be 64 lowercase hexadecimal digits");
        }
      }
      if (item.contains("link")) {
        if (auto target = reader.string(item, path, "link")) {
          if (auto problem = artifact_link_problem(artifact.path, *target)) {
            reader.problem(path + ".link", *problem);
          } else {
            artifact.link = *target;
          }
        }
      }
      result.artifacts.push_back(std::move(artifact));
    }
  }

  if (auto it = document.find("error"); it != document.end() && !it->is_null()) {
    const std::string path = "$.error";
    if (!it->is_object()) {
      reader.problem(path,
                     "must be null or an object with code and message, not " + describe_json(*it));
    } else {
      TaskError error;
      if (auto code = reader.string(*it, path, "code")) {
        error.code = *code;
      } else if (!it->contains("code")) {
        reader.problem(path + ".code", "is required");
      }
      error.message = reader.string(*it, path, "message").value_or("");
      error.retryable = reader.boolean(*it, path, "retryable").value_or(false);
      result.error = std::move(error);
    }
  }

  result.degradations = reader.strings(document, root, "degradations");
  result.hints = reader.strings(document, root, "hints");

  if (auto it = document.find("details"); it != document.end()) result.details = *it;

  if (!reader.problems.empty()) {
    std::string message = "invalid result document:";
    for (const auto& problem : reader.problems) message += "\n  " + problem;
    throw Error(ErrorKind::kInfrastructure, "invalid_handler_result", message);
  }
  return result;
}

std::optional<std::string> artifact_link_problem(std::string_view path, std::string_view target) {
  constexpr std::size_t kMaxTarget = 1024;
  if (target.empty()) return "must not be empty";
  if (target.size() > kMaxTarget) {
    return fmt::format("is {} bytes long, more than {}", target.size(), kMaxTarget);
  }
  if (valid_utf8(target) != target || std::any_of(target.begin(), target.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
      })) {
    return "must be printable UTF-8";
  }
  if (target.front() == '/') {
    return fmt::format(
        "{} is absolute: a link is recorded only with a target relative to its "
        "own directory that stays inside the workspace",
        json_quote(target));
  }
  // Resolved by its text alone, from the link's directory: never through the filesystem,
  // whose other links the task controls.
  int depth = 0;
  const auto walk = [&depth](std::string_view text, bool directory_of) {
    std::size_t start = 0;
    std::vector<std::string_view> parts;
    while (start <= text.size()) {
      const auto slash = text.find('/', start);
      const auto end = slash == std::string_view::npos ? text.size() : slash;
      parts.push_back(text.substr(start, end - start));
      if (slash == std::string_view::npos) break;
      start = slash + 1;
    }
    if (directory_of && !parts.empty()) parts.pop_back();  // the link's own name
    for (const auto part : parts) {
      if (part.empty() || part == ".") continue;
      depth += part == ".." ? -1 : 1;
      if (depth < 0) return false;
    }
    return true;
  };
  if (!walk(path, true) || !walk(target, false)) {
    return fmt::format("{} leads out of the workspace", json_quote(target));
  }
  return std::nullopt;
}

}  // namespace tamma::protocol
