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

// Parent side: the compiled filter for this machine's architecture, built once per process
// with libseccomp. Throws Error(kSandboxSetup) when libseccomp cannot build it.
std::shared_ptr<const SeccompProgram> task_seccomp_program();

// Whether this kernel can install seccomp filters.
bool seccomp_available();

// Child side (raw system call): installs `program` on the calling thread. no_new_privs must
// already be set. Returns 0 or an errno.
int install_seccomp(const sock_fprog& program);

}  // namespace tamma::sandbox
