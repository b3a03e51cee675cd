#include "orchestrator/http_server.h"

#include <sys/resource.h>
#include <sys/socket.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <limits>
#include <optional>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "orchestrator/auth.h"
#include "orchestrator/core.h"

namespace tamma::orchestrator {
namespace {

namespace beast = boost::beast;
using tcp = asio::ip::tcp;

constexpr std::uint32_t kHeaderLimit = 16 * 1024;
constexpr std::chrono::seconds kWriteTimeout{30};
constexpr std::chrono::minutes kUploadTimeout{5};

constexpr std::chrono::seconds kLingerTimeout{2};
constexpr std::size_t kLingerBytes = 1 << 20;

// Lower-case, without surrounding blanks.
std::string normalized(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<HttpShared> shared)
      : stream_(std::move(socket)), shared_(std::move(shared)) {
    ++shared_->connections;
    if (shared_->options.tls) {
      tls_ =
          std::make_unique<beast::ssl_stream<beast::tcp_stream&>>(stream_, *shared_->options.tls);
    }
  }
  ~Session() {
    --shared_->connections;
    prove();
    // A request whose client left before the answer (a parked poll) is over too.
    finish_request();
    remove_upload();
  }

  void start() {
    beast::error_code ignored;
    stream_.socket().set_option(tcp::no_delay(true), ignored);
    {
      std::weak_ptr<Session> weak = shared_from_this();
      std::lock_guard lock(shared_->unproven_mutex);
      connection_id_ = ++shared_->next_connection;
      shared_->unproven.emplace(connection_id_, [weak] {
        if (auto self = weak.lock()) asio::post(self->executor(), [self] { self->evict(); });
      });
    }
    if (!tls_) return read_header();
    // The handshake is part of the first request head's deadline.
    stream_.expires_after(shared_->options.header_timeout);
    tls_->async_handshake(asio::ssl::stream_base::server,
                          [self = shared_from_this()](beast::error_code ec) {
                            if (ec) return self->close();
                            self->read_header();
                          });
  }

  beast::tcp_stream::executor_type executor() { return stream_.get_executor(); }
  // The peer closed or reset the connection (a peek, from any thread: nothing is consumed,
  // and the end of a stream stays readable). Data waiting, or nothing yet: false.
  [[nodiscard]] bool peer_closed() {
    char byte = 0;
    const ssize_t n = ::recv(stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE));
  }
  void write(Response response, std::function<void(bool)> written);
  void watch(std::function<void()> gone);
  HttpShared& shared() { return *shared_; }

 private:
  void read_header();
  void on_header(beast::error_code ec);
  // Framing rules of RFC 9112 6.3 that Beast leaves to us; an error message or empty.
  std::string framing_problem() const;
  void authenticate(Access access);
  void continue_request();
  void read_body();
  void on_body(beast::error_code ec);
  void dispatch();
  // An answer decided here, before any handler ran (400, 404, 405, 413, 431).
  void refuse(unsigned status, std::string code, std::string message,
              std::vector<std::pair<std::string, std::string>> headers = {});
  template <typename Message>
  void send(std::shared_ptr<Message> message, unsigned status, std::function<void(bool)> written,
            std::optional<std::uint64_t> head_length = std::nullopt);
  template <typename Message>
  void send_head(const Message& full, std::uint64_t length, std::function<void(bool)> written);
  // Counts the answer in the metrics and shows it to the observer, as it leaves.
  template <typename Message>
  void note_answer(const Message& message, unsigned status);
  // An answer whose body comes piece by piece (Response::stream): the head with the first
  // piece, then each piece once the previous one was written.
  void write_stream(Response response, std::function<void(bool)> written);
  void start_stream(Response response, std::function<void(bool)> written, std::string piece,
                    std::exception_ptr error);
  void write_piece(std::string piece, std::exception_ptr error);
  void end_stream(bool ok);
  void close();
  // Closes after the client had a moment to read the answer: a body left unread would otherwise
  // make the kernel reset the connection and lose the answer on its way.
  void linger_close();
  void discard_until_eof();
  void evict();
  // The connection carried a request whose token was accepted: it is kept when room is short.
  void prove();
  void remove_upload();
  void begin_request() {
    if (!in_request_) ++shared_->in_flight;
    in_request_ = true;
  }
  void finish_request() {
    if (in_request_) --shared_->in_flight;
    in_request_ = false;
  }

