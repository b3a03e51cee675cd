#pragma once
// Networking of a task without network access: a network namespace with only a loopback
// interface, either fresh (made by clone3) or leased from a pool the worker keeps.
//
// Making a network namespace and tearing it down is the dearest part of a sandbox's start
// (about 0.3 ms of the kernel's time here, more than the pid, mount, ipc and uts namespaces
// together). A namespace whose processes are all gone holds nothing of them: their sockets
// closed with them, and a task, without capabilities, cannot change addresses, routes,
// filters or sysctls. So a root worker reuses them, one task at a time (ADR 0018).

#include "common/unique_fd.h"

namespace tamma::sandbox {

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
  // For a sandbox whose PID 1 could not be reaped: its processes may still use the
  // namespace, which must then never serve another task.
  void abandon() { fd_.reset(); }

 private:
  friend NetNamespaceLease lease_net_namespace();
  explicit NetNamespaceLease(UniqueFd fd) : fd_(std::move(fd)) {}
  void give_back();
  UniqueFd fd_;
};

// An idle namespace of the pool, or a new one. Throws Error(kSandboxSetup).
NetNamespaceLease lease_net_namespace();

}  // namespace tamma::sandbox
