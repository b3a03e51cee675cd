// The orchestrator's request handling from raw bytes: framing, routing, the token check made
// from the head, bodies, and the handlers and store behind them. A real server (Beast, the core
// thread, SQLite in a temporary directory) listens on loopback; each input is sent as the bytes
// of one connection, the client half-closes, and everything the server answers is read.
//
// A finding: a crash or sanitizer report anywhere in the server, a hang (libFuzzer's -timeout),
// or an answer 500 internal_error, which only an exception no handler expected produces.
//
// The fuzzer cannot guess tokens, so inputs may name them: @A@ becomes the admin token, @R@ the
// registration token, @T@ a registered worker's token and @W@ its id (corpus/http_request has
// requests of every route written that way).

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

#include "orchestrator/http_client.h"
#include "orchestrator/server.h"

namespace {

namespace orch = tamma::orchestrator;
using namespace std::chrono_literals;

constexpr const char* kAdmin = "fuzz-admin-token-0123456789abcdef";
constexpr const char* kRegistration = "fuzz-registration-token-0123456789";

struct Fixture {
  std::filesystem::path dir;
  std::unique_ptr<orch::Server> server;
  int port = 0;
  std::string worker_id;
  std::string worker_token;

  Fixture() {
    spdlog::set_level(spdlog::level::off);
    char pattern[] = "/tmp/tamma-http-fuzz-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) std::abort();
    dir = pattern;
    orch::ServerConfig config;
    config.listen_host = "127.0.0.1";
    config.listen_port = 0;
    config.db_path = dir / "db.sqlite";
    config.data_dir = dir / "data";
    config.sync = orch::SyncMode::kNormal;
    config.admin_token = kAdmin;
    config.registration_token = kRegistration;
    // Short waits, so a parked poll or a slow head does not hold an input for long.
    config.poll_timeout = 20ms;
    config.header_timeout = 200ms;
    config.idle_timeout = 200ms;
    config.heartbeat_interval = 500ms;
    config.lease_ttl = 2s;
    config.io_threads = 1;
    std::ostringstream announce;
    server = std::make_unique<orch::Server>(config, announce);
    server->start();
    port = server->port();
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    orch::HttpClient registration(url, kRegistration);
    auto reg = registration.post_json(
        "/api/v1/workers/register",
        {{"capabilities",
          {{"taskTypes", {"command"}}, {"slots", 4}, {"labels", {{"os", "linux"}}}}}});
    if (reg.status != 201) std::abort();
    worker_id = reg.json()["workerId"];
    worker_token = reg.json()["token"];
  }
  ~Fixture() {
    server->shutdown();
    server.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

std::string substituted(std::string_view in, const Fixture& f) {
  std::string out;
  out.reserve(in.size() + 64);
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '@' && i + 2 < in.size() && in[i + 2] == '@') {
      const char* value = nullptr;
      switch (in[i + 1]) {
        case 'A':
          value = kAdmin;
          break;
        case 'R':
          value = kRegistration;
          break;
        case 'T':
          value = f.worker_token.c_str();
          break;
        case 'W':
          value = f.worker_id.c_str();
          break;
        default:
          break;
      }
      if (value != nullptr) {
        out += value;
        i += 2;
        continue;
      }
    }
    out.push_back(in[i]);
  }
  return out;
}

// Sends the request on a new connection, half-closes, and returns what came back until the
// server closed (or a second passed: a log read may hold its answer that long).
std::string exchange(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) std::abort();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) std::abort();
  timeval timeout{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may refuse and close before reading everything
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string answers;
  char buffer[16384];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    answers.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return answers;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Fixture& f = fixture();
  const std::string request =
      substituted(std::string_view(reinterpret_cast<const char*>(data), size), f);
  const std::string answers = exchange(f.port, request);
  if (answers.find("\"code\":\"internal_error\"") != std::string::npos) {
    std::fprintf(stderr, "the server answered internal_error:\n%s\n", answers.c_str());
    std::abort();
  }
  return 0;
}