  // Runs `f` with the stream requests are read from and answers written to: TLS over the
  // connection when the server has a certificate, the connection itself otherwise.
  template <typename F>
  void on_stream(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(stream_);
    }
  }

  beast::tcp_stream stream_;  // the connection: its socket and its deadlines, for both kinds
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream&>> tls_;
  std::shared_ptr<HttpShared> shared_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> header_parser_;
  std::optional<http::request_parser<http::string_body>> string_parser_;
  std::optional<http::request_parser<http::file_body>> file_parser_;
  Request request_;
  const Route* route_ = nullptr;
  bool keep_alive_ = true;
  bool body_unread_ = false;  // the request's body (if any) was not read
  bool proven_ = false;
  std::uint64_t connection_id_ = 0;
  std::size_t discarded_ = 0;
  std::array<char, 4096> discard_{};
  bool answered_ = true;                // no request of this connection waits for an answer
  bool in_request_ = false;             // counted in shared_->in_flight
  bool watching_ = false;               // a disconnect watch is armed
  std::uint64_t watch_generation_ = 0;  // tells a cancelled watch's late handler from a live one
  std::filesystem::path upload_;
  // The streamed answer in progress: its message, serializer, source and the piece being sent.
  std::shared_ptr<http::response<http::buffer_body>> stream_message_;
  std::shared_ptr<http::response_serializer<http::buffer_body>> stream_serializer_;
  std::function<void(Response::PieceDone)> stream_source_;
  std::function<void(bool)> stream_written_;
  std::string stream_piece_;
  std::string path_;  // the request's path and method, kept after request_ went to the handler
  http::verb method_ = http::verb::get;
};

// One request's answer slot: the core thread answers through it; it forwards to the session's
// strand exactly once.
class SessionExchange : public Exchange {
 public:
  explicit SessionExchange(std::shared_ptr<Session> session) : session_(std::move(session)) {}

  void reply(Response response, std::function<void(bool)> written) override {
    if (replied_.exchange(true)) {
      spdlog::error("a second answer to one request was dropped (status {})", response.status);
      return;
    }
    auto session = session_;
    asio::post(session->executor(),
               [session, response = std::move(response), written = std::move(written)]() mutable {
                 session->write(std::move(response), std::move(written));
               });
  }

  void watch_disconnect(std::function<void()> gone) override {
    auto session = session_;
    asio::post(session->executor(),
               [session, gone = std::move(gone)]() mutable { session->watch(std::move(gone)); });
  }

  [[nodiscard]] bool client_gone() const override { return session_->peer_closed(); }

 private:
  std::shared_ptr<Session> session_;
  std::atomic<bool> replied_{false};
};

