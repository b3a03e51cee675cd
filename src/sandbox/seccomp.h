#pragma once
// The system call filter of a task: everything is allowed except what could reach the
// kernel's shared state (mounts, namespaces, modules, keys, clocks, BPF, tracing other
// processes). Denied calls fail with EPERM; a foreign ABI kills the process.

#include <linux/filter.h>

#include <memory>
#include <vector>

namespace tamma::sandbox {

struct SeccompProgram {
  std::vector<sock_filter> instructions;
  sock_fprog program{};  // points into `instructions`
};

// Additions for the unprivileged tier (ADR 0030), where no namespace backs the filter.
struct SeccompOptions {
  // io_uring_setup/enter/register EPERM: IORING_OP_SOCKET and the like bypass the argument
  // checks below, and a default container's profile may allow io_uring (Docker 20.10 does).
  bool deny_io_uring = false;
  // socket(AF_INET|AF_INET6|AF_PACKET) EACCES, and the same through socketcall: "no network"
  // without a network namespace, so no loopback either.
  bool deny_inet = false;
};

// Parent side: the compiled filter for this machine's architecture, built once per process
// (per options) with libseccomp. Throws Error(kSandboxSetup) when libseccomp cannot build it.
std::shared_ptr<const SeccompProgram> task_seccomp_program(const SeccompOptions& options = {});

// Whether this kernel can install seccomp filters.
bool seccomp_available();

// Child side (raw system call): installs `program` on the calling thread. no_new_privs must
// already be set. Returns 0 or an errno.
int install_seccomp(const sock_fprog& program);

}  // namespace tamma::sandbox
