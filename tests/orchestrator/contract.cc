#include "contract.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <optional>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace tamma::orchestrator::testing::contract {
namespace {

const std::filesystem::path kDocs = std::filesystem::path(TAMMA_SOURCE_DIR) / "docs";

std::string lower(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return std::string(text);
}

// The object itself, or what its $ref (and that one's $ref...) names.
const json& deref(const json& node) {
  const json* at = &node;
  for (int hops = 0; at->is_object() && at->contains("$ref") && hops < 32; ++hops) {
    at = &resolve((*at)["$ref"].get<std::string>());
  }
  return *at;
}

// Patterns are compiled once; answers are checked from one thread, but be safe anyway.
const std::regex& compiled(const std::string& pattern) {
  static std::mutex mutex;
  static std::map<std::string, std::regex> cache;
  std::lock_guard lock(mutex);
  auto it = cache.find(pattern);
  if (it == cache.end()) {
    it = cache.emplace(pattern, std::regex(pattern, std::regex::ECMAScript)).first;
  }
  return it->second;
}

std::size_t code_points(const std::string& text) {
  std::size_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

bool has_type(const json& value, const std::string& type) {
  if (type == "null") return value.is_null();
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  if (type == "string") return value.is_string();
  if (type == "boolean") return value.is_boolean();
  if (type == "number") return value.is_number();
  if (type == "integer") {
    if (value.is_number_integer()) return true;
    // JSON Schema: 3.0 is an integer too.
    return value.is_number_float() && std::isfinite(value.get<double>()) &&
           std::floor(value.get<double>()) == value.get<double>();
  }
  return true;  // an unknown type name constrains nothing here
}

void check(const json& value, const json& schema_in, const std::string& where, bool strict,
           std::vector<std::string>& out) {
  if (!schema_in.is_object()) return;  // `true` / `{}`-like schemas
  const json& schema = schema_in;
  if (schema.contains("$ref")) {
    const std::string ref = schema["$ref"].get<std::string>();
    try {
      check(value, resolve(ref), where, strict, out);
    } catch (const std::exception&) {
      out.push_back(where + ": dangling $ref " + ref);
    }
    return;
  }
  const std::string shown = value.dump().substr(0, 120);

  if (schema.value("nullable", false) && value.is_null()) return;
  if (schema.contains("type")) {
    std::vector<std::string> types;
    if (schema["type"].is_array()) {
      for (const auto& t : schema["type"]) types.push_back(t.get<std::string>());
    } else {
      types.push_back(schema["type"].get<std::string>());
    }
    bool ok = std::any_of(types.begin(), types.end(),
                          [&](const std::string& t) { return has_type(value, t); });
    if (!ok) {
      std::string wanted;
      for (const auto& t : types) wanted += (wanted.empty() ? "" : " or ") + t;
      out.push_back(where + ": " + shown + " is not of type " + wanted);
      return;  // the rest of the checks would only repeat this
    }
  }
  if (schema.contains("enum")) {
    const auto& values = schema["enum"];
    if (std::find(values.begin(), values.end(), value) == values.end()) {
      out.push_back(where + ": " + shown + " is not one of " + values.dump());
    }
  }
  if (schema.contains("const") && schema["const"] != value) {
    out.push_back(where + ": " + shown + " is not " + schema["const"].dump());
  }
  for (const char* combinator : {"oneOf", "anyOf"}) {
    if (!schema.contains(combinator)) continue;
    int matching = 0;
    std::vector<std::string> why;
    for (const auto& option : schema[combinator]) {
      std::vector<std::string> problems;
      check(value, option, where, strict, problems);
      if (problems.empty()) {
        ++matching;
      } else {
        why.push_back(problems.front());
      }
    }
    bool ok = std::string(combinator) == "oneOf" ? matching == 1 : matching >= 1;
    if (!ok) {
      std::string reasons;
      for (const auto& w : why) reasons += "; " + w;
      out.push_back(where + ": " + shown + " matches " + std::to_string(matching) +
                    " of the " + combinator + " schemas" + reasons);
    }
  }
  if (schema.contains("allOf")) {
    for (const auto& part : schema["allOf"]) check(value, part, where, strict, out);
  }

  if (value.is_object()) {
    for (const auto& r : schema.value("required", json::array())) {
      if (!value.contains(r.get<std::string>())) {
        out.push_back(where + ": required member " + r.get<std::string>() + " is missing");
      }
    }
    const json no_properties = json::object();
    const json& properties = schema.contains("properties") ? schema["properties"] : no_properties;
    for (const auto& [key, member] : value.items()) {
      const std::string path = where + "." + key;
      if (schema.contains("propertyNames")) {
        check(json(key), schema["propertyNames"], where + " member name '" + key + "'", strict,
              out);
      }
      if (properties.contains(key)) {
        check(member, properties[key], path, strict, out);
        continue;
      }
      const json& extra = schema.contains("additionalProperties")
                              ? schema["additionalProperties"]
                              : json(nullptr);
      if (extra.is_boolean()) {
        if (!extra.get<bool>()) out.push_back(path + ": member not allowed by the schema");
      } else if (extra.is_object()) {
        check(member, extra, path, strict, out);
      } else if (strict && (schema.contains("properties") || schema.contains("required"))) {
        out.push_back(path + ": member is not documented in the schema");
      }
    }
  }
  if (value.is_array()) {
    if (schema.contains("minItems") && value.size() < schema["minItems"].get<std::size_t>()) {
      out.push_back(where + ": fewer than " + schema["minItems"].dump() + " items");
    }
    if (schema.contains("maxItems") && value.size() > schema["maxItems"].get<std::size_t>()) {
      out.push_back(where + ": more than " + schema["maxItems"].dump() + " items");
    }
    if (schema.contains("items")) {
      for (std::size_t i = 0; i < value.size(); ++i) {
        check(value[i], schema["items"], where + "[" + std::to_string(i) + "]", strict, out);
      }
    }
  }
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    if (schema.contains("minLength") && code_points(text) < schema["minLength"].get<std::size_t>()) {
      out.push_back(where + ": " + shown + " is shorter than " + schema["minLength"].dump());
    }
    if (schema.contains("maxLength") && code_points(text) > schema["maxLength"].get<std::size_t>()) {
      out.push_back(where + ": " + shown + " is longer than " + schema["maxLength"].dump());
    }
    if (schema.contains("pattern")) {
      const auto pattern = schema["pattern"].get<std::string>();
      if (!std::regex_search(text, compiled(pattern))) {
        out.push_back(where + ": " + shown + " does not match " + pattern);
      }
    }
    if (schema.value("format", "") == "date-time") {
      static const std::regex rfc3339(
          R"(^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$)");
      if (!std::regex_match(text, rfc3339)) {
        out.push_back(where + ": " + shown + " is not an RFC 3339 date-time");
      }
    }
  }
  if (value.is_number()) {
    const double number = value.get<double>();
    if (schema.contains("minimum") && number < schema["minimum"].get<double>()) {
      out.push_back(where + ": " + shown + " is below the minimum " + schema["minimum"].dump());
    }
    if (schema.contains("maximum") && number > schema["maximum"].get<double>()) {
      out.push_back(where + ": " + shown + " is above the maximum " + schema["maximum"].dump());
    }
    if (schema.contains("exclusiveMinimum") && schema["exclusiveMinimum"].is_number() &&
        number <= schema["exclusiveMinimum"].get<double>()) {
      out.push_back(where + ": " + shown + " is not above " + schema["exclusiveMinimum"].dump());
    }
    if (schema.contains("exclusiveMaximum") && schema["exclusiveMaximum"].is_number() &&
        number >= schema["exclusiveMaximum"].get<double>()) {
      out.push_back(where + ": " + shown + " is not below " + schema["exclusiveMaximum"].dump());
    }
  }
}

std::vector<std::string> split(const std::string& text, char by) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    auto at = text.find(by, start);
    out.push_back(text.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

// "/api/v1/tasks/{id}" against "/api/v1/tasks/tsk_1": a placeholder takes one non-empty segment.
bool path_matches(const std::string& pattern, const std::string& path) {
  auto want = split(pattern, '/');
  auto got = split(path, '/');
  if (want.size() != got.size()) return false;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!want[i].empty() && want[i].front() == '{') {
      if (got[i].empty()) return false;
    } else if (want[i] != got[i]) {
      return false;
    }
  }
  return true;
}

