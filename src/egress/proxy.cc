#include "egress/proxy.h"

#include <atomic>
#include <list>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "egress/http_target.h"
#include "egress/relay.h"
#include "egress/socks5.h"

namespace tamma::egress {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

constexpr auto kAwait = asio::use_awaitable;

// What open_upstream decided.
struct Upstream {
  std::optional<tcp::socket> socket;
  bool refused = false;  // by policy (403, SOCKS5 "not allowed"); else a failure (502)
  std::string reason;
  std::string destination;  // "host:port", normalised, for the ledger
};

std::string http_answer(unsigned status, std::string_view reason, std::string_view text) {
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n"
      "Connection: close\r\n\r\n{}",
      status, reason, text.size(), text);
}

std::string printable(std::string_view text) {
  std::string out;
  for (unsigned char c : text.substr(0, 300)) {
    out += (c < 0x20 || c > 0x7e) ? '?' : static_cast<char>(c);
  }
  return out;
}

}  // namespace

struct Proxy::Impl {
  explicit Impl(ProxyOptions o) : options(std::move(o)) {}

  ProxyOptions options;
  // Before io: pending connections are destroyed with io, and none may outlive the ledger.
  Ledger ledger;
  asio::io_context io{1};
  std::thread thread;
  std::atomic<bool> stopped{false};
  std::atomic<std::size_t> open_connections{0};

  void refuse(const std::string& destination, const std::string& reason, const char* protocol) {
    spdlog::info("egress: refused {} ({}): {}", printable(destination), protocol, reason);
    ledger.refuse(
        Refusal{printable(destination), reason, protocol, std::chrono::system_clock::now()});
  }

