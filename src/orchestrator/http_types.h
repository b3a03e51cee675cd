#pragma once
// What the HTTP layer hands a handler and what a handler answers with. Handlers run on the core
// thread; the HTTP layer runs on the I/O threads; an Exchange carries the answer across.

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/beast/http/verb.hpp>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "protocol/wire.h"

namespace tamma::orchestrator {

namespace http = boost::beast::http;
namespace wire = tamma::protocol::wire;

struct Request {
  http::verb method = http::verb::get;
  std::string path;                          // without the query
  std::map<std::string, std::string> query;  // percent-decoded
  std::vector<std::string> params;           // the path's {placeholders}, in order
  std::string route;                         // the matched pattern, for metrics
  std::string authorization;
  // Set by the HTTP layer once the token was found to be this worker's (before the body was
  // read), so the handler need not look it up again.
  std::string authenticated_worker;
  std::string idempotency_key;
  // The client's address as the socket shows it ("ip:port"; a proxy in front shows as itself),
  // for the audit trail.
  std::string remote_address;
  std::string content_type;
  std::string content_range;
  std::string body;
  std::filesystem::path body_file;  // set instead of `body` for streamed uploads
  // When its head was read: a long-poll's wait counts from here, not from when the core thread
  // got to it (after a stall the client may have given up long ago).
  std::chrono::steady_clock::time_point received_at = std::chrono::steady_clock::now();
};

struct Response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::optional<std::filesystem::path> file;  // sent instead of `body` when set
  // Sent instead of `body` when set: `stream_length` bytes made piece by piece off the core
  // thread (an artifact kept in PostgreSQL). Called on an I/O thread for each piece, the next
  // only once the previous one was written; `done` may run on any thread, with an empty piece
  // at the end. An error before the first piece becomes the error's answer (the head is not
  // sent until the first piece is there); one after it closes the connection, cutting the body.
  using PieceDone = std::function<void(std::string piece, std::exception_ptr error)>;
  std::function<void(PieceDone done)> stream;
  std::uint64_t stream_length = 0;
  std::vector<std::pair<std::string, std::string>> headers;

  static Response json(unsigned status, const nlohmann::json& body);
  static Response no_content();
  static Response error(unsigned status, const wire::ErrorBody& body);
};

// A refusal with its HTTP status and wire error body; thrown by handlers, answered by the
// dispatcher.
class HttpError : public Error {
 public:
  HttpError(unsigned status, std::string code, const std::string& message);
  HttpError(unsigned status, wire::ErrorBody body);
  [[nodiscard]] unsigned status() const { return status_; }
  [[nodiscard]] const wire::ErrorBody& body() const { return body_; }
  std::vector<std::pair<std::string, std::string>> headers;

 private:
  unsigned status_;
  wire::ErrorBody body_;
};

// One request in flight; answered exactly once, from any thread.
class Exchange {
 public:
  virtual ~Exchange() = default;
  // `written`, when given, runs on the core thread with whether the answer reached the socket.
  virtual void reply(Response response, std::function<void(bool written)> written = {}) = 0;
  // Runs `gone` on the core thread if the client hangs up before the answer (long-polls).
  virtual void watch_disconnect(std::function<void()> gone) = 0;
  // True when the client has certainly hung up already (its end of the connection is closed
  // or reset), from any thread. A request read long after it was sent (the process stood
  // still) may come from a client that gave up: it must not be handed a task. False when not
  // known (a TLS client's close_notify waiting unread looks like data).
  [[nodiscard]] virtual bool client_gone() const { return false; }
};
using ExchangePtr = std::shared_ptr<Exchange>;

using Handler = std::function<void(Request& request, const ExchangePtr& exchange)>;

// One answer as it leaves for the socket: what a contract test checks against docs/openapi.yaml.
// `body` is empty for a file answer (an artifact download) and for HEAD.
struct AnsweredRequest {
  std::string method;
  std::string route;  // the matched pattern, or "unmatched"
  std::string path;
  unsigned status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as sent, Content-Type included
  std::string body;
  bool file_body = false;
};
using AnswerObserver = std::function<void(const AnsweredRequest&)>;

// Percent-decodes a query component ('+' is a space); nullopt on a malformed escape.
std::optional<std::string> url_decode(std::string_view text);
// Splits "path?query" into the path and its decoded parameters; throws HttpError(400).
std::pair<std::string, std::map<std::string, std::string>> split_target(std::string_view target);

}  // namespace tamma::orchestrator
