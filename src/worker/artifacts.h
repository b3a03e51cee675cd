#pragma once
// Files a task leaves for the outside world, matched by glob inside the workspace.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "protocol/task_result.h"

namespace tamma::worker {

// Glob with "*", "?", "[...]" inside one path segment and "**" across segments.
bool glob_match(std::string_view pattern, std::string_view path);

std::string sha256_file(const std::filesystem::path& file);

// Regular files under `workspace` matching any glob, by relative path, sorted. Symlinks are
// never followed, so nothing outside the workspace can be collected. With `copy_to`, each file
// is copied there under its relative path.
std::vector<protocol::Artifact> collect_artifacts(const std::filesystem::path& workspace,
                                                  const std::vector<std::string>& globs,
                                                  const std::optional<std::filesystem::path>& copy_to);

}  // namespace tamma::worker