  // The policy decision and the connection, for every protocol alike.
  asio::awaitable<Upstream> open_upstream(std::string_view host_text, std::uint16_t port,
                                          const char* protocol) {
    Upstream out;
    auto host = normalise_host(host_text);
    out.destination =
        fmt::format("{}:{}", printable(host ? host->text : std::string(host_text)), port);
    if (host && host->is_address && host->text.find(':') != std::string::npos) {
      out.destination = fmt::format("[{}]:{}", host->text, port);
    }
    auto refused = [&](std::string reason) {
      out.refused = true;
      out.reason = std::move(reason);
      refuse(out.destination, out.reason, protocol);
      return std::move(out);
    };
    if (!host) co_return refused("not a valid host name or address");
    bool allowed = false;
    for (const auto& d : options.allow) allowed = allowed || d.matches(host->text, port);
    if (!allowed) co_return refused("not in the task's allow-list");

    auto executor = co_await asio::this_coro::executor;
    std::vector<tcp::endpoint> endpoints;
    error_code ec;
    if (host->is_address) {
      endpoints.emplace_back(asio::ip::make_address(host->text, ec), port);
    } else {
      tcp::resolver resolver(executor);
      auto results = co_await resolver.async_resolve(host->text, std::to_string(port),
                                                     tcp::resolver::numeric_service,
                                                     asio::redirect_error(kAwait, ec));
      if (ec) {
        out.reason = fmt::format("cannot resolve {}: {}", host->text, ec.message());
        spdlog::info("egress: {}", out.reason);
        co_return std::move(out);
      }
      for (const auto& entry : results) endpoints.push_back(entry.endpoint());
    }
    // The addresses the name led to are checked, and only those are connected to: a second
    // lookup could answer differently (DNS rebinding).
    std::vector<tcp::endpoint> permitted;
    std::string why;
    for (const auto& endpoint : endpoints) {
      if (auto refusal = options.addresses.refusal(endpoint.address())) {
        if (why.empty()) why = fmt::format("{} ({})", *refusal, endpoint.address().to_string());
      } else {
        permitted.push_back(endpoint);
      }
    }
    if (permitted.empty()) {
      co_return refused(host->is_address ? "the address is " + why : "resolves to " + why);
    }
    for (const auto& endpoint : permitted) {
      tcp::socket socket(executor);
      auto connected = std::make_shared<bool>(false);
      auto timer = std::make_shared<asio::steady_timer>(executor, options.connect_timeout);
      socket.open(endpoint.protocol(), ec);
      if (ec) continue;
      timer->async_wait([connected, &socket, timer](const error_code& e) {
        if (!e && !*connected) {
          error_code ignored;
          socket.cancel(ignored);
        }
      });
      co_await socket.async_connect(endpoint, asio::redirect_error(kAwait, ec));
      *connected = true;
      timer->cancel();
      if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
        out.socket.emplace(std::move(socket));
        co_return std::move(out);
      }
      out.reason = fmt::format("cannot connect to {}: {}", endpoint.address().to_string(),
                               ec == asio::error::operation_aborted ? "timed out" : ec.message());
    }
    spdlog::info("egress: {}", out.reason);
    co_return std::move(out);
  }

  asio::awaitable<void> carry(tcp::socket client, Upstream upstream, std::string_view early_bytes) {
    auto counters = ledger.counters(upstream.destination);
    counters->connections.fetch_add(1);
    error_code ec;
    if (!early_bytes.empty()) {
      co_await asio::async_write(*upstream.socket, asio::buffer(early_bytes),
                                 asio::redirect_error(kAwait, ec));
      if (ec) co_return;
      counters->bytes_out.fetch_add(early_bytes.size());
    }
    auto ends =
        std::make_shared<RelayEnds>(RelayEnds{std::move(client), std::move(*upstream.socket)});
    co_await relay(ends, counters->bytes_out, counters->bytes_in);
  }

  asio::awaitable<void> socks(tcp::socket client, beast::flat_buffer buffer) {
    error_code ec;
    auto bytes = [&] {
      auto data = buffer.data();
      return std::span<const unsigned char>(static_cast<const unsigned char*>(data.data()),
                                            data.size());
    };
    auto more = [&]() -> asio::awaitable<bool> {
      if (buffer.size() >= 600) co_return false;  // a greeting and request are < 300 bytes each
      const std::size_t got = co_await client.async_read_some(buffer.prepare(600 - buffer.size()),
                                                              asio::redirect_error(kAwait, ec));
      if (ec || got == 0) co_return false;
      buffer.commit(got);
      co_return true;
    };
    socks5::Greeting greeting;
    for (;;) {
      greeting = socks5::parse_greeting(bytes());
      if (greeting.state != socks5::Parse::kNeedMore) break;
      if (!co_await more()) co_return;
    }
    if (greeting.state == socks5::Parse::kBad) co_return;
    buffer.consume(greeting.consumed);
    const std::string method{static_cast<char>(socks5::kVersion),
                             static_cast<char>(greeting.no_auth_offered ? 0x00 : 0xff)};
    co_await asio::async_write(client, asio::buffer(method), asio::redirect_error(kAwait, ec));
    if (ec || !greeting.no_auth_offered) co_return;
    socks5::Request request;
    for (;;) {
      request = socks5::parse_request(bytes());
      if (request.state != socks5::Parse::kNeedMore) break;
      if (!co_await more()) co_return;
    }
    if (request.state == socks5::Parse::kBad) {
      const std::string answer = socks5::reply(request.error);
      co_await asio::async_write(client, asio::buffer(answer), asio::redirect_error(kAwait, ec));
      co_return;
    }
    buffer.consume(request.consumed);
    if (request.command != 1) {
      const char* what = request.command == 3 ? "UDP ASSOCIATE" : "BIND";
      refuse(fmt::format("{}:{}", printable(request.host), request.port),
             fmt::format("SOCKS5 {} is not supported: TCP connections only", what), "socks5");
      const std::string answer = socks5::reply(socks5::Reply::kCommandNotSupported);
      co_await asio::async_write(client, asio::buffer(answer), asio::redirect_error(kAwait, ec));
      co_return;
    }
    Upstream upstream = co_await open_upstream(request.host, request.port, "socks5");
    if (!upstream.socket) {
      const auto code =
          upstream.refused ? socks5::Reply::kNotAllowed : socks5::Reply::kHostUnreachable;
      const std::string answer = socks5::reply(code);
      co_await asio::async_write(client, asio::buffer(answer), asio::redirect_error(kAwait, ec));
      co_return;
    }
    const std::string answer = socks5::reply(socks5::Reply::kSucceeded);
    co_await asio::async_write(client, asio::buffer(answer), asio::redirect_error(kAwait, ec));
    if (ec) co_return;
    const auto rest = buffer.data();
    const std::string early(static_cast<const char*>(rest.data()), rest.size());
    co_await carry(std::move(client), std::move(upstream), early);
  }

  asio::awaitable<void> http_request(tcp::socket client, beast::flat_buffer buffer) {
    error_code ec;
    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
    // A body, if any, is relayed as bytes, never read into the proxy.
    parser.eager(false);
    co_await http::async_read_header(client, buffer, parser, asio::redirect_error(kAwait, ec));
    auto answer = [&](unsigned status, std::string_view reason,
                      std::string text) -> asio::awaitable<void> {
      const std::string bytes = http_answer(status, reason, text + "\n");
      error_code ignored;
      co_await asio::async_write(client, asio::buffer(bytes),
                                 asio::redirect_error(kAwait, ignored));
    };
    if (ec) {
      if (ec == http::error::header_limit) {
        co_await answer(431, "Request Header Fields Too Large",
                        "tamma egress proxy: request head too large");
      } else if (ec != asio::error::eof && ec != asio::error::connection_reset) {
        co_await answer(400, "Bad Request", "tamma egress proxy: malformed request");
      }
      co_return;
    }
    auto& request = parser.get();
    const std::string target(request.target());
    if (request.method() == http::verb::connect) {
      auto authority = split_authority(target);
      if (!authority) {
        refuse(target, "malformed CONNECT target (host:port expected)", "connect");
        co_await answer(400, "Bad Request", "tamma egress proxy: CONNECT needs host:port");
        co_return;
      }
      Upstream upstream = co_await open_upstream(authority->host, authority->port, "connect");
      if (!upstream.socket) {
        if (upstream.refused) {
          co_await answer(403, "Forbidden",
                          fmt::format("tamma egress proxy: {} refused: {}", upstream.destination,
                                      upstream.reason));
        } else {
          co_await answer(502, "Bad Gateway", "tamma egress proxy: " + upstream.reason);
        }
        co_return;
      }
      const std::string established = "HTTP/1.1 200 Connection established\r\n\r\n";
      co_await asio::async_write(client, asio::buffer(established),
                                 asio::redirect_error(kAwait, ec));
      if (ec) co_return;
      const auto rest = buffer.data();
      const std::string early(static_cast<const char*>(rest.data()), rest.size());
      co_await carry(std::move(client), std::move(upstream), early);
      co_return;
    }
    // A plain http:// URL through HTTP_PROXY: the absolute form, "GET http://host:port/path".
    if (!target.starts_with("http://") && !target.starts_with("HTTP://")) {
      const bool https = target.starts_with("https://");
      refuse(printable(target), https ? "https:// URLs go through CONNECT" : "not a proxy request",
             "http");
      co_await answer(400, "Bad Request",
                      "tamma egress proxy: only CONNECT host:port and absolute http:// URLs");
      co_return;
    }
    auto url = parse_absolute_http(target);
    if (!url) {
      refuse(printable(target.substr(0, 200)), "malformed URL (user information or no host)",
             "http");
      co_await answer(400, "Bad Request", "tamma egress proxy: malformed URL");
      co_return;
    }
    Upstream upstream = co_await open_upstream(url->host, url->port, "http");
    if (!upstream.socket) {
      if (upstream.refused) {
        co_await answer(403, "Forbidden",
                        fmt::format("tamma egress proxy: {} refused: {}", upstream.destination,
                                    upstream.reason));
      } else {
        co_await answer(502, "Bad Gateway", "tamma egress proxy: " + upstream.reason);
      }
      co_return;
    }
    // The origin form to the server; the proxy's own headers stay here. One request per
    // connection: "Connection: close" both ways, so that a second request on the same client
    // connection cannot go to this server under another name.
    request.target(url->path);
    request.erase(http::field::proxy_authorization);
    request.erase("Proxy-Connection");
    request.erase(http::field::connection);
    request.erase(http::field::keep_alive);
    request.set(http::field::connection, "close");
    if (request.find(http::field::host) == request.end())
      request.set(http::field::host, url->authority);
    std::ostringstream head;
    head << request.base();
    const auto rest = buffer.data();
    const std::string early =
        head.str() + std::string(static_cast<const char*>(rest.data()), rest.size());
    co_await carry(std::move(client), std::move(upstream), early);
  }

  asio::awaitable<void> session(tcp::socket client) {
    error_code ec;
    beast::flat_buffer buffer(options.max_header_bytes + 4096);
    const std::size_t got =
        co_await client.async_read_some(buffer.prepare(4096), asio::redirect_error(kAwait, ec));
    if (ec || got == 0) co_return;
    buffer.commit(got);
    const auto first = static_cast<const unsigned char*>(buffer.data().data())[0];
    if (first == socks5::kVersion) {
      co_await socks(std::move(client), std::move(buffer));
    } else {
      co_await http_request(std::move(client), std::move(buffer));
    }
  }

  asio::awaitable<void> accept_loop(std::shared_ptr<tcp::acceptor> acceptor) {
    for (;;) {
      error_code ec;
      tcp::socket client = co_await acceptor->async_accept(asio::redirect_error(kAwait, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
        continue;  // EMFILE and friends: the next accept may succeed
      }
      if (open_connections.load() >= options.max_connections) {
        refuse("(any)", fmt::format("more than {} connections at once", options.max_connections),
               "tcp");
        continue;  // closed by the destructor
      }
      open_connections.fetch_add(1);
      asio::co_spawn(
          io,
          [this, client = std::move(client)]() mutable -> asio::awaitable<void> {
            co_await session(std::move(client));
          },
          [this](std::exception_ptr failure) {
            open_connections.fetch_sub(1);
            if (failure) {
              try {
                std::rethrow_exception(failure);
              } catch (const std::exception& e) {
                spdlog::warn("egress: a connection failed: {}", e.what());
              }
            }
          });
    }
  }
};

Proxy::Proxy(ProxyOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Proxy::~Proxy() { stop(); }

void Proxy::serve(UniqueFd listener) {
  auto acceptor = std::make_shared<tcp::acceptor>(impl_->io);
  error_code ec;
  acceptor->assign(tcp::v4(), listener.get(), ec);
  if (ec) throw std::system_error(ec, "egress proxy listener");
  listener.release();
  asio::co_spawn(impl_->io, impl_->accept_loop(acceptor), asio::detached);
}

void Proxy::start() {
  if (impl_->thread.joinable()) return;
  impl_->thread = std::thread([impl = impl_.get()] {
    for (;;) {
      try {
        impl->io.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("egress proxy: {}", e.what());
      }
    }
  });
}

void Proxy::stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

LedgerReport Proxy::report() const { return impl_->ledger.report(); }

}  // namespace tamma::egress
