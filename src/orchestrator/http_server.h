#pragma once
// The HTTP/1.1 front: Boost.Beast, asynchronous on a few I/O threads, so an idle long-poll costs
// a socket and a small session object, not a thread. It reads a request's header first and
// decides from it alone: the framing (no smuggling), the route, the body limit (413) and the
// token (401) are settled before a byte of the body is read or staged. Then it reads the body
// (uploads straight to a file), hands the request to the core thread and writes whatever answer
// comes back.
//
// Connections are capped below the descriptor limit. A connection is "unproven" until one of
// its requests passed a token check; when the cap is reached, the oldest unproven connection is
// closed to make room, so idle or slow clients without a token cannot lock workers out, and an
// unproven connection gets a short deadline for each request head.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
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
  std::chrono::milliseconds idle_timeout{75000};    // between requests of a proven connection
  std::chrono::milliseconds header_timeout{10000};  // a whole request head of an unproven one
  std::int64_t max_connections = 0;         // 0: the descriptor limit less a reserve (see start())
  AnswerObserver observe_answer;            // optional; runs on an I/O thread for every answer
  std::shared_ptr<asio::ssl::context> tls;  // set: every connection speaks TLS
  // Throws HttpError(401/403) unless the Authorization header may call a route of this access;
  // returns the worker the token belongs to, if it is a worker's. Runs on the core thread, or
  // on an I/O thread for an edge route (kPublic/kAdmin only, which must need no core state).
  std::function<std::string(Access, const std::string& authorization)> authenticate;
  // On an I/O thread: the worker a worker's token belongs to when the core recently looked it
  // up (no store read); nullopt sends the check to the core thread.
  std::function<std::optional<std::string>(Access, const std::string& authorization)>
      recently_authenticated;
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
  std::atomic<std::int64_t> evicted{0};  // unproven connections closed to make room

  // Unproven connections, oldest first: each entry closes its connection.
  std::mutex unproven_mutex;
  std::uint64_t next_connection = 0;
  std::map<std::uint64_t, std::function<void()>> unproven;
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
  [[nodiscard]] std::int64_t evicted() const { return shared_->evicted.load(); }

 private:
  void accept();
  // Closes the oldest unproven connection; false when every connection is proven.
  bool evict_oldest_unproven();

  asio::io_context& io_;
  std::shared_ptr<HttpShared> shared_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer backoff_;  // after EMFILE: wait instead of spinning on accept
  std::uint16_t port_ = 0;
  std::int64_t max_connections_ = 0;
};

}  // namespace tamma::orchestrator
