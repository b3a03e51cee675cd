// The egress proxy against real servers (issue 15): curl through HTTP CONNECT (TLS to a server
// whose certificate the test made), through plain-HTTP absolute-form requests and through
// SOCKS5 with remote names; refusals of names not allowed, of raw addresses, of names that
// resolve to forbidden addresses (DNS rebinding); and the ledger of each.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "egress/egress_net.h"
#include "egress/listener.h"
#include "egress/proxy.h"
#include "egress/socks5.h"

namespace tamma::egress {
namespace {

using testing::EgressNet;
using ::testing::HasSubstr;
using testing::ProcessResult;
using testing::run_process;
using ::testing::SizeIs;

Destination entry(std::string_view text) { return std::get<Destination>(parse_destination(text)); }

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = testing::egress_net_unavailable(); !why.empty()) {
      GTEST_SKIP() << "SKIPPED LOUDLY: " << why;
    }
    net_ = std::make_unique<EgressNet>();
    testing::write_file(net_->root() / "www" / "hello.txt", "hello through the proxy\n");
    big_ = std::string(3 << 20, 'x');
    testing::write_file(net_->root() / "www" / "big.bin", big_);
    net_->start_servers({"pkgs.egress.test", "other.egress.test"});
    testing::set_test_hosts({{net_->server_ip(), "pkgs.egress.test"},
                             {net_->server_ip(), "other.egress.test"},
                             {"127.0.0.1", "rebind.egress.test"},
                             {"169.254.169.254", "metadata.egress.test"},
                             {net_->host_ip(), "hostside.egress.test"}});
  }

  void start(std::vector<std::string> allow) {
    ProxyOptions options;
    for (const auto& a : allow) options.allow.push_back(entry(a));
    options.connect_timeout = std::chrono::seconds(10);
    proxy_ = std::make_unique<Proxy>(std::move(options));
    Listener listener = listen_in_namespace(-1);
    port_ = listener.port;
    proxy_->serve(std::move(listener.fd));
    proxy_->start();
  }

  ProcessResult curl(std::vector<std::string> args) {
    std::vector<std::string> argv{"/usr/bin/env", "curl", "-sS",      "--max-time",       "30",
                                  "--noproxy",    "",     "--cacert", net_->ca().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    // The test's own environment may name a proxy; curl must use only the one given.
    return run_process(argv, {"http_proxy=", "https_proxy=", "HTTPS_PROXY=", "ALL_PROXY=",
                              "all_proxy=", "NO_PROXY=", "no_proxy="});
  }
  std::string http_proxy() const { return fmt::format("http://127.0.0.1:{}", port_); }
  std::string socks_proxy() const { return fmt::format("socks5h://127.0.0.1:{}", port_); }

  std::unique_ptr<EgressNet> net_;
  std::unique_ptr<Proxy> proxy_;
  std::uint16_t port_ = 0;
  std::string big_;
};

