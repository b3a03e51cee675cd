// What the egress proxy costs a task's connections (issue 15), against a direct connection to
// the same server in the same run: the time to set up a connection (connect, CONNECT and its
// answer, one byte there and back) and the throughput of one CONNECT tunnel.
//
// The server is in a network namespace of the bench's own, behind a veth pair, as a registry
// is behind the host's interface: the proxy refuses loopback destinations by design. The
// client reaches the proxy on loopback, as a task does in its namespace. Needs root.
//
//   egress_proxy_bench [connections=300] [megabytes=2048]

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "egress/listener.h"
#include "egress/proxy.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace eg = tamma::egress;

const std::string kNs = "tamma-egress-bench-" + std::to_string(::getpid());
const std::string kVethHost = "teb" + std::to_string(::getpid() % 100000) + "h";
const std::string kVethNs = "teb" + std::to_string(::getpid() % 100000) + "n";
constexpr const char* kHostIp = "10.251.7.1";
constexpr const char* kServerIp = "10.251.7.2";
constexpr int kPort = 9000;

int sh(const std::string& command) { return std::system(command.c_str()); }

void teardown() {
  sh("ip netns del " + kNs + " 2>/dev/null");
  sh("ip link del " + kVethHost + " 2>/dev/null");
}

bool setup() {
  teardown();
  return sh("ip netns add " + kNs) == 0 &&
         sh("ip link add " + kVethHost + " type veth peer name " + kVethNs) == 0 &&
         sh("ip link set " + kVethNs + " netns " + kNs) == 0 &&
         sh("ip addr add " + std::string(kHostIp) + "/24 dev " + kVethHost) == 0 &&
         sh("ip link set " + kVethHost + " up") == 0 &&
         sh("ip netns exec " + kNs + " ip addr add " + kServerIp + "/24 dev " + kVethNs) == 0 &&
         sh("ip netns exec " + kNs + " ip link set " + kVethNs + " up") == 0 &&
         sh("ip netns exec " + kNs + " ip link set lo up") == 0;
}

bool read_exact(int fd, char* buffer, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, buffer + got, n - got);
    if (r <= 0) return false;
    got += static_cast<std::size_t>(r);
  }
  return true;
}

bool write_all(int fd, const char* data, std::size_t n) {
  std::size_t put = 0;
  while (put < n) {
    const ssize_t w = ::write(fd, data + put, n - put);
    if (w <= 0) return false;
    put += static_cast<std::size_t>(w);
  }
  return true;
}

// In the namespace: 'E' echoes one byte, 'S' reads to end-of-file and answers one byte.
void serve(int listener) {
  std::vector<char> buffer(1 << 20);
  for (;;) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char mode = 0;
    if (read_exact(fd, &mode, 1)) {
      if (mode == 'E') {
        char byte = 0;
        if (read_exact(fd, &byte, 1)) write_all(fd, &byte, 1);
      } else if (mode == 'S') {
        while (::read(fd, buffer.data(), buffer.size()) > 0) {
        }
        write_all(fd, "d", 1);
      } else if (mode == 'Q') {
        ::close(fd);
        return;
      }
    }
    ::close(fd);
  }
}

