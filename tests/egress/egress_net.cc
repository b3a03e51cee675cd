#include "egress/egress_net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace tamma::testing {
namespace {

std::string& hosts_path() {
  static std::string path;
  return path;
}
std::string& hosts_problem() {
  static std::string problem;
  return problem;
}
std::string& hosts_base() {
  static std::string base;
  return base;
}

// Before main, while the process has one thread: a mount namespace of its own, with a private
// copy of /etc/hosts bound over the real one (every later thread, the resolver's included,
// inherits it). The host's /etc/hosts is never written.
struct PrivateHosts {
  PrivateHosts() {
    if (::geteuid() != 0) {
      hosts_problem() = "the egress tests need root (network namespaces, veth pairs, mounts)";
      return;
    }
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      hosts_problem() = "cannot make a private mount namespace for /etc/hosts";
      return;
    }
    std::ifstream in("/etc/hosts");
    hosts_base().assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    hosts_path() = fmt::format("/tmp/tamma-egress-hosts-{}", ::getpid());
    std::ofstream(hosts_path()) << hosts_base();
    if (::mount(hosts_path().c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0) {
      hosts_problem() = "cannot bind a private /etc/hosts";
      ::unlink(hosts_path().c_str());
      return;
    }
    std::atexit([] { ::unlink(hosts_path().c_str()); });
  }
} private_hosts;

bool have(const char* program) {
  return run_process({"/bin/sh", "-c", fmt::format("command -v {} >/dev/null", program)})
             .exit_code == 0;
}

// run_process execs a path; env finds the program on PATH.
std::vector<std::string> on_path(std::vector<std::string> argv) {
  argv.insert(argv.begin(), "/usr/bin/env");
  return argv;
}

void must(const std::vector<std::string>& argv) {
  auto r = run_process(on_path(argv));
  if (r.exit_code != 0) {
    std::string line;
    for (const auto& a : argv) line += a + " ";
    throw std::runtime_error(line + "failed: " + r.err);
  }
}

bool accepts(const std::string& ip, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

std::atomic<int> g_count{0};

constexpr const char* kServers = R"PY(
import http.server, socketserver, ssl, sys, threading, functools
root, ip, cert, key = sys.argv[1:5]
Handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
plain = Server((ip, 80), Handler)
tls = Server((ip, 443), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
print("serving", flush=True)
tls.serve_forever()
)PY";

}  // namespace

std::string egress_net_unavailable() {
  if (!hosts_problem().empty()) return hosts_problem();
  for (const char* p : {"ip", "python3", "openssl", "curl"}) {
    if (!have(p)) return fmt::format("{} is not installed (scripts/setup.sh)", p);
  }
  return {};
}

void set_test_hosts(const std::vector<std::pair<std::string, std::string>>& names) {
  std::string text = hosts_base();
  for (const auto& [ip, name] : names) text += ip + " " + name + "\n";
  // Written in place: the bind mount refers to this inode.
  std::ofstream(hosts_path(), std::ios::trunc) << text;
}

std::filesystem::path test_hosts_file() { return hosts_path(); }

EgressNet::EgressNet() {
  const int n = g_count.fetch_add(1);
  const int pid = static_cast<int>(::getpid());
  ns_ = fmt::format("tegr{}n{}", pid, n);
  veth_host_ = fmt::format("te{}h{}", pid % 100000, n);
  const std::string veth_ns = fmt::format("te{}s{}", pid % 100000, n);
  // 10.213-252.x.y: the pid picks the subnet, so that test processes run side by side.
  const int second = 213 + (n % 40);
  const int third = pid % 250;
  host_ip_ = fmt::format("10.{}.{}.1", second, third);
  server_ip_ = fmt::format("10.{}.{}.2", second, third);
  must({"ip", "netns", "add", ns_});
  try {
    must({"ip", "link", "add", veth_host_, "type", "veth", "peer", "name", veth_ns});
    must({"ip", "link", "set", veth_ns, "netns", ns_});
    must({"ip", "addr", "add", host_ip_ + "/24", "dev", veth_host_});
    must({"ip", "link", "set", veth_host_, "up"});
    must({"ip", "netns", "exec", ns_, "ip", "addr", "add", server_ip_ + "/24", "dev", veth_ns});
    must({"ip", "netns", "exec", ns_, "ip", "link", "set", veth_ns, "up"});
    must({"ip", "netns", "exec", ns_, "ip", "link", "set", "lo", "up"});
  } catch (...) {
    run_process(on_path({"ip", "link", "del", veth_host_}));
    run_process(on_path({"ip", "netns", "del", ns_}));
    throw;
  }
  std::filesystem::create_directories(root() / "www");
}

EgressNet::~EgressNet() {
  servers_.clear();  // kills them
  // Deleting the namespace deletes its veth end, and with it the pair.
  run_process(on_path({"ip", "netns", "del", ns_}));
  run_process(on_path({"ip", "link", "del", veth_host_}));
}

void EgressNet::start_servers(const std::vector<std::string>& names) {
  ca_ = root() / "server.pem";
  const auto key = root() / "server.key";
  std::string san = "subjectAltName=";
  for (std::size_t i = 0; i < names.size(); ++i) san += (i ? ",DNS:" : "DNS:") + names[i];
  must({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key.string(), "-out", ca_.string(), "-days", "2", "-subj",
        "/CN=" + names.front(), "-addext", san});
  write_file(root() / "servers.py", kServers);
  servers_.push_back(std::make_unique<ChildProcess>(std::vector<std::string>{
      "/usr/bin/env", "ip", "netns", "exec", ns_, "python3", (root() / "servers.py").string(),
      (root() / "www").string(), server_ip_, ca_.string(), key.string()}));
  if (!servers_.back()->wait_for_output("serving", std::chrono::seconds(30))) {
    throw std::runtime_error("the test servers did not start: " + servers_.back()->err_so_far());
  }
  for (int i = 0; i < 300 && !(accepts(server_ip_, 80) && accepts(server_ip_, 443)); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

ProcessResult EgressNet::exec(const std::vector<std::string>& argv) {
  std::vector<std::string> full{"/usr/bin/env", "ip", "netns", "exec", ns_};
  full.insert(full.end(), argv.begin(), argv.end());
  return run_process(full);
}

}  // namespace tamma::testing
