#include "worker/health_server.h"

#include <atomic>
#include <thread>

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "common/error.h"

namespace tamma::worker {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

tcp::endpoint parse_listen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw Error(ErrorKind::kConfig, "invalid_flag",
                "--health-listen: expected HOST:PORT, got '" + listen + "'");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  try {
    std::size_t used = 0;
    port = std::stoi(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    throw Error(ErrorKind::kConfig, "invalid_flag",
                "--health-listen: bad port in '" + listen + "'");
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) {
    throw Error(ErrorKind::kConfig, "invalid_flag",
                "--health-listen: '" + host + "' is not an IP address");
  }
  return {address, static_cast<std::uint16_t>(port)};
}

// One request per connection, then close: supervisors probe rarely and briefly.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const std::function<HealthAnswer()>& health)
      : stream_(std::move(socket)), health_(health) {}

  void start() {
    stream_.expires_after(std::chrono::seconds(5));
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (!ec) self->answer();
                     });
  }

 private:
  void answer() {
    response_.version(request_.version());
    response_.keep_alive(false);
    response_.set(http::field::content_type, "application/json");
    const auto target = std::string(request_.target());
    if (target != "/health" && target.rfind("/health?", 0) != 0) {
      response_.result(http::status::not_found);
      response_.body() = R"({"error":{"code":"not_found","message":"only GET /health"}})";
    } else if (request_.method() != http::verb::get && request_.method() != http::verb::head) {
      response_.result(http::status::method_not_allowed);
      response_.set(http::field::allow, "GET, HEAD");
      response_.body() = R"({"error":{"code":"method_not_allowed","message":"only GET /health"}})";
    } else {
      HealthAnswer a = health_();
      response_.result(static_cast<http::status>(a.status));
      response_.body() = request_.method() == http::verb::head ? std::string() : a.body;
    }
    response_.prepare_payload();
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code, std::size_t) {
                        beast::error_code ignored;
                        self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
                      });
  }

  beast::tcp_stream stream_;
  const std::function<HealthAnswer()>& health_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

}  // namespace

struct HealthServer::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::function<HealthAnswer()> health;
  std::thread thread;
  std::uint16_t port = 0;

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {
        spdlog::warn("health endpoint: accept failed: {}", ec.message());
      } else {
        std::make_shared<Session>(std::move(socket), health)->start();
      }
      accept();
    });
  }
};

HealthServer::HealthServer(const std::string& listen, std::function<HealthAnswer()> health)
    : impl_(std::make_unique<Impl>()) {
  impl_->health = std::move(health);
  const tcp::endpoint endpoint = parse_listen(listen);
  beast::error_code ec;
  auto fail = [&](const char* what) {
    throw Error(ErrorKind::kInfrastructure, "health_listen_failed",
                "--health-listen " + listen + ": " + what + ": " + ec.message());
  };
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (ec) fail("socket");
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  impl_->acceptor.bind(endpoint, ec);
  if (ec) fail("bind");
  impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("listen");
  impl_->port = impl_->acceptor.local_endpoint().port();
  impl_->accept();
  impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

HealthServer::~HealthServer() {
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::uint16_t HealthServer::port() const { return impl_->port; }

}  // namespace tamma::worker