int connect_to(const char* ip, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, ip, &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// A connection to the server, directly or through CONNECT; -1 on failure.
int open_connection(int proxy_port) {
  if (proxy_port == 0) return connect_to(kServerIp, kPort);
  const int fd = connect_to("127.0.0.1", proxy_port);
  if (fd < 0) return -1;
  const std::string request = std::string("CONNECT ") + kServerIp + ":" + std::to_string(kPort) +
                              " HTTP/1.1\r\nHost: x\r\n\r\n";
  write_all(fd, request.data(), request.size());
  // "HTTP/1.1 200 Connection established\r\n\r\n" is 39 bytes.
  char answer[39];
  if (!read_exact(fd, answer, sizeof answer) || std::strncmp(answer, "HTTP/1.1 200", 12) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Connect, set up, one byte there and back: microseconds, sorted.
std::vector<double> setup_times(int proxy_port, int runs) {
  std::vector<double> out;
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    const int fd = open_connection(proxy_port);
    if (fd < 0) return {};
    char echo[2] = {'E', 'x'};
    write_all(fd, echo, 2);
    char back = 0;
    read_exact(fd, &back, 1);
    out.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    ::close(fd);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// MB/s of `megabytes` written through one connection, until the server has read them all.
double throughput(int proxy_port, std::size_t megabytes) {
  std::vector<char> data(1 << 20, 'x');
  const int fd = open_connection(proxy_port);
  if (fd < 0) return 0;
  write_all(fd, "S", 1);
  const auto start = Clock::now();
  for (std::size_t i = 0; i < megabytes; ++i) write_all(fd, data.data(), data.size());
  ::shutdown(fd, SHUT_WR);
  char done = 0;
  read_exact(fd, &done, 1);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ::close(fd);
  return static_cast<double>(megabytes) * 1.048576 / seconds;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  return sorted[static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 300;
  const std::size_t megabytes = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 2048;
  if (::geteuid() != 0) {
    std::fprintf(stderr, "egress_proxy_bench needs root (a network namespace and a veth pair)\n");
    return 77;
  }
  if (!setup()) {
    std::fprintf(stderr, "cannot make the bench's network namespace\n");
    teardown();
    return 1;
  }
  // The server's listener is made in the namespace by a thread that stays there.
  int listener = -1;
  std::thread server([&] {
    const std::string path = "/run/netns/" + kNs;
    const int ns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) return;
    ::close(ns);
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kPort);
    ::inet_pton(AF_INET, kServerIp, &a.sin_addr);
    if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listener, 128) != 0)
      return;
    serve(listener);
  });
  for (int i = 0; i < 200; ++i) {
    const int fd = connect_to(kServerIp, kPort);
    if (fd >= 0) {
      write_all(fd, "E", 1);
      write_all(fd, "x", 1);
      char b;
      read_exact(fd, &b, 1);
      ::close(fd);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  eg::ProxyOptions options;
  options.allow.push_back(std::get<eg::Destination>(
      eg::parse_destination(std::string(kServerIp) + ":" + std::to_string(kPort))));
  options.addresses = eg::AddressPolicy(true);
  eg::Proxy proxy(std::move(options));
  eg::Listener proxy_listener = eg::listen_in_namespace(-1);
  const int proxy_port = proxy_listener.port;
  proxy.serve(std::move(proxy_listener.fd));
  proxy.start();

  // Interleaved, so that the machine's noise hits both alike; a warm-up round first.
  setup_times(0, 20);
  setup_times(proxy_port, 20);
  std::vector<double> direct, proxied;
  for (int round = 0; round < 5; ++round) {
    auto d = setup_times(0, runs / 5);
    auto p = setup_times(proxy_port, runs / 5);
    direct.insert(direct.end(), d.begin(), d.end());
    proxied.insert(proxied.end(), p.begin(), p.end());
  }
  std::sort(direct.begin(), direct.end());
  std::sort(proxied.begin(), proxied.end());
  std::printf("connection set-up (connect + CONNECT + 1-byte round trip), %zu runs each:\n",
              direct.size());
  std::printf("  direct   p50 %8.1f us  p90 %8.1f us  p99 %8.1f us\n", percentile(direct, 0.5),
              percentile(direct, 0.9), percentile(direct, 0.99));
  std::printf("  proxied  p50 %8.1f us  p90 %8.1f us  p99 %8.1f us\n", percentile(proxied, 0.5),
              percentile(proxied, 0.9), percentile(proxied, 0.99));
  std::printf("  added by the proxy: p50 %.1f us, p90 %.1f us (bound: 1000 us)\n",
              percentile(proxied, 0.5) - percentile(direct, 0.5),
              percentile(proxied, 0.9) - percentile(direct, 0.9));

  std::vector<double> tp_direct, tp_proxied;
  for (int round = 0; round < 3; ++round) {
    tp_direct.push_back(throughput(0, megabytes));
    tp_proxied.push_back(throughput(proxy_port, megabytes));
  }
  std::sort(tp_direct.begin(), tp_direct.end());
  std::sort(tp_proxied.begin(), tp_proxied.end());
  std::printf("throughput of one connection, %zu MiB, median of 3:\n", megabytes);
  std::printf("  direct   %8.0f MB/s\n", tp_direct[1]);
  std::printf("  proxied  %8.0f MB/s through CONNECT (bound: 500 MB/s)\n", tp_proxied[1]);

  proxy.stop();
  const auto report = proxy.report();
  for (const auto& t : report.traffic) {
    std::printf("ledger: %s out %llu bytes, in %llu bytes, %llu connections\n",
                t.destination.c_str(), static_cast<unsigned long long>(t.bytes_out),
                static_cast<unsigned long long>(t.bytes_in),
                static_cast<unsigned long long>(t.connections));
  }
  const int quit = connect_to(kServerIp, kPort);
  if (quit >= 0) {
    write_all(quit, "Q", 1);
    ::close(quit);
  }
  server.join();
  if (listener >= 0) ::close(listener);
  teardown();
  return 0;
}
