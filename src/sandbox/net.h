#pragma once
// Networking of a task without network access: a fresh network namespace has only a
// loopback interface, and it starts down.

namespace tamma::sandbox {

// Child side (raw system calls only): brings "lo" up in the current network namespace.
// Returns 0 or an errno.
int bring_up_loopback();

}  // namespace tamma::sandbox
