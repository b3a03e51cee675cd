#pragma once
// Text encodings used on the wire and for masking secrets in their encoded forms.

#include <string>
#include <string_view>

namespace tamma {

std::string base64_encode(std::string_view data);
// RFC 3986: everything but unreserved characters becomes %XX.
std::string url_encode(std::string_view text);

}  // namespace tamma
