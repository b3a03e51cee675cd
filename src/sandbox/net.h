#pragma once
// Networking of a task without network access: a network namespace with only a loopback
// interface, either fresh (made by clone3) or leased from a pool the worker keeps.
//
// Making a network namespace and tearing it down is the dearest part of a sandbox's start
// (about 0.3 ms of the kernel's time here, more than the pid, mount, ipc and uts namespaces
// together). A namespace whose processes are all gone holds nothing of them: their sockets
// closed with them, and a task, without capabilities, cannot change addresses, routes,
// filters or sysctls. So a root worker reuses them, one task at a time (ADR 0018).

#include <cstdint>
#include <string>

#include "common/unique_fd.h"

namespace tamma::sandbox {

// What a task sent that found no way out of a loopback-only network, from the namespace's own
// SNMP counters: packets and connection attempts with no route (IPv4 and IPv6 OutNoRoutes: a
// connect() or a DNS query to any address but loopback), and UDP datagrams to a loopback port
// nobody listens on (UDP NoPorts: a name server such as 127.0.0.53 on the host is not in the
// task's namespace). A hint for the task's result, not a security boundary.
class NetCounters {
 public:
  // Opens <proc_net>/snmp and snmp6 (proc_net: /proc/thread-self/net, /proc/PID/net); the
  // files keep reading the namespace they were opened in, even after its processes are gone.
  // An unopenable file counts nothing.
  static NetCounters open(const std::string& proc_net);
  NetCounters() = default;
  explicit operator bool() const { return snmp_.valid() || snmp6_.valid(); }
  // The counters' sum now; 0 without files.
  [[nodiscard]] std::uint64_t unreachable() const;

 private:
  UniqueFd snmp_;
  UniqueFd snmp6_;
};

// Sums the counters above in the text of /proc/net/snmp (`Ip:`/`Udp:` header and value
// lines) and /proc/net/snmp6 (`Name value` lines); exposed for tests.
std::uint64_t unreachable_in_snmp(const std::string& snmp, const std::string& snmp6);

// Child side (raw system calls only): brings "lo" up in the current network namespace.
// Returns 0 or an errno.
int bring_up_loopback();

// Exclusive use of a pooled network namespace (loopback up, TIME_WAIT off) until destroyed,
// when it goes back to the pool; a namespace a process may still be in is abandoned instead.
class NetNamespaceLease {
 public:
  NetNamespaceLease() = default;
  NetNamespaceLease(NetNamespaceLease&&) noexcept = default;
  NetNamespaceLease& operator=(NetNamespaceLease&& other) noexcept;
  NetNamespaceLease(const NetNamespaceLease&) = delete;
  NetNamespaceLease& operator=(const NetNamespaceLease&) = delete;
  ~NetNamespaceLease();

  explicit operator bool() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }  // for setns(fd, CLONE_NEWNET)
  // NetCounters::unreachable() of this namespace since it was leased: what this task sent.
  [[nodiscard]] std::uint64_t unreachable_since_lease() const;
  // For a sandbox whose PID 1 could not be reaped: its processes may still use the
  // namespace, which must then never serve another task.
  void abandon() { fd_.reset(); }

 private:
  friend NetNamespaceLease lease_net_namespace();
  NetNamespaceLease(UniqueFd fd, NetCounters counters, std::uint64_t baseline)
      : fd_(std::move(fd)), counters_(std::move(counters)), baseline_(baseline) {}
  void give_back();
  UniqueFd fd_;
  NetCounters counters_;
  std::uint64_t baseline_ = 0;        // counters_.unreachable() when leased
  mutable std::uint64_t latest_ = 0;  // as last read; the next lease's baseline
  mutable bool read_ = false;
};

// An idle namespace of the pool, or a new one. Throws Error(kSandboxSetup).
NetNamespaceLease lease_net_namespace();

// A new loopback-only namespace (loopback up, TIME_WAIT off) for the caller alone, never
// pooled: a task with an allow-list network gets one, where the egress proxy's listener
// lives for the task's lifetime. Throws Error(kSandboxSetup).
UniqueFd make_loopback_net_namespace();

}  // namespace tamma::sandbox