TEST_F(ProxyTest, HttpsThroughConnectReachesAnAllowedName) {
  start({"pkgs.egress.test:443"});
  auto r = curl({"-x", http_proxy(), "https://pkgs.egress.test/hello.txt"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hello through the proxy\n");
  r = curl({"-x", http_proxy(), "-o", "/dev/null", "https://pkgs.egress.test/big.bin"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  proxy_->stop();
  const auto report = proxy_->report();
  ASSERT_THAT(report.traffic, SizeIs(1));
  EXPECT_EQ(report.traffic[0].destination, "pkgs.egress.test:443");
  EXPECT_EQ(report.traffic[0].connections, 2u);
  // The TLS records carry the file and more; the requests are a few hundred bytes.
  EXPECT_GT(report.traffic[0].bytes_in, big_.size());
  EXPECT_GT(report.traffic[0].bytes_out, 200u);
  EXPECT_LT(report.traffic[0].bytes_out, 64u << 10);
  EXPECT_THAT(report.refused, SizeIs(0));
}

TEST_F(ProxyTest, PlainHttpUrlsAndSocks5WithRemoteNames) {
  start({"pkgs.egress.test:80", "*.egress.test:443"});
  auto r = curl({"-x", http_proxy(), "http://pkgs.egress.test/hello.txt"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hello through the proxy\n");
  // A POST's body goes through too (relayed after the rewritten head).
  r = curl({"-x", http_proxy(), "-o", "/dev/null", "-w", "%{http_code}", "--data-binary",
            "@" + (net_->root() / "www" / "hello.txt").string(),
            "http://pkgs.egress.test/hello.txt"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "501") << "python's http.server answers POST with 501";
  r = curl({"-x", socks_proxy(), "https://other.egress.test/hello.txt"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hello through the proxy\n");
  proxy_->stop();
  const auto report = proxy_->report();
  ASSERT_THAT(report.traffic, SizeIs(2));
  EXPECT_EQ(report.traffic[0].destination, "other.egress.test:443");
  EXPECT_EQ(report.traffic[1].destination, "pkgs.egress.test:80");
  EXPECT_EQ(report.traffic[1].connections, 2u);
}

TEST_F(ProxyTest, NamesPortsAndAddressesNotAllowedAreRefusedAndRecorded) {
  start({"pkgs.egress.test:443"});
  auto r = curl({"-x", http_proxy(), "https://other.egress.test/hello.txt"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("403"));
  // A plain http:// URL is answered 403 by the proxy itself, with the reason as its body.
  r = curl({"-x", http_proxy(), "-w", "%{http_code}", "http://pkgs.egress.test/hello.txt"});
  EXPECT_THAT(r.out, HasSubstr("not in the task's allow-list"));
  EXPECT_THAT(r.out, ::testing::EndsWith("403"));
  // The allowed server by its address: not what the allow-list names.
  r = curl({"-x", http_proxy(), "-k", fmt::format("https://{}/hello.txt", net_->server_ip())});
  EXPECT_NE(r.exit_code, 0);
  r = curl({"-x", socks_proxy(), "https://other.egress.test/hello.txt"});
  EXPECT_NE(r.exit_code, 0);
  proxy_->stop();
  const auto report = proxy_->report();
  EXPECT_THAT(report.traffic, SizeIs(0));
  ASSERT_THAT(report.refused, SizeIs(4));
  EXPECT_EQ(report.refused[0].destination, "other.egress.test:443");
  EXPECT_EQ(report.refused[0].protocol, "connect");
  EXPECT_EQ(report.refused[1].destination, "pkgs.egress.test:80");
  EXPECT_EQ(report.refused[1].protocol, "http");
  EXPECT_EQ(report.refused[2].destination, net_->server_ip() + ":443");
  EXPECT_EQ(report.refused[3].protocol, "socks5");
  for (const auto& refusal : report.refused) {
    EXPECT_EQ(refusal.reason, "not in the task's allow-list");
    EXPECT_LE(refusal.at, std::chrono::system_clock::now());
  }
}

TEST_F(ProxyTest, AllowedNamesThatResolveToForbiddenAddressesAreRefused) {
  // The allow-list names them; what they resolve to is the host's loopback, a metadata
  // endpoint, the host's own address: DNS rebinding into the host.
  start({"rebind.egress.test:443", "metadata.egress.test:80", "hostside.egress.test:443",
         "127.0.0.1:443"});
  // The ledger's reasons tell a refusal from a failed connection (nothing listens there).
  auto r = curl({"-x", http_proxy(), "https://rebind.egress.test/"});
  EXPECT_NE(r.exit_code, 0);
  r = curl(
      {"-x", http_proxy(), "-w", "%{http_code}", "http://metadata.egress.test/latest/meta-data/"});
  EXPECT_THAT(r.out, HasSubstr("169.254.169.254"));
  EXPECT_THAT(r.out, ::testing::EndsWith("403"));
  r = curl({"-x", socks_proxy(), "https://hostside.egress.test/"});
  EXPECT_NE(r.exit_code, 0);
  r = curl({"-x", http_proxy(), "https://127.0.0.1/"});
  EXPECT_NE(r.exit_code, 0);
  proxy_->stop();
  const auto report = proxy_->report();
  ASSERT_THAT(report.refused, SizeIs(4));
  EXPECT_THAT(report.refused[0].reason, HasSubstr("resolves to loopback (127.0.0.1)"));
  EXPECT_THAT(report.refused[1].reason, HasSubstr("link-local"));
  EXPECT_THAT(report.refused[2].reason, HasSubstr("worker's host"));
  EXPECT_THAT(report.refused[3].reason, HasSubstr("the address is loopback"));
  EXPECT_THAT(report.traffic, SizeIs(0));
}

// SOCKS5 UDP ASSOCIATE (a DNS query or QUIC through the proxy) is refused with "command not
// supported", and recorded.
TEST_F(ProxyTest, Socks5UdpAssociateIsRefused) {
  start({"pkgs.egress.test:443"});
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port_);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const unsigned char greeting[] = {5, 1, 0};
  ASSERT_EQ(::write(fd, greeting, sizeof greeting), 3);
  unsigned char answer[16];
  ASSERT_EQ(::read(fd, answer, 2), 2);
  EXPECT_EQ(answer[1], 0);
  const unsigned char udp[] = {5, 3, 0, 1, 0, 0, 0, 0, 0, 53};
  ASSERT_EQ(::write(fd, udp, sizeof udp), static_cast<ssize_t>(sizeof udp));
  ASSERT_EQ(::read(fd, answer, 10), 10);
  EXPECT_EQ(answer[1], static_cast<unsigned char>(socks5::Reply::kCommandNotSupported));
  ::close(fd);
  proxy_->stop();
  const auto report = proxy_->report();
  ASSERT_THAT(report.refused, SizeIs(1));
  EXPECT_THAT(report.refused[0].reason, HasSubstr("UDP ASSOCIATE"));
}

TEST(Socks5, ParsesPiecesAndRefusesGarbage) {
  using socks5::Parse;
  const unsigned char greeting[] = {5, 2, 2, 0};
  EXPECT_EQ(socks5::parse_greeting(std::span(greeting, 2)).state, Parse::kNeedMore);
  auto g = socks5::parse_greeting(greeting);
  EXPECT_EQ(g.state, Parse::kDone);
  EXPECT_TRUE(g.no_auth_offered);
  EXPECT_EQ(g.consumed, 4u);
  const unsigned char bad[] = {4, 1, 0};
  EXPECT_EQ(socks5::parse_greeting(bad).state, Parse::kBad);
  const unsigned char name[] = {5, 1, 0, 3, 5, 'a', '.', 'c', 'o', 'm', 1, 187};
  auto r = socks5::parse_request(name);
  EXPECT_EQ(r.state, Parse::kDone);
  EXPECT_EQ(r.host, "a.com");
  EXPECT_EQ(r.port, 443);
  EXPECT_EQ(socks5::parse_request(std::span(name, 8)).state, Parse::kNeedMore);
  const unsigned char v6[] = {5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80};
  EXPECT_EQ(socks5::parse_request(v6).host, "::1");
  const unsigned char type9[] = {5, 1, 0, 9, 0, 0};
  r = socks5::parse_request(type9);
  EXPECT_EQ(r.state, Parse::kBad);
  EXPECT_EQ(r.error, socks5::Reply::kAddressTypeNotSupported);
}

}  // namespace
}  // namespace tamma::egress