void Session::read_header() {
  header_parser_.emplace();
  header_parser_->header_limit(kHeaderLimit);
  // The body's size is judged by the route's limit once the route is known, not by Beast's
  // 1 MiB default while the head is read (which refused large artifacts with a 400). Not
  // boost::none: Boost 1.74 compares the length with the optional, and every length is
  // greater than none.
  header_parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
  request_ = Request{};
  route_ = nullptr;
  path_.clear();
  method_ = http::verb::get;
  body_unread_ = false;
  stream_.expires_after(proven_ ? shared_->options.idle_timeout : shared_->options.header_timeout);
  on_stream([this](auto& stream) {
    http::async_read_header(
        stream, buffer_, *header_parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  });
}

void Session::on_header(beast::error_code ec) {
  if (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
      ec == beast::error::timeout || ec == asio::error::operation_aborted ||
      ec == asio::error::eof) {
    return close();
  }
  answered_ = false;
  begin_request();
  keep_alive_ = false;
  if (ec == http::error::header_limit) {
    return refuse(431, "header_too_large", "request headers are limited to 16 KiB");
  }
  if (ec) return refuse(400, "malformed_request", "malformed HTTP request: " + ec.message());

  auto& header = header_parser_->get();
  method_ = header.method();
  bool has_body = header_parser_->chunked() ||
                  (header_parser_->content_length() && *header_parser_->content_length() > 0) ||
                  header.count(http::field::transfer_encoding) > 0;
  body_unread_ = has_body;
  if (auto problem = framing_problem(); !problem.empty()) {
    return refuse(problem.rfind("unsupported", 0) == 0 ? 501 : 400, "malformed_request", problem);
  }
  keep_alive_ = header_parser_->keep_alive();
  request_.received_at = std::chrono::steady_clock::now();
  {
    // Who sent it, for the audit trail; a socket already reset has no peer, and no address.
    beast::error_code peer_ec;
    const auto peer = stream_.socket().remote_endpoint(peer_ec);
    if (!peer_ec) {
      const auto ip = peer.address();
      request_.remote_address = (ip.is_v6() ? "[" + ip.to_string() + "]" : ip.to_string()) + ":" +
                                std::to_string(peer.port());
    }
  }
  request_.method = header.method();
  try {
    auto [path, query] =
        split_target(std::string_view(header.target().data(), header.target().size()));
    request_.path = std::move(path);
    path_ = request_.path;
    request_.query = std::move(query);
  } catch (const HttpError& e) {
    keep_alive_ = false;
    return refuse(e.status(), e.body().code, e.body().message);
  }
  auto match = shared_->router.match(request_.method, request_.path);
  if (match.route == nullptr) {
    // The body is left unread, so the connection cannot carry another request.
    if (has_body) keep_alive_ = false;
    if (match.allowed.empty()) {
      return refuse(404, "not_found", "no route for " + request_.path);
    }
    std::string allow;
    for (auto verb : match.allowed) {
      if (!allow.empty()) allow += ", ";
      allow += std::string(http::to_string(verb));
    }
    return refuse(405, "method_not_allowed",
                  std::string(header.method_string()) + " is not allowed on " + request_.path +
                      "; allowed: " + allow,
                  {{"Allow", allow}});
  }
  route_ = match.route;
  request_.route = route_->pattern;
  request_.params = std::move(match.params);
  request_.authorization = std::string(header[http::field::authorization]);
  request_.idempotency_key = std::string(header["Idempotency-Key"]);
  request_.content_type = std::string(header[http::field::content_type]);
  request_.content_range = std::string(header[http::field::content_range]);

  std::uint64_t limit = route_->body == BodyKind::kUpload ? shared_->options.max_upload_body
                                                          : shared_->options.max_small_body;
  if (header_parser_->content_length() && *header_parser_->content_length() > limit) {
    keep_alive_ = false;
    return refuse(413, "body_too_large",
                  "the body has " + std::to_string(*header_parser_->content_length()) +
                      " bytes; this endpoint takes at most " + std::to_string(limit));
  }
  if (route_->access == Access::kPublic) return continue_request();
  if (request_.authorization.empty()) {
    keep_alive_ = keep_alive_ && !has_body;
    return refuse(401, "missing_token", "an Authorization: Bearer <token> header is required");
  }
  authenticate(route_->access);
}

std::string Session::framing_problem() const {
  const auto& header = header_parser_->get();
  auto encodings = header.equal_range(http::field::transfer_encoding);
  if (encodings.first == encodings.second) return {};
  // Two framings, or one the next hop may read differently, are how requests are smuggled.
  if (header.count(http::field::content_length) > 0) {
    return "a request may not have both Transfer-Encoding and Content-Length";
  }
  if (header.version() < 11) return "Transfer-Encoding needs HTTP/1.1";
  std::string all;
  for (auto it = encodings.first; it != encodings.second; ++it) {
    if (!all.empty()) all += ",";
    all += std::string(it->value());
  }
  std::vector<std::string> codings;
  std::size_t from = 0;
  for (;;) {
    auto comma = all.find(',', from);
    codings.push_back(normalized(std::string_view(all).substr(
        from, comma == std::string::npos ? std::string::npos : comma - from)));
    if (comma == std::string::npos) break;
    from = comma + 1;
  }
  if (codings.back() != "chunked") {
    return "Transfer-Encoding must end with chunked (got '" + all + "')";
  }
  if (codings.size() > 1) return "unsupported Transfer-Encoding '" + all + "': only chunked";
  return {};
}

void Session::authenticate(Access access) {
  // The admin and registration tokens are fixed hashes, read-only after start: they are
  // checked here, with no trip to the core and back (two thread hand-offs of a submit's
  // pickup, issue 13). A worker's token is looked up in the store, which only the core
  // touches. Edge routes take fixed hashes only (Router::add).
  const bool fixed_hash =
      access == Access::kPublic || access == Access::kAdmin || access == Access::kRegistration;
  std::optional<std::string> known;
  if (!fixed_hash && route_->runs != Runs::kEdge && shared_->options.recently_authenticated) {
    try {
      known = shared_->options.recently_authenticated(access, request_.authorization);
    } catch (const std::exception&) {
      known.reset();  // nothing may escape an I/O thread's handler: the core decides
    }
  }
  if (known) {
    prove();
    request_.authenticated_worker = std::move(*known);
    continue_request();
    return;
  }
  if (route_->runs == Runs::kEdge || fixed_hash) {
    try {
      if (shared_->options.authenticate)
        shared_->options.authenticate(access, request_.authorization);
    } catch (const std::exception& e) {
      if (body_unread_) keep_alive_ = false;
      write(error_response(e), {});
      return;
    }
    prove();
    continue_request();
    return;
  }
  asio::post(shared_->core,
             [self = shared_from_this(), access, authorization = request_.authorization]() mutable {
               std::string worker;
               std::optional<Response> refusal;
               const auto& check = self->shared_->options.authenticate;
               try {
                 if (check) worker = check(access, authorization);
               } catch (const std::exception& e) {
                 refusal = error_response(e);
               }
               asio::post(self->executor(), [self, worker = std::move(worker),
                                             refusal = std::move(refusal)]() mutable {
                 if (refusal) {
                   // The body was never read: this connection cannot carry another request.
                   if (self->body_unread_) self->keep_alive_ = false;
                   self->write(std::move(*refusal), {});
                   return;
                 }
                 self->prove();
                 self->request_.authenticated_worker = std::move(worker);
                 self->continue_request();
               });
             });
}

void Session::continue_request() {
  auto& header = header_parser_->get();
  if (beast::iequals(header[http::field::expect], "100-continue")) {
    // curl waits up to a second for this before sending a large body.
    auto go_on = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
    on_stream([this, go_on](auto& stream) {
      http::async_write(stream, *go_on,
                        [self = shared_from_this(), go_on](beast::error_code ec, std::size_t) {
                          if (ec) {
                            self->finish_request();
                            return self->close();
                          }
                          self->read_body();
                        });
    });
    return;
  }
  read_body();
}

void Session::read_body() {
  body_unread_ = false;
  std::uint64_t limit = route_->body == BodyKind::kUpload ? shared_->options.max_upload_body
                                                          : shared_->options.max_small_body;
  auto done = [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); };
  if (route_->body == BodyKind::kUpload) {
    upload_ = shared_->options.upload_dir / ("upload-" + random_hex(12));
    file_parser_.emplace(std::move(*header_parser_));
    file_parser_->body_limit(limit);
    beast::error_code ec;
    file_parser_->get().body().open(upload_.c_str(), beast::file_mode::write_new, ec);
    if (ec) {
      spdlog::error("cannot stage an upload at {}: {}", upload_.string(), ec.message());
      upload_.clear();
      keep_alive_ = false;
      return refuse(507, "storage_unavailable", "cannot stage the upload: " + ec.message());
    }
    stream_.expires_after(kUploadTimeout);
    on_stream(
        [&](auto& stream) { http::async_read(stream, buffer_, *file_parser_, std::move(done)); });
  } else {
    string_parser_.emplace(std::move(*header_parser_));
    string_parser_->body_limit(limit);
    stream_.expires_after(shared_->options.idle_timeout);
    on_stream(
        [&](auto& stream) { http::async_read(stream, buffer_, *string_parser_, std::move(done)); });
  }
}

