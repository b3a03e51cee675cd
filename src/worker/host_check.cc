#include "worker/host_check.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

#include "common/error.h"
#include "common/units.h"

namespace tamma::worker {
namespace {

// The nearest existing directory: the workspace root is made on first use.
std::filesystem::path existing(std::filesystem::path dir) {
  std::error_code ec;
  while (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    if (dir == dir.parent_path()) break;
    dir = dir.parent_path();
  }
  return dir;
}

std::optional<std::string> disk_problem(const std::filesystem::path& dir,
                                        const HostCheckLimits& limits) {
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) != 0) {
    return fmt::format("cannot inspect the workspace filesystem: {}", std::strerror(errno));
  }
  const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free_bytes < limits.min_free_disk_bytes) {
    return fmt::format("the workspace filesystem has {} free (below {})", format_size(free_bytes),
                       format_size(limits.min_free_disk_bytes));
  }
  // Filesystems without inode accounting (btrfs, tmpfs without nr_inodes) report 0 files.
  if (fs.f_files > 0 && fs.f_favail < limits.min_free_inodes) {
    return fmt::format("the workspace filesystem has {} free inodes (below {})", fs.f_favail,
                       limits.min_free_inodes);
  }
  if ((fs.f_flag & ST_RDONLY) != 0) return std::string("the workspace filesystem is read-only");
  // A disk that fails writes (EIO) or went read-only underneath says so only when written.
  const auto probe = dir / fmt::format(".tamma-host-check-{}", ::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return fmt::format("cannot write in the workspace root: {}", std::strerror(errno));
  }
  static const std::string block(4096, 'x');
  std::optional<std::string> problem;
  if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size()) ||
      ::fsync(fd) != 0) {
    problem = fmt::format("writing in the workspace root fails: {}", std::strerror(errno));
  }
  ::close(fd);
  ::unlink(probe.c_str());
  return problem;
}

std::optional<std::string> descriptor_problem(const HostCheckLimits& limits) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return {};
  DIR* fds = ::opendir("/proc/self/fd");
  if (fds == nullptr) {
    if (errno == EMFILE || errno == ENFILE) {
      return fmt::format("no file descriptor is free (limit {})", limit.rlim_cur);
    }
    return {};
  }
  std::uint64_t open = 0;
  while (const dirent* entry = ::readdir(fds)) {
    if (entry->d_name[0] != '.') ++open;
  }
  ::closedir(fds);
  const std::uint64_t free = limit.rlim_cur > open ? limit.rlim_cur - open : 0;
  if (free < limits.min_free_descriptors) {
    return fmt::format("{} of {} file descriptors are free (below {})", free, limit.rlim_cur,
                       limits.min_free_descriptors);
  }
  return {};
}

}  // namespace

std::optional<std::string> host_problem(const std::filesystem::path& workspace_root,
                                        const HostCheckLimits& limits) {
  try {
    if (auto problem = descriptor_problem(limits)) return problem;
    return disk_problem(existing(workspace_root), limits);
  } catch (const std::exception& e) {
    return std::string("the host check failed: ") + e.what();
  }
}

bool mentions_host_errno(const std::string& message) {
  for (int err : {ENOSPC, EDQUOT, EIO, EROFS, EMFILE, ENFILE, ENOMEM}) {
    if (!is_host_errno(err)) continue;
    if (message.find(std::strerror(err)) != std::string::npos) return true;
    if (const char* desc = strerrordesc_np(err); desc && message.find(desc) != std::string::npos) {
      return true;
    }
  }
  return false;
}

}  // namespace tamma::worker
