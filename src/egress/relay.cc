#include "egress/relay.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/unique_fd.h"

namespace tamma::egress {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr std::size_t kChunk = 1U << 20;

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return {};
  Pipe p{UniqueFd(fds[0]), UniqueFd(fds[1])};
  // A larger pipe moves more per system call; the default 64 KiB halves the throughput. Not
  // an error when refused (pipe-max-size).
  (void)::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(kChunk));
  return p;
}

// One direction. Returns false on an error (the caller closes both sockets).
asio::awaitable<bool> pump(tcp::socket& from, tcp::socket& to,
                           std::atomic<std::uint64_t>& counter) {
  Pipe pipe = make_pipe();
  if (!pipe.read) co_return false;
  boost::system::error_code ec;
  for (;;) {
    const ssize_t got = ::splice(from.native_handle(), nullptr, pipe.write.get(), nullptr, kChunk,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) co_return false;
      co_await from.async_wait(tcp::socket::wait_read,
                               asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return false;
      continue;
    }
    if (got == 0) {
      // The sender is done: the receiver reads end-of-file, and may still answer.
      to.shutdown(tcp::socket::shutdown_send, ec);
      co_return true;
    }
    std::size_t left = static_cast<std::size_t>(got);
    while (left > 0) {
      const ssize_t put = ::splice(pipe.read.get(), nullptr, to.native_handle(), nullptr, left,
                                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (put < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) co_return false;
        co_await to.async_wait(tcp::socket::wait_write,
                               asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return false;
        continue;
      }
      left -= static_cast<std::size_t>(put);
      counter.fetch_add(static_cast<std::uint64_t>(put), std::memory_order_relaxed);
    }
  }
}

}  // namespace

asio::awaitable<void> relay(std::shared_ptr<RelayEnds> ends, std::atomic<std::uint64_t>& out,
                            std::atomic<std::uint64_t>& in) {
  boost::system::error_code ec;
  ends->client.native_non_blocking(true, ec);
  ends->upstream.native_non_blocking(true, ec);
  auto executor = co_await asio::this_coro::executor;
  // The second direction runs beside this one; the timer wakes this coroutine when it ends.
  auto other_done = std::make_shared<bool>(false);
  auto wake = std::make_shared<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
  asio::co_spawn(
      executor,
      [ends, &in, other_done, wake]() -> asio::awaitable<void> {
        const bool ok = co_await pump(ends->upstream, ends->client, in);
        if (!ok) {
          boost::system::error_code ignored;
          ends->client.close(ignored);
          ends->upstream.close(ignored);
        }
        *other_done = true;
        wake->cancel();
      },
      asio::detached);
  const bool ok = co_await pump(ends->client, ends->upstream, out);
  if (!ok) {
    ends->client.close(ec);
    ends->upstream.close(ec);
  }
  while (!*other_done) {
    co_await wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  ends->client.close(ec);
  ends->upstream.close(ec);
}

}  // namespace tamma::egress
