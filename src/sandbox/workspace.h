#pragma once
// The task's working directory on the host, optionally with a kernel-enforced disk limit.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace tamma::sandbox {

struct DiskUsage {
  std::uint64_t bytes = 0;   // bytes of the files the task wrote
  std::uint64_t inodes = 0;  // files and directories
  bool full = false;         // the limit (space or inodes) was reached
};

// Creates <root>/<task_id>, empty. With a disk limit, the directory is a mounted
// per-task ext4 image of that size (<root>/.<task_id>.img, see docs/adr), so the kernel
// answers ENOSPC for bytes and for inodes alike. Destruction unmounts and removes everything,
// the image and the lock file included.
class Workspace {
 public:
  virtual ~Workspace() = default;
  static std::unique_ptr<Workspace> create(const std::filesystem::path& root,
                                           const std::string& task_id,
                                           std::optional<std::uint64_t> disk_limit_bytes);
  // Removes workspaces (and their images) whose worker is gone: each live workspace holds an
  // flock on <root>/.<task_id>.lock for its whole life, so a lock that can be taken marks a
  // leftover of a crashed worker. Returns how many were removed.
  static std::size_t remove_stale(const std::filesystem::path& root);

  [[nodiscard]] virtual const std::filesystem::path& path() const = 0;
  [[nodiscard]] virtual DiskUsage usage() const = 0;
  [[nodiscard]] virtual std::optional<std::uint64_t> limit() const = 0;
};

}  // namespace tamma::sandbox
