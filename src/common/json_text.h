#pragma once
// How JSON values are named in error messages, the same way everywhere.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tamma {

// The text as a JSON string literal: quoted, escaped, invalid UTF-8 replaced.
std::string json_quote(std::string_view text);

// "null", "true", "the string \"x\"", "the number 5", "an object", "an array".
std::string describe_json(const nlohmann::json& value);

}  // namespace tamma
