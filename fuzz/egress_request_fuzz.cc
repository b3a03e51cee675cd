// What a task sends its egress proxy first (src/egress/proxy.cc): a SOCKS5 greeting and
// request (socks5.h), or an HTTP request head parsed by Beast with the proxy's limit whose
// target is a CONNECT authority or an absolute http:// URL (destination.h, http_target.h).
// The first byte picks, as in the proxy. Refusing is the parsers' job; a crash or a sanitizer
// report is a finding, and so is a parse that claims more bytes than it was given.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "egress/destination.h"
#include "egress/http_target.h"
#include "egress/socks5.h"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "egress_request_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace socks5 = tamma::egress::socks5;
  namespace http = boost::beast::http;
  if (size == 0) return 0;
  const std::span<const unsigned char> bytes(data, size);
  if (data[0] == socks5::kVersion) {
    const auto greeting = socks5::parse_greeting(bytes);
    if (greeting.consumed > size) broken("greeting consumed more than given");
    if (greeting.state == socks5::Parse::kDone) {
      const auto request = socks5::parse_request(bytes.subspan(greeting.consumed));
      if (request.consumed > size - greeting.consumed) broken("request consumed more than given");
      if (request.state == socks5::Parse::kDone) {
        (void)tamma::egress::normalise_host(request.host);
      }
    }
    return 0;
  }
  http::request_parser<http::empty_body> parser;
  parser.header_limit(16 * 1024);
  boost::system::error_code ec;
  // The whole head at once: the proxy reads at most its limit before it gives up.
  const std::size_t used = parser.put(boost::asio::buffer(data, size), ec);
  if (used > size) broken("the parser took more bytes than it was given");
  if (ec) return 0;
  if (!parser.is_header_done()) return 0;
  const auto target = parser.get().target();
  const std::string_view text(target.data(), target.size());
  if (parser.get().method() == http::verb::connect) {
    (void)tamma::egress::split_authority(text);
  } else if (auto url = tamma::egress::parse_absolute_http(text)) {
    if (url->path.empty() || url->path.front() != '/') broken("origin form without a slash");
    (void)tamma::egress::normalise_host(url->host);
  }
  return 0;
}
