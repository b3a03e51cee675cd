#include "worker/artifacts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <memory>

#include <fmt/format.h>

#include "common/error.h"
#include "common/json_text.h"
#include "common/units.h"
#include "protocol/task_spec.h"
#include "worker/sha256.h"

namespace tamma::worker {
namespace {

void write_all(int fd, const char* data, std::size_t size, const std::filesystem::path& target) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("writing artifact copy " + target.string());
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

// Hashes the file and copies it in one read, from the descriptor that was checked.
protocol::Artifact hash_and_copy(const std::filesystem::path& workspace,
                                 const std::string& relative,
                                 const std::optional<std::filesystem::path>& copy_to) {
  UniqueFd in = open_in_workspace(workspace, relative, "artifact");
  UniqueFd out;
  std::filesystem::path target;
  if (copy_to) {
    struct stat st {};
    if (::fstat(in.get(), &st) != 0) throw_errno("stat of artifact " + relative);
    target = *copy_to / relative;
    std::filesystem::create_directories(target.parent_path());
    out.reset(::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) throw_errno("creating artifact copy " + target.string());
    // A built program stays executable; set-id bits and write access for others do not come
    // along.
    if (::fchmod(out.get(), st.st_mode & 0755) != 0) {
      throw_errno("setting the mode of artifact copy " + target.string());
    }
  }
  Sha256 digest;
  protocol::Artifact artifact;
  artifact.path = relative;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(in.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("reading artifact " + relative);
    if (n == 0) break;
    digest.update(buffer, static_cast<std::size_t>(n));
    if (out) write_all(out.get(), buffer, static_cast<std::size_t>(n), target);
    artifact.size += static_cast<std::uint64_t>(n);
  }
  artifact.sha256 = digest.hex();
  return artifact;
}

// A symlink whose target stays inside the workspace (find_workspace_files checked it): its
// target text is what it holds, and with `copy_to` it is made again there as a link. Never
// followed: a link to a file that is itself no artifact just dangles in the copy.
protocol::Artifact record_link(const WorkspaceLink& link,
                               const std::optional<std::filesystem::path>& copy_to) {
  protocol::Artifact artifact;
  artifact.path = link.path;
  artifact.link = link.target;
  Sha256 digest;
  digest.update(link.target.data(), link.target.size());
  artifact.sha256 = digest.hex();
  if (copy_to) {
    const std::filesystem::path target = *copy_to / link.path;
    std::filesystem::create_directories(target.parent_path());
    if (::symlink(link.target.c_str(), target.c_str()) != 0) {
      throw_errno("creating artifact link " + target.string());
    }
  }
  return artifact;
}

[[noreturn]] void limit_exceeded(const std::string& message) {
  throw Error(ErrorKind::kTaskFailed, "artifact_limit_exceeded",
              message +
                  "; nothing was collected (raise the limit in the worker configuration, or "
                  "narrow the artifact globs)");
}

}  // namespace

std::string sha256_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw Error(ErrorKind::kInfrastructure, "artifact_unreadable",
                "cannot read artifact " + file.string());
  Sha256 digest;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    digest.update(buffer, static_cast<std::size_t>(in.gcount()));
  }
  return digest.hex();
}

std::vector<protocol::Artifact> collect_artifacts(
    const std::filesystem::path& workspace, const std::vector<std::string>& globs,
    const std::optional<std::filesystem::path>& copy_to, const ArtifactLimits& limits,
    bool missing_ok) {
  // The spec parser refuses these already; a spec built in code must not get past either.
  for (const auto& glob : globs) {
    if (auto problem = protocol::workspace_glob_problem(glob)) {
      throw Error(ErrorKind::kConfig, "invalid_task_spec", "artifact glob " + *problem);
    }
  }
  const WorkspaceMatches matches = find_workspace_files(workspace, globs, /*links=*/true);
  if (!matches.unmatched.empty() && !missing_ok) {
    std::string list;
    for (const auto& glob : matches.unmatched)
      list += (list.empty() ? "" : ", ") + json_quote(glob);
    throw Error(ErrorKind::kTaskFailed, "artifacts_missing",
                fmt::format("artifact glob{} {} matched no file in the workspace",
                            matches.unmatched.size() > 1 ? "s" : "", list));
  }
  // Every limit is checked before anything is hashed or copied, so that a refused set leaves
  // no half-copied directory behind.
  if (matches.files.size() + matches.links.size() > limits.max_files) {
    limit_exceeded(
        fmt::format("the artifact globs matched {} files, more than the {} allowed "
                    "(artifactMaxFiles)",
                    matches.files.size() + matches.links.size(), limits.max_files));
  }
  std::uint64_t total = 0;
  for (const auto& relative : matches.files) {
    struct stat st {};
    if (::lstat((workspace / relative).c_str(), &st) != 0) {
      throw_errno("stat of artifact " + relative);
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (size > limits.max_file_bytes) {
      limit_exceeded(fmt::format(
          "artifact {} is {} ({} bytes), more than artifactMaxFileSize "
          "({})",
          json_quote(relative), format_size(size), size, format_size(limits.max_file_bytes)));
    }
    total += size;
  }
  if (total > limits.max_total_bytes) {
    limit_exceeded(fmt::format(
        "the {} artifacts together are {} ({} bytes), more than "
        "artifactMaxTotalSize ({})",
        matches.files.size(), format_size(total), total, format_size(limits.max_total_bytes)));
  }
  std::vector<protocol::Artifact> found;
  found.reserve(matches.files.size() + matches.links.size());
  for (const auto& relative : matches.files) {
    found.push_back(hash_and_copy(workspace, relative, copy_to));
  }
  for (const auto& link : matches.links) found.push_back(record_link(link, copy_to));
  std::sort(
      found.begin(), found.end(),
      [](const protocol::Artifact& a, const protocol::Artifact& b) { return a.path < b.path; });
  return found;
}

}  // namespace tamma::worker
