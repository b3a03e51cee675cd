#pragma once
// The egress proxy's listening socket, made inside a task's network namespace: a socket stays
// in the namespace it was created in, so the worker's proxy (in the host's namespace) serves
// connections the task makes to its own loopback, and nothing of the proxy runs where the task
// could kill it or reach past it. No Unix socket and no forwarder process are needed.

#include <cstdint>

#include "common/unique_fd.h"

namespace tamma::egress {

struct Listener {
  UniqueFd fd;
  std::uint16_t port = 0;  // on 127.0.0.1 inside the namespace
};

// Binds 127.0.0.1 (an ephemeral port) in the network namespace `netns_fd` (from a thread that
// enters it and exits; the caller's namespaces are untouched), or in the caller's own
// namespace when netns_fd is -1. Throws Error(kSandboxSetup).
Listener listen_in_namespace(int netns_fd);

}  // namespace tamma::egress