void Session::on_body(beast::error_code ec) {
  if (ec == http::error::body_limit) {
    keep_alive_ = false;
    remove_upload();
    return refuse(413, "body_too_large", "the body is over this endpoint's limit");
  }
  if (ec) {
    finish_request();
    return close();
  }
  if (file_parser_) {
    beast::error_code ignored;
    file_parser_->get().body().file().close(ignored);
    file_parser_.reset();
    request_.body_file = upload_;
  } else {
    request_.body = std::move(string_parser_->get().body());
    string_parser_.reset();
  }
  dispatch();
}

void Session::dispatch() {
  // A parked long-poll has no deadline of its own on the socket; its handler decides.
  stream_.expires_never();
  auto exchange = std::make_shared<SessionExchange>(shared_from_this());
  auto run = [route = route_, request = std::move(request_), exchange]() mutable {
    try {
      route->handler(request, exchange);
    } catch (const std::exception& e) {
      exchange->reply(error_response(e), {});
    }
  };
  if (route_->runs == Runs::kEdge) {
    asio::post(executor(), std::move(run));
  } else {
    asio::post(shared_->core, std::move(run));
  }
}

void Session::refuse(unsigned status, std::string code, std::string message,
                     std::vector<std::pair<std::string, std::string>> headers) {
  // Unrouted requests share one series: a scanner must not grow the metrics without bound.
  if (request_.route.empty()) request_.route = "unmatched";
  wire::ErrorBody body;
  body.code = std::move(code);
  body.message = std::move(message);
  Response response = Response::error(status, body);
  response.headers = std::move(headers);
  write(std::move(response), {});
}