const std::set<std::string>& http_methods() {
  static const std::set<std::string> methods = {"get",  "put",     "post", "delete",
                                                "head", "options", "patch", "trace"};
  return methods;
}

std::optional<std::string> header_of(const AnsweredRequest& answer, const std::string& name) {
  const std::string wanted = lower(name);
  for (const auto& [n, v] : answer.headers) {
    if (lower(n) == wanted) return v;
  }
  return std::nullopt;
}

std::string media_type(const std::string& content_type) {
  return lower(trim(content_type.substr(0, content_type.find(';'))));
}

// A header's text as the JSON value its schema describes (integers as numbers).
json header_value(const std::string& text, const json& schema) {
  const json& s = deref(schema);
  const std::string type = s.is_object() && s.contains("type") && s["type"].is_string()
                               ? s["type"].get<std::string>()
                               : "";
  static const std::regex integer(R"(^-?\d{1,18}$)");
  if ((type == "integer" || type == "number") && std::regex_match(text, integer)) {
    return json(std::stoll(text));
  }
  return json(text);
}

// The response object documented for `status` among `responses`, or null.
const json* response_for(const json& responses, unsigned status) {
  const std::string exact = std::to_string(status);
  const std::string range = std::to_string(status / 100) + "XX";
  for (const auto& key : {exact, range, std::string("default")}) {
    if (responses.contains(key)) return &deref(responses[key]);
  }
  return nullptr;
}

