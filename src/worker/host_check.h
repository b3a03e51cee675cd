#pragma once
// Is this host fit to run a task? Asked after a task did not succeed (a failure the host caused
// is retryable: the orchestrator runs the task again on another worker), by the daemon while it
// stands down after several such failures, and by `tamma-worker doctor`.
//
// It checks what a task needs from the host and a task cannot use up by itself: free space and
// inodes on the filesystem of the workspace root, a small write there that reaches the disk,
// and free file descriptors in this process.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace tamma::worker {

struct HostCheckLimits {
  std::uint64_t min_free_disk_bytes = 32ULL << 20;
  std::uint64_t min_free_inodes = 1024;
  std::uint64_t min_free_descriptors = 32;
};

// What is wrong, in a sentence naming the resource and its figures; nullopt when nothing is.
// Never throws.
std::optional<std::string> host_problem(const std::filesystem::path& workspace_root,
                                        const HostCheckLimits& limits = {});

// Whether an error message is one of a host failure (ENOSPC, EIO, EMFILE, ...): the sandbox
// quotes errno's text in the errors it raises.
bool mentions_host_errno(const std::string& message);

}  // namespace tamma::worker
