#pragma once
// The task's filesystem on the host (workspace, HOME, /tmp, /var/tmp), optionally with a
// kernel-enforced disk limit.

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

// The task's filesystem, <root>/<task_id>, holds everything the task may write, so that one
// disk limit covers all of it: the checkout and HOME alike, as on hosted CI runners, where
// caches in HOME do not land in the checkout (`git status` stays clean) yet use the job's disk.
inline constexpr const char* kWorkDir = "work";       // the workspace itself: path()
inline constexpr const char* kHomeDir = "home";       // the task's HOME
inline constexpr const char* kTmpDir = "tmp";         // its /tmp
inline constexpr const char* kVarTmpDir = "var-tmp";  // its /var/tmp

class Workspace;

// An empty task filesystem made before its task is known, while a daemon's slot waits for
// work: Workspace::create renames it into place, so a task's start does not wait for the five
// directories (most of a workspace's making). Named <root>/spare-<random> and held by an
// flock as a workspace is, so the sweep of a later worker removes one that a crash left;
// removed by its destructor unless a workspace took it.
class SpareWorkspace {
 public:
  static std::unique_ptr<SpareWorkspace> make(const std::filesystem::path& root);
  // A finished task's filesystem made into a spare (ADR 0038): what the task wrote is removed,
  // the four directories are kept, given back their owner, mode and times and stripped of the
  // extended attributes (ACLs among them) the task set; then it is renamed to a spare's name.
  // Only when each directory is then what make() gives (same inode flags, project and
  // security attributes as a fresh one, no larger): otherwise, and for a workspace with a
  // disk limit or one kept, `finished` is destroyed as ever (everything removed) and null
  // returned. Never throws.
  static std::unique_ptr<SpareWorkspace> recycle(std::unique_ptr<Workspace> finished);
  ~SpareWorkspace();
  SpareWorkspace(const SpareWorkspace&) = delete;
  SpareWorkspace& operator=(const SpareWorkspace&) = delete;

  // <root>/spare-<random>, holding the four directories.
  [[nodiscard]] const std::filesystem::path& dir() const;

  struct Parts;

 private:
  explicit SpareWorkspace(std::unique_ptr<Parts> parts);
  friend class Workspace;
  std::unique_ptr<Parts> parts_;
};

// Creates <root>/<task_id> holding the four directories above, all empty (work/ and home/
// 0755, the temporary ones 01777 as /tmp is). With a disk limit, <root>/<task_id> is a mounted
// per-task ext4 image of that size (<root>/.<task_id>.img, see docs/adr), so the kernel
// answers ENOSPC for bytes and for inodes alike, wherever in it the task writes. Destruction
// unmounts and removes everything, the image and the lock file included.
class Workspace {
 public:
  virtual ~Workspace() = default;
  // `spare`, when given, becomes the workspace if it can (same root, no disk limit); when it
  // cannot, it is removed on return and a fresh one is made as without it.
  static std::unique_ptr<Workspace> create(const std::filesystem::path& root,
                                           const std::string& task_id,
                                           std::optional<std::uint64_t> disk_limit_bytes,
                                           std::unique_ptr<SpareWorkspace> spare = nullptr);
  // Removes workspaces (and their images) whose worker is gone: each live workspace holds an
  // flock on <root>/.<task_id>.lock for its whole life, so a lock that can be taken marks a
  // leftover of a crashed worker. Returns how many were removed.
  static std::size_t remove_stale(const std::filesystem::path& root);

  // The workspace (the checkout): <root>/<task_id>/work.
  [[nodiscard]] virtual const std::filesystem::path& path() const = 0;
  // <root>/<task_id>, holding path(), home/, tmp/ and var-tmp/.
  [[nodiscard]] virtual const std::filesystem::path& task_dir() const = 0;
  // What the task wrote in all four directories. Without a disk limit this walks the whole
  // tree: once per task, for the result.
  [[nodiscard]] virtual DiskUsage usage() const = 0;
  // Whether the disk limit was reached (usage().full), answered without a walk: asked after
  // every step, where a walk of a checkout with its dependencies (hundreds of thousands of
  // files) would cost more than most steps. Always false without a limit.
  [[nodiscard]] virtual bool full() const = 0;
  [[nodiscard]] virtual std::optional<std::uint64_t> limit() const = 0;
  // Keeps the task's files (work/, home/, tmp/, var-tmp/) at `dest`, which must not exist
  // (its parents are made), for someone to look at after the task, instead of removing them
  // with the workspace: moved when they can be, else copied (a disk-limited image is
  // unmounted and deleted as ever). Fifos, sockets and devices are not kept. Returns dest.
  virtual std::filesystem::path keep(const std::filesystem::path& dest) = 0;
};

}  // namespace tamma::sandbox
