#include "egress/listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

#include "common/error.h"

namespace tamma::egress {
namespace {

struct Made {
  Listener listener;
  std::string failure;
};

Made make(int netns_fd) {
  Made made;
  auto fail = [&](const char* what) {
    made.failure = std::string(what) + ": " + strerrordesc_np(errno);
    return std::move(made);
  };
  if (netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) != 0)
    return fail("enter the task's network namespace");
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fail("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    return fail("bind 127.0.0.1");
  if (::listen(fd.get(), SOMAXCONN) != 0) return fail("listen");
  socklen_t length = sizeof address;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0)
    return fail("getsockname");
  made.listener.port = ntohs(address.sin_port);
  made.listener.fd = std::move(fd);
  return made;
}

}  // namespace

Listener listen_in_namespace(int netns_fd) {
  Made made;
  if (netns_fd < 0) {
    made = make(-1);
  } else {
    // setns changes the calling thread for good: a thread of its own that ends afterwards.
    std::thread thread([&] { made = make(netns_fd); });
    thread.join();
  }
  if (!made.failure.empty()) {
    throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                "egress proxy listener: " + made.failure);
  }
  return std::move(made.listener);
}

}  // namespace tamma::egress
