#include "reports/sarif_report.h"
#include "common/json_parse.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <unordered_map>

#include <fmt/format.h>

#include "common/error.h"
#include "common/json_text.h"
#include "reports/junit_report.h"

namespace tamma::reports {
namespace {

using nlohmann::json;

constexpr std::string_view kLevelNames[] = {"none", "note", "warning", "error"};

class Reader {
 public:
  explicit Reader(const std::string& name) : name_(name) {}

  [[noreturn]] void malformed(const std::string& path, const std::string& problem) const {
    throw Error(ErrorKind::kTaskFailed, "report_malformed",
                fmt::format("SARIF file {} is malformed at {}: {}", name_, path, problem));
  }

  const json& object(const json& value, const std::string& path) const {
    if (!value.is_object()) malformed(path, "must be an object, not " + describe_json(value));
    return value;
  }

  // An optional member: nullptr when absent or null, checked for its type otherwise.
  const json* member(const json& parent, const char* key, json::value_t type,
                     const std::string& path) const {
    auto it = parent.find(key);
    if (it == parent.end() || it->is_null()) return nullptr;
    const bool ok =
        type == json::value_t::number_integer ? it->is_number_integer() : it->type() == type;
    if (!ok) {
      static const std::map<json::value_t, const char*> kNames = {
          {json::value_t::object, "an object"},
          {json::value_t::array, "an array"},
          {json::value_t::string, "a string"},
          {json::value_t::number_integer, "an integer"}};
      malformed(path + "." + key,
                fmt::format("must be {}, not {}", kNames.at(type), describe_json(*it)));
    }
    return &*it;
  }