void Session::watch(std::function<void()> gone) {
  if (answered_ || watching_) return;
  watching_ = true;
  std::uint64_t generation = ++watch_generation_;
  stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(),
                                                       gone = std::move(gone),
                                                       generation](beast::error_code ec) mutable {
    if (generation != self->watch_generation_) return;
    self->watching_ = false;
    if (self->answered_) return;
    // An error on the socket (reset, closed under us) means the client can no longer be
    // answered either: release what it was waiting for, or it stays parked until its timer.
    if (ec) {
      asio::post(self->shared_->core, std::move(gone));
      return;
    }
    char byte;
    ssize_t n = ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    // 0: orderly close. Data instead (a pipelined request) is left for after the answer.
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      asio::post(self->shared_->core, std::move(gone));
    }
  });
}

void Session::write(Response response, std::function<void(bool)> written) {
  if (!stream_.socket().is_open()) {
    // Evicted or reset while the handler ran: nothing can be written.
    answered_ = true;
    finish_request();
    if (written) asio::post(shared_->core, [written = std::move(written)] { written(false); });
    return;
  }
  answered_ = true;
  if (watching_) {
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
    watching_ = false;
    ++watch_generation_;
  }
  remove_upload();
  if (response.stream) return write_stream(std::move(response), std::move(written));
  if (response.file) {
    auto message = std::make_shared<http::response<http::file_body>>();
    beast::error_code ec;
    message->body().open(response.file->c_str(), beast::file_mode::scan, ec);
    if (!ec) {
      message->result(response.status);
      message->set(http::field::content_type, response.content_type);
      for (const auto& [name, value] : response.headers) message->set(name, value);
      if (method_ == http::verb::head) {
        return send_head(*message, message->body().size(), std::move(written));
      }
      return send(std::move(message), response.status, std::move(written));
    }
    spdlog::error("cannot open {} to send it: {}", response.file->string(), ec.message());
    wire::ErrorBody body{"artifact_unreadable", "the stored file cannot be read"};
    response = Response::error(500, body);
  }
  auto message = std::make_shared<http::response<http::string_body>>();
  message->result(response.status);
  if (!response.content_type.empty()) {
    message->set(http::field::content_type, response.content_type);
  }
  for (const auto& [name, value] : response.headers) message->set(name, value);
  message->body() = std::move(response.body);
  // A HEAD answer has GET's headers and no body: a body here would be read as the start of
  // the next answer on this connection.
  if (method_ == http::verb::head) {
    return send_head(*message, message->body().size(), std::move(written));
  }
  send(std::move(message), response.status, std::move(written));
}