void check_response(const AnsweredRequest& answer, const json& response, const std::string& where,
                    std::vector<std::string>& out) {
  const bool head = answer.method == "HEAD";
  if (head && !answer.body.empty()) out.push_back("a HEAD answer has a body");

  // The body, when there is one to read.
  std::optional<json> document;
  auto content_type = header_of(answer, "Content-Type");
  if (!response.contains("content") || response["content"].empty()) {
    if (content_type) {
      out.push_back(where + " documents no content, but Content-Type is " + *content_type);
    }
    if (!answer.body.empty() || answer.file_body) {
      out.push_back(where + " documents no content, but the answer has a body");
    }
  } else if (!content_type) {
    out.push_back(where + ": the answer has no Content-Type; documented: " +
                  response["content"].dump().substr(0, 200));
  } else {
    const json* media = nullptr;
    std::string documented;
    for (const auto& [type, m] : response["content"].items()) {
      documented += (documented.empty() ? "" : ", ") + type;
      if (media_type(type) == media_type(*content_type)) media = &m;
    }
    if (media == nullptr) {
      out.push_back(where + ": Content-Type " + *content_type + " is not the documented " +
                    documented);
    } else if (!head && !answer.file_body && media_type(*content_type) == "application/json") {
      try {
        document = json::parse(answer.body);
      } catch (const std::exception& e) {
        out.push_back(where + ": the body is not JSON: " + e.what());
      }
      if (document && media->contains("schema")) {
        for (auto& p : schema_problems(*document, (*media)["schema"], "$", true)) {
          out.push_back(where + " body " + p);
        }
      }
    }
  }

  // The error code, in protocol.md's table for this status.
  std::string code;
  if (answer.status >= 400 && document && document->is_object() && document->contains("error") &&
      (*document)["error"].is_object() && (*document)["error"].contains("code") &&
      (*document)["error"]["code"].is_string()) {
    code = (*document)["error"]["code"].get<std::string>();
    const auto& table = documented_error_codes();
    auto row = table.find(answer.status);
    if (row == table.end() || row->second.count(code) == 0) {
      out.push_back("error code " + code + " is not in protocol.md's error table for status " +
                    std::to_string(answer.status));
    }
  }

  // The documented headers.
  if (response.contains("headers")) {
    for (const auto& [name, header_in] : response["headers"].items()) {
      const json& header = deref(header_in);
      auto value = header_of(answer, name);
      bool required = header.value("required", false);
      if (!code.empty() && header.contains("x-required-for-codes")) {
        const auto& codes = header["x-required-for-codes"];
        required = required || std::find(codes.begin(), codes.end(), json(code)) != codes.end();
      }
      if (!value) {
        if (required) {
          out.push_back(where + ": required header " + name + " is missing" +
                        (code.empty() ? std::string() : " (error code " + code + ")"));
        }
        continue;
      }
      if (header.contains("schema")) {
        for (auto& p : schema_problems(header_value(*value, header["schema"]), header["schema"],
                                       "header " + name, true)) {
          out.push_back(where + ": " + p);
        }
      }
    }
  }
}