 private:
  const std::string& name_;
};

std::string percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    // isxdigit of a negative char (any byte of a UTF-8 sequence) is undefined.
    if (text[i] == '%' && i + 2 < text.size() &&
        std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

// "{0} is used in {1}" with the result's arguments (SARIF 3.11.5).
std::string format_message(std::string_view pattern, const json* arguments) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '{' && i + 1 < pattern.size() && pattern[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    if (pattern[i] == '}' && i + 1 < pattern.size() && pattern[i + 1] == '}') {
      out += '}';
      ++i;
      continue;
    }
    if (pattern[i] == '{') {
      const auto close = pattern.find('}', i);
      if (close != std::string_view::npos) {
        const std::string digits(pattern.substr(i + 1, close - i - 1));
        if (!digits.empty() && digits.size() < 6 &&
            std::all_of(digits.begin(), digits.end(),
                        [](char c) { return c >= '0' && c <= '9'; })) {
          const auto index = static_cast<std::size_t>(std::stoul(digits));
          if (arguments && index < arguments->size() && (*arguments)[index].is_string()) {
            out += (*arguments)[index].get<std::string>();
          }
          i = close;
          continue;
        }
      }
    }
    out += pattern[i];
  }
  return out;
}

const json& member_or_null(const json& object, const char* key) {
  static const json kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

class RunParser {
 public:
  RunParser(const Reader& reader, const json& run, const std::string& path,
            const std::string& workspace)
      : reader_(reader), run_(run), path_(path), workspace_(workspace) {
    const json& tool = reader_.object(member_or_null(run, "tool"), path + ".tool");
    driver_ = &reader_.object(member_or_null(tool, "driver"), path + ".tool.driver");
    if (const json* name =
            reader_.member(*driver_, "name", json::value_t::string, path + ".tool.driver")) {
      tool_name_ = name->get<std::string>();
    } else {
      reader_.malformed(path + ".tool.driver.name", "is required (the tool's name)");
    }
    extensions_ = reader_.member(tool, "extensions", json::value_t::array, path + ".tool");
    driver_rules_ = reader_.member(*driver_, "rules", json::value_t::array, path + ".tool.driver");
    // Looked up once per result: by id through a map, not a scan of every rule.
    if (driver_rules_ != nullptr) {
      for (const json& rule : *driver_rules_) {
        if (rule.is_object() && rule.contains("id") && rule["id"].is_string()) {
          rules_by_id_.try_emplace(rule["id"].get<std::string>(), &rule);
        }
      }
    }
  }

  [[nodiscard]] const std::string& tool_name() const { return tool_name_; }

  void parse(ScanFindings& out) {
    const json* results = reader_.member(run_, "results", json::value_t::array, path_);
    if (results == nullptr) return;
    for (std::size_t i = 0; i < results->size(); ++i) {
      const std::string path = fmt::format("{}.results[{}]", path_, i);
      const json& result = reader_.object((*results)[i], path);
      if (suppressed(result, path)) {
        ++out.suppressed;
        continue;
      }
      Finding finding = read(result, path);
      ++out.counts[static_cast<int>(finding.level)];
      out.findings.push_back(std::move(finding));
    }
  }

 private:
  bool suppressed(const json& result, const std::string& path) const {
    const json* list = reader_.member(result, "suppressions", json::value_t::array, path);
    if (list == nullptr) return false;
    for (const json& suppression : *list) {
      if (!suppression.is_object()) continue;
      // A suppression without a status is in force (SARIF 3.35.3); under review or rejected
      // ones are not.
      auto status = suppression.find("status");
      if (status == suppression.end() || *status == "accepted") return true;
    }
    return false;
  }

  // The rule a result refers to: by rule.index (in an extension when rule.toolComponent says
  // so), by ruleIndex, else by id among the driver's rules.
  const json* rule_of(const json& result, const std::string& rule_id,
                      const std::string& path) const {
    const json* rules = driver_rules_;
    std::optional<std::int64_t> index;
    if (const json* rule = reader_.member(result, "rule", json::value_t::object, path)) {
      if (const json* i =
              reader_.member(*rule, "index", json::value_t::number_integer, path + ".rule")) {
        index = i->get<std::int64_t>();
      }
      if (const json* component =
              reader_.member(*rule, "toolComponent", json::value_t::object, path + ".rule")) {
        auto c = component->find("index");
        if (c != component->end() && c->is_number_integer() && extensions_ != nullptr &&
            c->get<std::int64_t>() >= 0 &&
            static_cast<std::size_t>(c->get<std::int64_t>()) < extensions_->size()) {
          const json& extension = (*extensions_)[c->get<std::size_t>()];
          auto found = extension.find("rules");
          rules = found != extension.end() && found->is_array() ? &*found : nullptr;
        }
      }
    }
    if (!index) {
      if (const json* i =
              reader_.member(result, "ruleIndex", json::value_t::number_integer, path)) {
        index = i->get<std::int64_t>();
      }
    }
    if (rules == nullptr) return nullptr;
    if (index && *index >= 0 && static_cast<std::size_t>(*index) < rules->size()) {
      return &(*rules)[static_cast<std::size_t>(*index)];
    }
    if (rules == driver_rules_) {
      auto it = rules_by_id_.find(rule_id);
      return it == rules_by_id_.end() ? nullptr : it->second;
    }
    for (const json& rule : *rules) {
      if (rule.is_object() && rule.contains("id") && rule["id"] == rule_id) return &rule;
    }
    return nullptr;
  }

  Level level_of(const json& result, const json* rule, const std::string& path) const {
    if (const json* level = reader_.member(result, "level", json::value_t::string, path)) {
      if (auto parsed = level_from_string(level->get<std::string>())) return *parsed;
      reader_.malformed(path + ".level", fmt::format("must be \"none\", \"note\", \"warning\" "
                                                     "or \"error\", not {}",
                                                     describe_json(*level)));
    }
    // A result that is not a failure (pass, review, informational...) has level none.
    if (const json* kind = reader_.member(result, "kind", json::value_t::string, path)) {
      if (*kind != "fail") return Level::kNone;
    }
    if (rule != nullptr && rule->is_object()) {
      auto configuration = rule->find("defaultConfiguration");
      if (configuration != rule->end() && configuration->is_object()) {
        auto level = configuration->find("level");
        if (level != configuration->end() && level->is_string()) {
          if (auto parsed = level_from_string(level->get<std::string>())) return *parsed;
        }
      }
    }
    return Level::kWarning;
  }

  std::string message_of(const json& result, const json* rule, const std::string& path) const {
    const json* message = reader_.member(result, "message", json::value_t::object, path);
    if (message == nullptr) return "";
    const json* arguments =
        reader_.member(*message, "arguments", json::value_t::array, path + ".message");
    if (const json* text =
            reader_.member(*message, "text", json::value_t::string, path + ".message")) {
      return format_message(text->get<std::string>(), arguments);
    }
    const json* id = reader_.member(*message, "id", json::value_t::string, path + ".message");
    if (id == nullptr || rule == nullptr || !rule->is_object()) return "";
    auto strings = rule->find("messageStrings");
    if (strings == rule->end() || !strings->is_object()) return "";
    auto entry = strings->find(id->get<std::string>());
    if (entry == strings->end() || !entry->is_object() || !entry->contains("text") ||
        !(*entry)["text"].is_string()) {
      return "";
    }
    return format_message((*entry)["text"].get<std::string>(), arguments);
  }

  void location_of(const json& result, const std::string& path, Finding& finding) const {
    const json* locations = reader_.member(result, "locations", json::value_t::array, path);
    if (locations == nullptr || locations->empty()) return;
    const std::string at = path + ".locations[0]";
    const json& location = reader_.object((*locations)[0], at);
    const json* physical = reader_.member(location, "physicalLocation", json::value_t::object, at);
    if (physical == nullptr) return;
    if (const json* artifact = reader_.member(*physical, "artifactLocation", json::value_t::object,
                                              at + ".physicalLocation")) {
      finding.file = uri_of(*artifact, at + ".physicalLocation.artifactLocation");
    }
    if (const json* region =
            reader_.member(*physical, "region", json::value_t::object, at + ".physicalLocation")) {
      if (const json* line = reader_.member(*region, "startLine", json::value_t::number_integer,
                                            at + ".physicalLocation.region")) {
        if (line->get<std::int64_t>() > 0) finding.line = line->get<std::int64_t>();
      }
    }
  }

  std::string uri_of(const json& artifact_location, const std::string& path) const {
    const json* uri = reader_.member(artifact_location, "uri", json::value_t::string, path);
    std::string text;
    if (uri != nullptr) {
      text = uri->get<std::string>();
    } else if (const json* index = reader_.member(artifact_location, "index",
                                                  json::value_t::number_integer, path)) {
      // The uri is given once, in run.artifacts.
      auto artifacts = run_.find("artifacts");
      const auto i = index->get<std::int64_t>();
      if (artifacts != run_.end() && artifacts->is_array() && i >= 0 &&
          static_cast<std::size_t>(i) < artifacts->size()) {
        const json& entry = (*artifacts)[static_cast<std::size_t>(i)];
        if (entry.is_object() && entry.contains("location") && entry["location"].is_object() &&
            entry["location"].contains("uri") && entry["location"]["uri"].is_string()) {
          text = entry["location"]["uri"].get<std::string>();
        }
      }
    }
    // A relative uri with a base whose value the log gives ("file:///workspace/") is resolved
    // against it; otherwise it stays relative, as scanners write it (relative to where they ran).
    if (const json* base =
            reader_.member(artifact_location, "uriBaseId", json::value_t::string, path)) {
      auto bases = run_.find("originalUriBaseIds");
      if (bases != run_.end() && bases->is_object() && bases->contains(base->get<std::string>())) {
        const json& entry = (*bases)[base->get<std::string>()];
        if (entry.is_object() && entry.contains("uri") && entry["uri"].is_string()) {
          text = entry["uri"].get<std::string>() + text;
        }
      }
    }
    return workspace_relative(percent_decode(text), workspace_);
  }

  Finding read(const json& result, const std::string& path) const {
    Finding finding;
    if (const json* id = reader_.member(result, "ruleId", json::value_t::string, path)) {
      finding.rule_id = id->get<std::string>();
    }
    const json* rule = rule_of(result, finding.rule_id, path);
    if (finding.rule_id.empty()) {
      auto it = result.find("rule");
      if (it != result.end() && it->is_object() && it->contains("id") && (*it)["id"].is_string()) {
        finding.rule_id = (*it)["id"].get<std::string>();
      } else if (rule != nullptr && rule->is_object() && rule->contains("id") &&
                 (*rule)["id"].is_string()) {
        finding.rule_id = (*rule)["id"].get<std::string>();
      }
    }
    finding.rule_id = valid_utf8(finding.rule_id);
    finding.level = level_of(result, rule, path);
    finding.message = cap_message(message_of(result, rule, path));
    location_of(result, path, finding);
    return finding;
  }

  const Reader& reader_;
  const json& run_;
  const std::string& path_;
  const std::string& workspace_;
  const json* driver_ = nullptr;
  const json* extensions_ = nullptr;
  const json* driver_rules_ = nullptr;
  std::unordered_map<std::string, const json*> rules_by_id_;
  std::string tool_name_;
};

}  // namespace

std::optional<Level> level_from_string(std::string_view text) {
  for (int i = 0; i < 4; ++i) {
    if (kLevelNames[i] == text) return static_cast<Level>(i);
  }
  return std::nullopt;
}

std::string_view to_string(Level level) { return kLevelNames[static_cast<int>(level)]; }

std::uint64_t ScanFindings::at_or_above(Level threshold) const {
  std::uint64_t n = 0;
  for (int i = static_cast<int>(threshold); i < 4; ++i) n += counts[i];
  return n;
}

ScanFindings parse_sarif(std::string_view text, const std::string& name,
                         const std::string& workspace) {
  json document;
  try {
    // A scan of a large tree writes tens of megabytes; the caller bounds what it reads.
    document = parse_json_text(text, {.max_bytes = text.size(), .max_depth = 128});
  } catch (const JsonTextError& e) {
    throw Error(ErrorKind::kTaskFailed, "report_malformed",
                fmt::format("SARIF file {} is not valid JSON: {}", name, e.what()));
  }
  const Reader reader(name);
  reader.object(document, "$");
  auto version = document.find("version");
  if (version == document.end() || *version != "2.1.0") {
    reader.malformed("$.version",
                     fmt::format("must be \"2.1.0\" (the SARIF version read here), not {}",
                                 version == document.end() ? "missing" : describe_json(*version)));
  }
  const json* runs = reader.member(document, "runs", json::value_t::array, "$");
  if (runs == nullptr) reader.malformed("$.runs", "is required (an array of runs)");

  ScanFindings out;
  for (std::size_t i = 0; i < runs->size(); ++i) {
    const std::string path = fmt::format("$.runs[{}]", i);
    RunParser run(reader, reader.object((*runs)[i], path), path, workspace);
    if (out.tool.find(run.tool_name()) == std::string::npos) {
      out.tool += (out.tool.empty() ? "" : ", ") + valid_utf8(run.tool_name());
    }
    run.parse(out);
  }
  // The list in the result is capped: the most severe findings are the ones kept.
  std::stable_sort(out.findings.begin(), out.findings.end(),
                   [](const Finding& a, const Finding& b) { return a.level > b.level; });
  return out;
}

nlohmann::json to_details(const ScanFindings& scan, Level fail_on, const std::string& sarif_path) {
  json findings = json::array();
  for (std::size_t i = 0; i < scan.findings.size() && i < kMaxListed; ++i) {
    const Finding& f = scan.findings[i];
    findings.push_back({{"ruleId", f.rule_id},
                        {"level", to_string(f.level)},
                        {"message", f.message},
                        {"file", f.file},
                        {"line", f.line ? json(*f.line) : json(nullptr)}});
  }
  return {{"tool", scan.tool},
          {"failOn", to_string(fail_on)},
          {"total", scan.findings.size()},
          {"counts",
           {{"error", scan.count(Level::kError)},
            {"warning", scan.count(Level::kWarning)},
            {"note", scan.count(Level::kNote)},
            {"none", scan.count(Level::kNone)}}},
          {"sarif", valid_utf8(sarif_path)},
          {"findings", std::move(findings)},
          {"findingsOmitted",
           scan.findings.size() > kMaxListed ? scan.findings.size() - kMaxListed : 0},
          {"suppressed", scan.suppressed}};
}

}  // namespace tamma::reports
