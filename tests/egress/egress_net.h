#pragma once
// Real servers for the egress tests: a network namespace made by the test with a veth pair to
// the host (what a registry on the network looks like to the worker), HTTP and HTTPS servers
// inside it (python3's http.server, a certificate made with openssl), and names for them in a
// private /etc/hosts the whole test process sees (a mount namespace entered before main, so
// that glibc's resolver, which the proxy uses, reads it on every lookup).

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace tamma::testing {

// Why the fixture cannot work on this machine (not root, no `ip`, no python3, no openssl),
// or empty.
std::string egress_net_unavailable();

// Replaces the names of the process's private /etc/hosts ("10.1.2.3 name" lines).
void set_test_hosts(const std::vector<std::pair<std::string, std::string>>& names);
// The private hosts file on the host side (to bind-mount it for a worker child as well).
std::filesystem::path test_hosts_file();

class EgressNet {
 public:
  EgressNet();
  ~EgressNet();
  EgressNet(const EgressNet&) = delete;
  EgressNet& operator=(const EgressNet&) = delete;

  [[nodiscard]] const std::string& name() const { return ns_; }
  [[nodiscard]] const std::string& host_ip() const { return host_ip_; }      // the host's end
  [[nodiscard]] const std::string& server_ip() const { return server_ip_; }  // in the namespace
  [[nodiscard]] const std::filesystem::path& root() const { return dir_.path(); }  // web root
  [[nodiscard]] const std::filesystem::path& ca() const { return ca_; }
  // HTTP on port 80 and HTTPS on 443 of server_ip, serving root()/www for the names given
  // (the certificate names them); returns when both accept connections.
  void start_servers(const std::vector<std::string>& names);
  // Runs argv inside the namespace until it exits.
  ProcessResult exec(const std::vector<std::string>& argv);

 private:
  TempDir dir_;
  std::string ns_;
  std::string veth_host_;
  std::string host_ip_;
  std::string server_ip_;
  std::filesystem::path ca_;
  std::vector<std::unique_ptr<ChildProcess>> servers_;
};

}  // namespace tamma::testing
