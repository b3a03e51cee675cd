#pragma once
// How JSON values are named in error messages, the same way everywhere.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tamma {

// Text from a task (output, reports) is whatever bytes it wrote, and nlohmann refuses to
// serialize invalid UTF-8: each byte that is not part of a valid sequence becomes U+FFFD, as a
// terminal would show it.
std::string valid_utf8(std::string_view in);

// The text as a JSON string literal: quoted, escaped, invalid UTF-8 replaced.
std::string json_quote(std::string_view text);

// "null", "true", "the string \"x\"", "the number 5", "an object", "an array".
std::string describe_json(const nlohmann::json& value);

}  // namespace tamma
