#pragma once
// Reading what a finished task left in its workspace (artifacts, test and scan reports). The
// worker does this as root on the host, so nothing here follows a symlink: a task cannot point
// it at a file outside its workspace.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace tamma::worker {

// Glob with "*", "?", "[...]" inside one path segment and "**" across segments.
bool glob_match(std::string_view pattern, std::string_view path);

struct WorkspaceLink {
  std::string path;    // relative to the workspace
  std::string target;  // as the link holds it
};

struct WorkspaceMatches {
  std::vector<std::string> files;      // relative paths of regular files, sorted, each once
  std::vector<WorkspaceLink> links;    // with `links`: matched symlinks, sorted by path
  std::vector<std::string> unmatched;  // the globs that matched nothing
};

// Regular files under `workspace` matching any glob. Devices and fifos are never matched, nor
// are symlinks, unless `links`: then a symlink (to a file or a directory, never followed) whose
// target stays inside the workspace by its text alone (protocol::artifact_link_problem) is
// matched as a link; any other symlink still is not.
WorkspaceMatches find_workspace_files(const std::filesystem::path& workspace,
                                      const std::vector<std::string>& globs, bool links = false);

// Opens a regular file by its path relative to the workspace, refusing any symlink on the
// way. Throws Error(kTaskFailed, "reports_missing") when it does not exist (`what` names it:
// "SARIF file"), Error(kTaskFailed, "report_malformed") when it is not a regular file or is
// reached through a symlink.
UniqueFd open_in_workspace(const std::filesystem::path& workspace, const std::string& relative,
                           std::string_view what);

// Reads a whole workspace file of at most `max_bytes` (else Error(kTaskFailed,
// "report_malformed") saying so).
std::string read_workspace_file(const std::filesystem::path& workspace, const std::string& relative,
                                std::string_view what, std::uint64_t max_bytes);

}  // namespace tamma::worker
