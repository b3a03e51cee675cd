#pragma once
// The one way JSON text from outside becomes a document: with a size limit, a nesting limit
// and no duplicate member names, all enforced while parsing, before anything recursive (a copy,
// a comparison, a dump) touches the document. nlohmann's parser itself is iterative, but
// copying a document 100,000 levels deep overflows the stack; and a document with a member
// twice ("status":"failed","status":"succeeded") would silently mean the last one.

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace tamma {

struct JsonLimits {
  std::size_t max_bytes = 16U << 20;
  int max_depth = 128;  // objects and arrays inside one another; the top level is depth 1
};

// Why a text was refused. `field` is the JSON path where it happened ("$", "$.result.deep[0]"),
// `offset` the byte where the parser stopped when it knows (0 otherwise); what() is
// "<field>: <reason>", or the reason alone for a syntax error, which names its line and column.
class JsonTextError : public Error {
 public:
  JsonTextError(std::string field, std::size_t offset, std::string reason)
      : Error(ErrorKind::kConfig, "invalid_json",
              offset > 0 ? reason : field + ": " + reason),
        field_(std::move(field)),
        reason_(std::move(reason)),
        offset_(offset) {}
  [[nodiscard]] const std::string& field() const { return field_; }
  [[nodiscard]] const std::string& reason() const { return reason_; }
  [[nodiscard]] std::size_t offset() const { return offset_; }

 private:
  std::string field_;
  std::string reason_;
  std::size_t offset_;
};

// Parses `text` as one JSON value. Throws JsonTextError naming the path and the reason: too
// large, nested too deep, a duplicate member, or malformed (with the byte offset).
nlohmann::json parse_json_text(std::string_view text, const JsonLimits& limits = {});

}  // namespace tamma
