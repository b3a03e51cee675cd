#pragma once
// A TCP connection that sends exactly the bytes a test writes and returns exactly what the
// server answered: for framing, smuggling, HEAD and connection-limit tests, where an HTTP
// client library would fix up the request or hide the connection.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace tamma::orchestrator::testing {

class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      int err = errno;
      ::close(fd_);
      throw std::runtime_error(std::string("connect: ") + std::strerror(err));
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // False when the server closed or reset the connection.
  bool send(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Reads until `done(received)` holds, the server closes, or `limit` passes. Returns what
  // arrived; `closed` tells whether the server ended the connection.
  std::string read_until(const std::function<bool(const std::string&)>& done,
                         std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done(received_) && !closed_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      // Polled once even with no time left, so a zero limit reads what already arrived.
      int ready = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(0, left.count())));
      if (ready <= 0) {
        if (left.count() <= 0) break;
        continue;
      }
      char buffer[65536];
      ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n > 0) {
        received_.append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        closed_ = true;
      }
    }
    return received_;
  }

  // Everything until the server closes the connection (or `limit`).
  std::string read_to_close(std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    return read_until([](const std::string&) { return false; }, limit);
  }

  // One whole answer: its head and a body of its Content-Length (none for HEAD answers).
  std::string read_answer(bool head_request = false,
                          std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    auto complete = [head_request](const std::string& text) -> std::optional<std::size_t> {
      auto end = text.find("\r\n\r\n");
      if (end == std::string::npos) return std::nullopt;
      std::size_t length = 0;
      std::string lower = text.substr(0, end);
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (auto at = lower.find("\r\ncontent-length:"); at != std::string::npos && !head_request) {
        length = std::stoull(lower.substr(at + 17));
      }
      if (text.size() < end + 4 + length) return std::nullopt;
      return end + 4 + length;
    };
    read_until([&](const std::string& text) { return complete(text).has_value(); }, limit);
    auto size = complete(received_);
    if (!size) {
      std::string all = std::move(received_);
      received_.clear();
      return all;
    }
    std::string answer = received_.substr(0, *size);
    received_.erase(0, *size);
    return answer;
  }

  [[nodiscard]] bool closed() const { return closed_; }
  [[nodiscard]] const std::string& pending() const { return received_; }
  [[nodiscard]] int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string received_;
  bool closed_ = false;
};

// The status code of an answer's first line, 0 when there is none.
inline int status_of(const std::string& answer) {
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || answer.size() < 12) return 0;
  return std::stoi(answer.substr(9, 3));
}

// How many answers a byte stream holds.
inline int answers_in(const std::string& text) {
  int n = 0;
  for (std::size_t at = text.find("HTTP/1.1 "); at != std::string::npos;
       at = text.find("HTTP/1.1 ", at + 1)) {
    ++n;
  }
  return n;
}

inline std::string body_of(const std::string& answer) {
  auto end = answer.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : answer.substr(end + 4);
}

}  // namespace tamma::orchestrator::testing