std::string upper(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// The methods the spec documents for every path template `path` matches (HEAD wherever GET).
std::set<std::string> documented_methods(const std::string& path, bool* any_path) {
  std::set<std::string> methods;
  *any_path = false;
  for (const auto& [pattern, item] : openapi()["paths"].items()) {
    if (!path_matches(pattern, path)) continue;
    *any_path = true;
    for (const auto& [method, _] : item.items()) {
      if (!http_methods().count(method)) continue;
      methods.insert(upper(method));
      if (method == "get") methods.insert("HEAD");
    }
  }
  return methods;
}

void check_unrouted(const AnsweredRequest& answer, std::vector<std::string>& out) {
  static const json kNone = json::object();
  const json& set =
      openapi().contains("x-unrouted-responses") ? openapi()["x-unrouted-responses"] : kNone;
  const json* response = response_for(set, answer.status);
  const std::string where = "unrouted " + std::to_string(answer.status);
  if (response == nullptr) {
    out.push_back("status " + std::to_string(answer.status) +
                  " (decided before routing) is not in x-unrouted-responses");
    return;
  }
  check_response(answer, *response, where, out);
  bool known_path = false;
  auto methods = documented_methods(answer.path, &known_path);
  if (answer.status == 405) {
    if (!known_path) {
      out.push_back("405 for " + answer.path + ", a path openapi.yaml does not document");
    }
    if (auto allow = header_of(answer, "Allow")) {
      std::set<std::string> allowed;
      for (auto& m : split(*allow, ',')) allowed.insert(upper(trim(m)));
      if (allowed != methods) {
        std::string documented;
        for (const auto& m : methods) documented += (documented.empty() ? "" : ", ") + m;
        out.push_back("Allow: " + *allow + " differs from the documented methods " + documented);
      }
    }
    if (methods.count(answer.method)) {
      out.push_back("405 for " + answer.method + ", which openapi.yaml documents on this path");
    }
  }
  if (answer.status == 404 && methods.count(answer.method)) {
    out.push_back("404 not_found for " + answer.method + " " + answer.path +
                  ", which openapi.yaml documents");
  }
}

}  // namespace

const json& openapi() {
  static const json doc = json::parse(tamma::testing::read_file(kDocs / "openapi.yaml"));
  return doc;
}

const json& schemas() { return openapi().at("components").at("schemas"); }

const json& resolve(const std::string& ref) {
  if (ref.rfind("#/", 0) != 0) throw std::invalid_argument("not a local reference: " + ref);
  return openapi().at(json::json_pointer(ref.substr(1)));
}

std::vector<std::string> schema_problems(const json& value, const json& schema,
                                         const std::string& where, bool strict_members) {
  std::vector<std::string> out;
  check(value, schema, where, strict_members, out);
  return out;
}

std::vector<std::string> schema_problems(const json& value, const std::string& schema_name,
                                         bool strict_members) {
  if (!schemas().contains(schema_name)) return {"openapi.yaml has no schema " + schema_name};
  return schema_problems(value, schemas()[schema_name], schema_name, strict_members);
}

