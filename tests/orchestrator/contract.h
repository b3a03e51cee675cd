#pragma once
// The contract test: every answer a TestServer sends is recorded (ServerConfig::observe_answer)
// and checked, when the server is destroyed, against docs/openapi.yaml and the error table of
// docs/protocol.md. So each API test is also a test of the documentation.
//
// What one answer must satisfy (answer_problems):
// - an operation exists for its method and route (HEAD answers are GET's, without a body); an
//   answer decided before routing ("unmatched") is one of the spec's x-unrouted-responses, and a
//   405's Allow header lists exactly the methods the spec documents for that path;
// - its status is documented for that operation;
// - its Content-Type is the documented media type (none for a documented answer without
//   content), and a JSON body conforms to the documented schema, with no undocumented member;
// - every documented response header that is required (or required for the answer's
//   error.code, x-required-for-codes) is present, and every documented header sent has a value
//   its schema allows;
// - an error body's code is in protocol.md's table for that status.

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "orchestrator/http_types.h"

namespace tamma::orchestrator::testing::contract {

using nlohmann::json;

// docs/openapi.yaml (JSON-compatible YAML, so a JSON parser reads it).
const json& openapi();
const json& schemas();
// The object a "#/components/..." reference names; throws when it names nothing.
const json& resolve(const std::string& ref);

// Every way `value` breaks `schema`, each naming the JSON path where ("$.tasks[0].state: ...").
// Supports $ref, type (also a list of types), nullable, enum, const, required, properties,
// additionalProperties, propertyNames, items, minItems/maxItems, pattern, minLength/maxLength,
// minimum/maximum (and exclusive), format date-time, oneOf, anyOf, allOf.
// `strict_members`: a member the schema does not list is a problem unless additionalProperties
// allows it explicitly (the server sends only documented members; a receiver ignores unknown
// ones, so the schemas themselves do not forbid them).
std::vector<std::string> schema_problems(const json& value, const json& schema,
                                         const std::string& where = "$",
                                         bool strict_members = true);
std::vector<std::string> schema_problems(const json& value, const std::string& schema_name,
                                         bool strict_members = true);

// protocol.md's error table: for each status, the error codes it lists.
const std::map<unsigned, std::set<std::string>>& documented_error_codes();

// Every way one answer departs from the documentation; empty when it conforms.
std::vector<std::string> answer_problems(const AnsweredRequest& answer);
// "POST /api/v1/tasks/x/complete (route ...) -> 409" and the start of the body.
std::string describe(const AnsweredRequest& answer);

// Collects answers from the server's I/O threads.
class AnswerRecorder {
 public:
  void record(const AnsweredRequest& answer);
  [[nodiscard]] std::vector<AnsweredRequest> answers() const;
  // One ADD_FAILURE per answer that does not conform, naming it and each mismatch; returns
  // how many did not.
  int report_nonconforming() const;

 private:
  mutable std::mutex mutex_;
  std::vector<AnsweredRequest> answers_;
};

}  // namespace tamma::orchestrator::testing::contract
