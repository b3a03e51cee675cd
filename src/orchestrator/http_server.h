#pragma once
// The HTTP/1.1 front: Boost.Beast, asynchronous on a few I/O threads, so an idle long-poll costs
// a socket and a small session object, not a thread. It reads a request's header first, picks
// the route and its body limit (413 before reading a byte of an oversized body), reads the body
// (uploads straight to a file), then hands the request to the core thread and writes whatever
// answer comes back.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "orchestrator/metrics.h"
#include "orchestrator/router.h"

namespace tamma::orchestrator {

namespace asio = boost::asio;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::uint64_t max_small_body = 1ULL << 20;
  std::uint64_t max_upload_body = 64ULL << 20;
  std::filesystem::path upload_dir;  // uploads are staged here before the handler moves them
  std::chrono::milliseconds idle_timeout{75000};
};

// What every session shares with the server.
struct HttpShared {
  HttpShared(asio::io_context& core_io, const Router& r, Metrics& m, HttpServerOptions o)
      : core(core_io), router(r), metrics(m), options(std::move(o)) {}
  asio::io_context& core;
  const Router& router;
  Metrics& metrics;
  HttpServerOptions options;
  std::atomic<std::int64_t> in_flight{0};  // requests read and not yet answered
  std::atomic<std::int64_t> connections{0};
};

class HttpServer {
 public:
  HttpServer(asio::io_context& io, asio::io_context& core, const Router& router, Metrics& metrics,
             HttpServerOptions options);
  // Binds and starts accepting; throws Error(kConfig) when the address cannot be bound.
  void start();
  [[nodiscard]] std::uint16_t port() const { return port_; }
  void stop_accepting();
  [[nodiscard]] std::int64_t in_flight() const { return shared_->in_flight.load(); }
  [[nodiscard]] std::int64_t connections() const { return shared_->connections.load(); }

 private:
  void accept();

  asio::io_context& io_;
  std::shared_ptr<HttpShared> shared_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer backoff_;  // after EMFILE: wait instead of spinning on accept
  std::uint16_t port_ = 0;
};

}  // namespace tamma::orchestrator
