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
#include <string_view>
#include <vector>

#include "common/error.h"
#include "sandbox/own_thread.h"

namespace tamma::sandbox {

namespace {

// More idle namespaces than tasks ever ran at once would only hold kernel memory.
constexpr std::size_t kMaxIdleNamespaces = 16;

struct Idle {
  UniqueFd ns;
  NetCounters counters;
  std::uint64_t unreachable = 0;  // the counters when it went back to the pool
};

struct Pool {
  std::mutex mutex;
  std::vector<Idle> idle;
};

Pool& pool() {
  static auto* instance = new Pool;  // never destroyed: a lease may outlive main
  return *instance;
}

[[noreturn]] void throw_setup(const std::string& what, int err) {
  throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
              "network namespace for the pool: " + what + ": " + strerrordesc_np(err));
}

std::string read_all(int fd) {
  std::string text;
  if (fd < 0 || ::lseek(fd, 0, SEEK_SET) != 0) return text;
  char buffer[4096];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    text.append(buffer, static_cast<std::size_t>(got));
    if (text.size() > (1U << 20)) break;  // the files are a few KiB; never unbounded
  }
  return text;
}

std::uint64_t parse_count(std::string_view text) {
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return 0;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

// Splits at any of `seps` (snmp6 pads its names with spaces and a tab).
std::vector<std::string_view> split(std::string_view text, std::string_view seps) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find_first_of(seps, start);
    if (end == std::string_view::npos) end = text.size();
    if (end > start) parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

struct Made {
  UniqueFd ns;
  NetCounters counters;
};

// Runs in a thread of its own (own_thread.h).
Made make_namespace() {
  if (::unshare(CLONE_NEWNET) != 0) throw_setup("unshare", errno);
  UniqueFd fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!fd) throw_setup("open /proc/thread-self/ns/net", errno);
  NetCounters counters = NetCounters::open("/proc/thread-self/net");
  if (int err = bring_up_loopback(); err != 0) throw_setup("bring up lo", err);
  // A task's server closing a connection would leave its port in TIME_WAIT for a minute,
  // and the next task's bind() of the same port would fail where a fresh namespace lets it
  // succeed. Without buckets the kernel closes such sockets at once; on a loopback-only
  // network there is no delayed segment for TIME_WAIT to guard against.
  UniqueFd buckets(::open("/proc/sys/net/ipv4/tcp_max_tw_buckets", O_WRONLY | O_CLOEXEC));
  if (!buckets) throw_setup("open net.ipv4.tcp_max_tw_buckets", errno);
  if (::write(buckets.get(), "0", 1) != 1) throw_setup("write net.ipv4.tcp_max_tw_buckets", errno);
  return Made{std::move(fd), std::move(counters)};
}

}  // namespace

std::uint64_t unreachable_in_snmp(const std::string& snmp, const std::string& snmp6) {
  // /proc/net/snmp: for each protocol a line of names and a line of values, "Ip: Forwarding
  // ... OutNoRoutes ..." then "Ip: 1 ... 3 ...".
  std::uint64_t total = 0;
  const auto lines = split(snmp, "\n");
  for (std::size_t i = 0; i + 1 < lines.size(); ++i) {
    const bool ip = lines[i].starts_with("Ip: ") && lines[i + 1].starts_with("Ip: ");
    const bool udp = lines[i].starts_with("Udp: ") && lines[i + 1].starts_with("Udp: ");
    if (!ip && !udp) continue;
    const auto names = split(lines[i], " ");
    const auto values = split(lines[i + 1], " ");
    for (std::size_t k = 1; k < names.size() && k < values.size(); ++k) {
      if ((ip && names[k] == "OutNoRoutes") || (udp && names[k] == "NoPorts")) {
        total += parse_count(values[k]);
      }
    }
    ++i;
  }
  // /proc/net/snmp6: "Ip6OutNoRoutes      3".
  for (auto line : split(snmp6, "\n")) {
    const auto fields = split(line, " \t");
    if (fields.size() == 2 && (fields[0] == "Ip6OutNoRoutes" || fields[0] == "Udp6NoPorts")) {
      total += parse_count(fields[1]);
    }
  }
  return total;
}

NetCounters NetCounters::open(const std::string& proc_net) {
  NetCounters counters;
  counters.snmp_ = UniqueFd(::open((proc_net + "/snmp").c_str(), O_RDONLY | O_CLOEXEC));
  counters.snmp6_ = UniqueFd(::open((proc_net + "/snmp6").c_str(), O_RDONLY | O_CLOEXEC));
  return counters;
}

std::uint64_t NetCounters::unreachable() const {
  if (!*this) return 0;
  return unreachable_in_snmp(read_all(snmp_.get()), read_all(snmp6_.get()));
}

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
    counters_ = std::move(other.counters_);
    baseline_ = other.baseline_;
    latest_ = other.latest_;
    read_ = other.read_;
  }
  return *this;
}

NetNamespaceLease::~NetNamespaceLease() { give_back(); }

std::uint64_t NetNamespaceLease::unreachable_since_lease() const {
  if (!fd_ || !counters_) return 0;
  latest_ = counters_.unreachable();
  read_ = true;
  return latest_ >= baseline_ ? latest_ - baseline_ : 0;
}

void NetNamespaceLease::give_back() {
  if (!fd_) return;
  // The next task counts from here (what this one sent is not its doing).
  if (!read_) {
    try {
      (void)unreachable_since_lease();
    } catch (...) {  // out of memory: the next task may count a few of this one's packets
    }
  }
  Pool& p = pool();
  std::lock_guard lock(p.mutex);
  if (p.idle.size() < kMaxIdleNamespaces) {
    p.idle.push_back(Idle{std::move(fd_), std::move(counters_), latest_});
  }
  fd_.reset();
}

NetNamespaceLease lease_net_namespace() {
  {
    Pool& p = pool();
    std::lock_guard lock(p.mutex);
    if (!p.idle.empty()) {
      Idle idle = std::move(p.idle.back());
      p.idle.pop_back();
      return NetNamespaceLease(std::move(idle.ns), std::move(idle.counters), idle.unreachable);
    }
  }
  Made made = in_own_thread(make_namespace);
  return NetNamespaceLease(std::move(made.ns), std::move(made.counters), 0);
}

UniqueFd make_loopback_net_namespace() { return in_own_thread(make_namespace).ns; }

}  // namespace tamma::sandbox
