#include "sandbox/net.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "sandbox/own_thread.h"

namespace tamma::sandbox {

namespace {

// More idle namespaces than tasks ever ran at once would only hold kernel memory.
constexpr std::size_t kMaxIdleNamespaces = 16;

struct Pool {
  std::mutex mutex;
  std::vector<UniqueFd> idle;
};

Pool& pool() {
  static auto* instance = new Pool;  // never destroyed: a lease may outlive main
  return *instance;
}

[[noreturn]] void throw_setup(const std::string& what, int err) {
  throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
              "network namespace for the pool: " + what + ": " + strerrordesc_np(err));
}

// Runs in a thread of its own (own_thread.h).
UniqueFd make_namespace() {
  if (::unshare(CLONE_NEWNET) != 0) throw_setup("unshare", errno);
  UniqueFd fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!fd) throw_setup("open /proc/thread-self/ns/net", errno);
  if (int err = bring_up_loopback(); err != 0) throw_setup("bring up lo", err);
  // A task's server closing a connection would leave its port in TIME_WAIT for a minute,
  // and the next task's bind() of the same port would fail where a fresh namespace lets it
  // succeed. Without buckets the kernel closes such sockets at once; on a loopback-only
  // network there is no delayed segment for TIME_WAIT to guard against.
  UniqueFd buckets(::open("/proc/sys/net/ipv4/tcp_max_tw_buckets", O_WRONLY | O_CLOEXEC));
  if (!buckets) throw_setup("open net.ipv4.tcp_max_tw_buckets", errno);
  if (::write(buckets.get(), "0", 1) != 1) throw_setup("write net.ipv4.tcp_max_tw_buckets", errno);
  return fd;
}

}  // namespace

int bring_up_loopback() {
  // An ioctl on any socket of the namespace is the cheapest way: no netlink round trip.
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return errno;
  struct ifreq req {};
  std::memcpy(req.ifr_name, "lo", 3);
  int err = 0;
  if (::ioctl(sock, SIOCGIFFLAGS, &req) != 0) {
    err = errno;
  } else {
    req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP | IFF_RUNNING);
    if (::ioctl(sock, SIOCSIFFLAGS, &req) != 0) err = errno;
  }
  ::close(sock);
  return err;
}

NetNamespaceLease& NetNamespaceLease::operator=(NetNamespaceLease&& other) noexcept {
  if (this != &other) {
    give_back();
    fd_ = std::move(other.fd_);
  }
  return *this;
}

NetNamespaceLease::~NetNamespaceLease() { give_back(); }

void NetNamespaceLease::give_back() {
  if (!fd_) return;
  Pool& p = pool();
  std::lock_guard lock(p.mutex);
  if (p.idle.size() < kMaxIdleNamespaces) p.idle.push_back(std::move(fd_));
  fd_.reset();
}

NetNamespaceLease lease_net_namespace() {
  {
    Pool& p = pool();
    std::lock_guard lock(p.mutex);
    if (!p.idle.empty()) {
      UniqueFd fd = std::move(p.idle.back());
      p.idle.pop_back();
      return NetNamespaceLease(std::move(fd));
    }
  }
  return NetNamespaceLease(in_own_thread(make_namespace));
}

}  // namespace tamma::sandbox
