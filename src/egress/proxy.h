#pragma once
// The egress proxy of one task (ADR 0032): HTTP CONNECT, plain-HTTP absolute-form requests and
// SOCKS5 CONNECT on one port, the protocol told by the first byte (5 is SOCKS5). It admits a
// destination only when it matches the task's allow-list by name (or address literal), resolves
// names itself, refuses every resolved address the address policy forbids (so no name leads
// to the host's loopback or a metadata endpoint), and relays bytes with splice(2). Every
// refusal and every byte carried is in its Ledger.
//
// One thread runs the proxy's event loop; names are resolved on Asio's resolver thread.

#include <chrono>
#include <cstddef>
#include <memory>
#include <vector>

#include "common/unique_fd.h"
#include "egress/address_policy.h"
#include "egress/destination.h"
#include "egress/ledger.h"

namespace tamma::egress {

struct ProxyOptions {
  std::vector<Destination> allow;
  AddressPolicy addresses;
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(30)};
  // Connections open at once; more are closed at once (a task forking clients is bounded by
  // its pids limit, but each connection costs the worker two sockets and two pipes).
  std::size_t max_connections = 512;
  std::size_t max_header_bytes = 16 * 1024;  // an HTTP request head, as nginx's default
};

class Proxy {
 public:
  explicit Proxy(ProxyOptions options);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Serves a listening TCP socket (listener.h); may be called before or after start().
  void serve(UniqueFd listener);
  void start();
  // Stops the event loop and joins its thread: no byte moves and nothing is accepted after it
  // returns, and report() is final. Connections and listeners are closed when the Proxy is
  // destroyed. Idempotent.
  void stop();
  [[nodiscard]] LedgerReport report() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tamma::egress