void Session::write_stream(Response response, std::function<void(bool)> written) {
  auto source = response.stream;
  // No deadline while the source reads: the database's statement timeout bounds it.
  stream_.expires_never();
  source([self = shared_from_this(), response = std::move(response), written = std::move(written)](
             std::string piece, std::exception_ptr error) mutable {
    asio::post(
        self->executor(), [self, response = std::move(response), written = std::move(written),
                           piece = std::move(piece), error]() mutable {
          self->start_stream(std::move(response), std::move(written), std::move(piece), error);
        });
  });
}

void Session::start_stream(Response response, std::function<void(bool)> written, std::string piece,
                           std::exception_ptr error) {
  if (error) {
    // Nothing was sent yet: the answer is the error's (a damaged artifact is a 500).
    Response refusal;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      refusal = error_response(e);
    } catch (...) {
      refusal = Response::error(500, {"internal_error", "the body could not be made"});
    }
    return write(std::move(refusal), std::move(written));
  }
  if (!stream_.socket().is_open()) {
    finish_request();
    if (written) asio::post(shared_->core, [written = std::move(written)] { written(false); });
    return;
  }
  auto message = std::make_shared<http::response<http::buffer_body>>();
  message->result(response.status);
  message->version(11);
  message->set(http::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) message->set(name, value);
  message->set(http::field::server, "tamma-orchestrator");
  message->keep_alive(keep_alive_);
  if (method_ == http::verb::head) {
    return send_head(*message, response.stream_length, std::move(written));
  }
  message->content_length(response.stream_length);
  message->body().data = nullptr;
  message->body().more = true;
  note_answer(*message, response.status);
  stream_message_ = message;
  stream_serializer_ = std::make_shared<http::response_serializer<http::buffer_body>>(*message);
  stream_source_ = std::move(response.stream);
  stream_written_ = std::move(written);
  stream_.expires_after(kWriteTimeout);
  on_stream([&](auto& stream) {
    http::async_write_header(stream, *stream_serializer_,
                             [self = shared_from_this(), piece = std::move(piece)](
                                 beast::error_code ec, std::size_t) mutable {
                               if (ec) return self->end_stream(false);
                               self->write_piece(std::move(piece), nullptr);
                             });
  });
}

