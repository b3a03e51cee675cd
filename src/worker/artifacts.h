#pragma once
// Files a task leaves for the outside world, matched by glob inside the workspace.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "protocol/task_result.h"
#include "worker/workspace_files.h"

namespace tamma::worker {

// Defaults of the artifactMaxFileSize, artifactMaxTotalSize and artifactMaxFiles settings.
struct ArtifactLimits {
  std::uint64_t max_file_bytes = 1ull << 30;
  std::uint64_t max_total_bytes = 2ull << 30;
  std::uint64_t max_files = 1000;
};

std::string sha256_file(const std::filesystem::path& file);

// Regular files under `workspace` matching any glob, by relative path, sorted, each with its
// size and SHA-256. Symlinks are never followed, so nothing outside the workspace can be
// collected: a symlink whose target stays inside the workspace by its text is recorded as a
// link (Artifact::link), any other is not matched. With `copy_to`, each file is copied there
// under its relative path, and each link made again as a link.
//
// Throws Error(kTaskFailed) before anything is hashed or copied: "artifacts_missing" naming
// every glob that matched no file, "artifact_limit_exceeded" naming the file and the limit
// when one is too big, or the files are too many or too big together; Error(kConfig,
// "invalid_task_spec") for a glob that is absolute or has a ".." component.
//
// With `missing_ok` a glob that matched nothing is skipped: after a failed step the files it
// would have made are most likely absent, and that is not a second error.
std::vector<protocol::Artifact> collect_artifacts(
    const std::filesystem::path& workspace, const std::vector<std::string>& globs,
    const std::optional<std::filesystem::path>& copy_to, const ArtifactLimits& limits = {},
    bool missing_ok = false);

}  // namespace tamma::worker
