#include "worker/workspace_files.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/error.h"
#include "common/json_text.h"
#include "protocol/task_result.h"

namespace tamma::worker {
namespace {

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto part = path.substr(0, slash);
    if (!part.empty() && part != ".") parts.push_back(part);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

bool match_parts(const std::vector<std::string_view>& pat, std::size_t pi,
                 const std::vector<std::string_view>& path, std::size_t si) {
  if (pi == pat.size()) return si == path.size();
  if (pat[pi] == "**") {
    for (std::size_t skip = si; skip <= path.size(); ++skip) {
      if (match_parts(pat, pi + 1, path, skip)) return true;
    }
    return false;
  }
  if (si == path.size()) return false;
  const std::string p(pat[pi]);
  const std::string s(path[si]);
  if (::fnmatch(p.c_str(), s.c_str(), FNM_PERIOD) != 0) return false;
  return match_parts(pat, pi + 1, path, si + 1);
}

// openat2 refuses every symlink and any escape from the directory in the kernel, so no
// component can be swapped for a link between a check and the open (Linux 5.6). Older kernels
// get O_NOFOLLOW on the last component, after a walk that never entered a linked directory.
int open_beneath(int directory, const std::string& relative) {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  const long fd = ::syscall(SYS_openat2, directory, relative.c_str(), &how, sizeof how);
  if (fd >= 0 || errno != ENOSYS) return static_cast<int>(fd);
  return ::openat(directory, relative.c_str(),
                  O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view path) {
  return match_parts(split(pattern), 0, split(path), 0);
}

WorkspaceMatches find_workspace_files(const std::filesystem::path& workspace,
                                      const std::vector<std::string>& globs, bool links) {
  namespace fs = std::filesystem;
  WorkspaceMatches out;
  std::vector<bool> matched(globs.size(), false);
  std::error_code ec;
  // recursive_directory_iterator does not follow directory symlinks by default.
  for (fs::recursive_directory_iterator it(workspace, fs::directory_options::none, ec), end;
       !ec && it != end; it.increment(ec)) {
    const fs::file_status status = it->symlink_status();
    const bool is_link = links && fs::is_symlink(status);
    if (!fs::is_regular_file(status) && !is_link) continue;
    // Lexically: fs::relative would resolve a link to its target.
    const std::string relative = it->path().lexically_relative(workspace).generic_string();
    std::string target;
    if (is_link) {
      std::error_code read_ec;
      target = fs::read_symlink(it->path(), read_ec).string();
      if (read_ec || protocol::artifact_link_problem(relative, target)) continue;
    }
    std::vector<std::size_t> hits;
    for (std::size_t i = 0; i < globs.size(); ++i) {
      if (glob_match(globs[i], relative)) hits.push_back(i);
    }
    if (hits.empty()) continue;
    for (auto i : hits) matched[i] = true;
    if (is_link) {
      out.links.push_back({relative, std::move(target)});
    } else {
      out.files.push_back(relative);
    }
  }
  if (ec) {
    throw Error(ErrorKind::kInfrastructure, "workspace_walk_failed",
                "listing the workspace " + workspace.string() + ": " + ec.message());
  }
  std::sort(out.files.begin(), out.files.end());
  std::sort(out.links.begin(), out.links.end(),
            [](const WorkspaceLink& a, const WorkspaceLink& b) { return a.path < b.path; });
  for (std::size_t i = 0; i < globs.size(); ++i) {
    if (!matched[i]) out.unmatched.push_back(globs[i]);
  }
  return out;
}

UniqueFd open_in_workspace(const std::filesystem::path& workspace, const std::string& relative,
                           std::string_view what) {
  UniqueFd directory(::open(workspace.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!directory) throw_errno("opening the workspace " + workspace.string());
  UniqueFd fd(open_beneath(directory.get(), relative));
  const std::string quoted = json_quote(relative);
  if (!fd) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      throw Error(ErrorKind::kTaskFailed, "reports_missing",
                  fmt::format("{} {} does not exist in the workspace", what, quoted));
    }
    if (err == ELOOP || err == EXDEV) {
      throw Error(ErrorKind::kTaskFailed, "report_malformed",
                  fmt::format("{} {} is reached through a symlink, which the worker does not "
                              "follow",
                              what, quoted));
    }
    throw_errno(fmt::format("opening {} {} in the workspace", what, quoted), err);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat of {} {}", what, quoted));
  if (!S_ISREG(st.st_mode)) {
    throw Error(ErrorKind::kTaskFailed, "report_malformed",
                fmt::format("{} {} is not a regular file", what, quoted));
  }
  return fd;
}

std::string read_workspace_file(const std::filesystem::path& workspace, const std::string& relative,
                                std::string_view what, std::uint64_t max_bytes) {
  UniqueFd fd = open_in_workspace(workspace, relative, what);
  std::string content;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(fmt::format("reading {} {}", what, json_quote(relative)));
    if (n == 0) break;
    if (content.size() + static_cast<std::size_t>(n) > max_bytes) {
      throw Error(ErrorKind::kTaskFailed, "report_malformed",
                  fmt::format("{} {} is larger than {} bytes, more than a report should be", what,
                              json_quote(relative), max_bytes));
    }
    content.append(buffer, static_cast<std::size_t>(n));
  }
  return content;
}

}  // namespace tamma::worker