void Session::write_piece(std::string piece, std::exception_ptr error) {
  // After the head an error can only cut the body: the client sees fewer bytes than the
  // Content-Length it was promised, never a whole answer of wrong bytes.
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("{} {}: the body was cut: {}", std::string(http::to_string(method_)), path_,
                    e.what());
    } catch (...) {
    }
    return end_stream(false);
  }
  if (!stream_.socket().is_open()) return end_stream(false);
  stream_piece_ = std::move(piece);
  auto& body = stream_message_->body();
  body.data = stream_piece_.empty() ? nullptr : stream_piece_.data();
  body.size = stream_piece_.size();
  body.more = !stream_piece_.empty();
  const bool last = stream_piece_.empty();
  stream_.expires_after(kWriteTimeout);
  on_stream([&](auto& stream) {
    http::async_write(
        stream, *stream_serializer_,
        [self = shared_from_this(), last](beast::error_code ec, std::size_t) {
          // need_buffer: the piece went out and the serializer asks for the next.
          if (ec == http::error::need_buffer) ec = {};
          if (ec) return self->end_stream(false);
          if (last) return self->end_stream(true);
          self->stream_.expires_never();
          self->stream_source_([self](std::string next, std::exception_ptr next_error) {
            asio::post(self->executor(), [self, next = std::move(next), next_error]() mutable {
              self->write_piece(std::move(next), next_error);
            });
          });
        });
  });
}

void Session::end_stream(bool ok) {
  stream_piece_.clear();
  stream_piece_.shrink_to_fit();
  stream_serializer_.reset();
  stream_message_.reset();
  stream_source_ = nullptr;
  finish_request();
  if (auto written = std::move(stream_written_)) {
    stream_written_ = nullptr;
    asio::post(shared_->core, [written = std::move(written), ok] { written(ok); });
  }
  if (!ok) return close();
  if (!keep_alive_) return linger_close();
  read_header();
}

template <typename Message>
void Session::send_head(const Message& full, std::uint64_t length,
                        std::function<void(bool)> written) {
  auto message = std::make_shared<http::response<http::empty_body>>();
  message->result(full.result());
  for (const auto& field : full) message->set(field.name_string(), field.value());
  send(std::move(message), full.result_int(), std::move(written), length);
}

template <typename Message>
void Session::send(std::shared_ptr<Message> message, unsigned status,
                   std::function<void(bool)> written, std::optional<std::uint64_t> head_length) {
  message->version(11);
  message->set(http::field::server, "tamma-orchestrator");
  message->keep_alive(keep_alive_);
  message->prepare_payload();
  if (head_length && status != 204 && status != 304) message->content_length(*head_length);
  stream_.expires_after(kWriteTimeout);
  note_answer(*message, status);
  on_stream([&](auto& stream) {
    http::async_write(stream, *message,
                      [self = shared_from_this(), message, written = std::move(written)](
                          beast::error_code ec, std::size_t) mutable {
                        self->finish_request();
                        if (written) {
                          asio::post(self->shared_->core,
                                     [written = std::move(written), ok = !ec] { written(ok); });
                        }
                        if (ec) return self->close();
                        if (!self->keep_alive_) return self->linger_close();
                        self->read_header();
                      });
  });
}

template <typename Message>
void Session::note_answer(const Message& message, unsigned status) {
  std::string method(http::to_string(method_));
  // request_ itself went to the handler; the route pattern is what the metrics are keyed by.
  // Counted before the write, so a client that reads /metrics right after its answer
  // already finds its own request there.
  shared_->metrics.http_request(route_ != nullptr ? route_->pattern : request_.route, method,
                                status);
  if (shared_->options.observe_answer) {
    AnsweredRequest answer;
    answer.method = method;
    answer.route = route_ != nullptr ? route_->pattern : request_.route;
    answer.path = path_;
    answer.status = status;
    for (const auto& field : message) {
      answer.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    if constexpr (std::is_same_v<Message, http::response<http::string_body>>) {
      answer.body = message.body();
    } else if constexpr (std::is_same_v<Message, http::response<http::file_body>> ||
                         std::is_same_v<Message, http::response<http::buffer_body>>) {
      answer.file_body = true;
    }
    shared_->options.observe_answer(answer);
  }
}

void Session::close() {
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream_.socket().close(ignored);
}

void Session::linger_close() {
  if (!body_unread_ && buffer_.size() == 0) return close();
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  buffer_.consume(buffer_.size());
  discarded_ = 0;
  stream_.expires_after(kLingerTimeout);
  discard_until_eof();
}

void Session::discard_until_eof() {
  stream_.async_read_some(asio::buffer(discard_),
                          [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                            self->discarded_ += n;
                            if (ec || self->discarded_ > kLingerBytes) return self->close();
                            self->discard_until_eof();
                          });
}

void Session::evict() {
  ++shared_->evicted;
  beast::error_code ignored;
  stream_.socket().close(ignored);
}

void Session::prove() {
  if (proven_) return;
  proven_ = true;
  std::lock_guard lock(shared_->unproven_mutex);
  shared_->unproven.erase(connection_id_);
}

void Session::remove_upload() {
  if (upload_.empty()) return;
  std::error_code ignored;  // the handler may already have moved it into place
  std::filesystem::remove(upload_, ignored);
  upload_.clear();
}

}  // namespace