const std::map<unsigned, std::set<std::string>>& documented_error_codes() {
  static const auto table = [] {
    std::map<unsigned, std::set<std::string>> out;
    std::istringstream text(tamma::testing::read_file(kDocs / "protocol.md"));
    std::string line;
    bool in_errors = false;
    static const std::regex code(R"(`([a-z0-9_]+)`)");
    static const std::regex status(R"(\b([1-5]\d\d)\b)");
    while (std::getline(text, line)) {
      if (line.rfind("## ", 0) == 0) in_errors = line == "## Errors";
      // | `code` | 400, 501 | when | retry |
      if (!in_errors || line.rfind("| `", 0) != 0) continue;
      auto cells = split(line, '|');
      if (cells.size() < 4) continue;
      std::set<std::string> codes;
      for (auto it = std::sregex_iterator(cells[1].begin(), cells[1].end(), code);
           it != std::sregex_iterator(); ++it) {
        codes.insert((*it)[1]);
      }
      for (auto it = std::sregex_iterator(cells[2].begin(), cells[2].end(), status);
           it != std::sregex_iterator(); ++it) {
        out[static_cast<unsigned>(std::stoul((*it)[1]))].insert(codes.begin(), codes.end());
      }
    }
    return out;
  }();
  return table;
}

std::vector<std::string> answer_problems(const AnsweredRequest& answer) {
  std::vector<std::string> out;
  try {
    if (answer.route == "unmatched") {
      check_unrouted(answer, out);
      return out;
    }
    const json& paths = openapi().at("paths");
    if (!paths.contains(answer.route)) {
      out.push_back("openapi.yaml has no path " + answer.route);
      return out;
    }
    if (!path_matches(answer.route, answer.path)) {
      out.push_back("the path " + answer.path + " does not match its route " + answer.route);
    }
    const std::string method = answer.method == "HEAD" ? "get" : lower(answer.method);
    const json& item = paths[answer.route];
    if (!item.contains(method)) {
      out.push_back("openapi.yaml has no operation " + upper(method) + " " + answer.route);
      return out;
    }
    const json& operation = item[method];
    const std::string where = upper(method) + " " + answer.route + " " +
                              std::to_string(answer.status);
    static const json kNone = json::object();
    const json& responses = operation.contains("responses") ? operation["responses"] : kNone;
    const json* response = response_for(responses, answer.status);
    if (response == nullptr) {
      std::string documented;
      for (const auto& [status, _] : responses.items()) {
        documented += (documented.empty() ? "" : ", ") + status;
      }
      out.push_back("status " + std::to_string(answer.status) + " is not documented for " +
                    upper(method) + " " + answer.route + " (documented: " + documented + ")");
      return out;
    }
    check_response(answer, *response, where, out);
  } catch (const std::exception& e) {
    out.push_back(std::string("the check itself failed: ") + e.what());
  }
  return out;
}

std::string describe(const AnsweredRequest& answer) {
  std::string text = answer.method + " " + answer.path + " (route " + answer.route + ") -> " +
                     std::to_string(answer.status);
  if (answer.file_body) {
    text += ", a file body";
  } else if (!answer.body.empty()) {
    text += ", body " + answer.body.substr(0, 400) + (answer.body.size() > 400 ? "..." : "");
  }
  return text;
}

void AnswerRecorder::record(const AnsweredRequest& answer) {
  std::lock_guard lock(mutex_);
  answers_.push_back(answer);
}

std::vector<AnsweredRequest> AnswerRecorder::answers() const {
  std::lock_guard lock(mutex_);
  return answers_;
}

int AnswerRecorder::report_nonconforming() const {
  int failed = 0;
  for (const auto& answer : answers()) {
    auto problems = answer_problems(answer);
    if (problems.empty()) continue;
    ++failed;
    std::string list;
    for (const auto& p : problems) list += "\n  - " + p;
    ADD_FAILURE() << "answer not as docs/openapi.yaml documents it: " << describe(answer) << list;
  }
  return failed;
}

}  // namespace tamma::orchestrator::testing::contract
