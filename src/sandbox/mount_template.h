#pragma once
// The fixed part of the mount jail, built once and copied for each task.
//
// Most of a jail does not change from task to task: the tmpfs root, the read-only binds of
// the host's system directories, /dev. Built once in a mount namespace of its own, it is
// copied for a task by PID 1 with setns + unshare(CLONE_NEWNS), a copy of a dozen mounts
// without a path lookup; only the task's own file systems are then mounted (ADR 0019).
// Without the template every task replays the whole plan (mount.h), as a worker that is not
// root, or a kernel without the new mount API (5.12), still does.

#include <chrono>
#include <memory>
#include <string>

#include "common/unique_fd.h"
#include "sandbox/mount.h"

namespace tamma::sandbox {

struct MountTemplate {
  UniqueFd ns;  // the mount namespace, for setns(ns, CLONE_NEWNS)
  std::chrono::steady_clock::time_point built;
};

// The template for the binds and ids of `request` (its task's own paths are ignored), from a
// cache shared by every sandbox of this process: rebuilt after a few minutes, so that what the
// host mounts later below a bound directory shows up. Throws Error(kSandboxSetup).
std::shared_ptr<const MountTemplate> mount_template(const MountRequest& request);

// One of the task's own directories (MountPlan::trees of build_task_mount_plan) as a detached
// mount tree (private, nosuid, nodev) for kAttachTree. Throws Error(kSandboxSetup).
UniqueFd detached_tree(const std::string& directory);

// Whether this kernel has what templates need (open_tree, move_mount, mount_setattr).
bool mount_templates_supported();

}  // namespace tamma::sandbox