HttpServer::HttpServer(asio::io_context& io, asio::io_context& core, const Router& router,
                       Metrics& metrics, HttpServerOptions options)
    : io_(io),
      shared_(std::make_shared<HttpShared>(core, router, metrics, std::move(options))),
      acceptor_(io),
      backoff_(io) {}

void HttpServer::start() {
  beast::error_code ec;
  auto address = asio::ip::make_address(shared_->options.host, ec);
  if (ec) {
    throw Error(ErrorKind::kConfig, "invalid_listen_address",
                "cannot listen on '" + shared_->options.host + "': not an IP address");
  }
  tcp::endpoint endpoint(address, shared_->options.port);
  auto fail = [&](const char* what) {
    throw Error(ErrorKind::kConfig, "listen_failed",
                std::string(what) + " " + address.to_string() + ":" +
                    std::to_string(shared_->options.port) + ": " + ec.message());
  };
  acceptor_.open(endpoint.protocol(), ec);
  if (ec) fail("cannot open a socket for");
  acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  acceptor_.bind(endpoint, ec);
  if (ec) fail("cannot bind");
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("cannot listen on");
  port_ = acceptor_.local_endpoint().port();
  max_connections_ = shared_->options.max_connections;
  if (max_connections_ <= 0) {
    // Room for the database, artifacts being written and uploads staged, whatever the clients do.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    auto fds = limit.rlim_cur == RLIM_INFINITY ? std::int64_t{1} << 20
                                               : static_cast<std::int64_t>(limit.rlim_cur);
    max_connections_ = std::max<std::int64_t>(16, fds - std::max<std::int64_t>(64, fds / 8));
  }
  accept();
}

void HttpServer::stop_accepting() {
  asio::post(acceptor_.get_executor(), [this] {
    beast::error_code ignored;
    acceptor_.close(ignored);
    backoff_.cancel();
  });
}

void HttpServer::accept() {
  acceptor_.async_accept(asio::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // Out of descriptors: accepting again at once would spin; existing sessions keep working.
      spdlog::warn("accept failed: {}; retrying in 100 ms", ec.message());
      backoff_.expires_after(std::chrono::milliseconds(100));
      backoff_.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && acceptor_.is_open()) accept();
      });
      return;
    }
    std::make_shared<Session>(std::move(socket), shared_)->start();
    if (shared_->connections.load() > max_connections_ && !evict_oldest_unproven()) {
      spdlog::warn("{} connections, every one with a valid token: over the cap of {}",
                   shared_->connections.load(), max_connections_);
    }
    accept();
  });
}

bool HttpServer::evict_oldest_unproven() {
  std::function<void()> evict;
  {
    std::lock_guard lock(shared_->unproven_mutex);
    if (shared_->unproven.empty()) return false;
    evict = std::move(shared_->unproven.begin()->second);
    shared_->unproven.erase(shared_->unproven.begin());
  }
  evict();
  return true;
}

}  // namespace tamma::orchestrator
