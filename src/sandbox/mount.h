#pragma once
// The mount jail: a tmpfs root holding read-only binds of the host's system directories, the
// workspace, the task's own HOME, /tmp and /var/tmp, a fresh /proc, a minimal /dev with a
// devpts of its own, and passwd/group files naming the task's user, entered with pivot_root.
//
// The parent turns the policy into a flat list of operations with every path prepared
// (build_mount_plan); the child of clone3, already in its own mount namespace, replays it
// with raw system calls only (apply_mount_plan).

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace tamma::sandbox {

enum class MountOpKind {
  kMakePrivate,  // stop propagation both ways before touching anything
  kTmpfs,        // target, data, flags
  kMkdir,        // target, mode; an existing directory is fine
  kTouch,        // target: an empty file to bind a file over
  kSymlink,      // source = link text, target
  kBind,         // source, target, recursive; then attributes per `flags`
  kProc,         // target; tries hidepid=invisible, then hidepid=2, then none
  kRemountRo,    // target; flags (default read-only, nosuid, nodev)
  kPivot,        // target = new root; detaches the old root
  kAttachTree,   // target: moves detached tree number `tree` given to apply_mount_plan there
  kDeviceNode,   // target, mode (type and permissions), device
  kWriteFile,    // target, data (NUL-terminated), mode: a new file holding data
  kUnmount,      // target: detached (MNT_DETACH)
  kDevpts,       // target, data, flags: a devpts instance of its own
};

struct MountOp {
  MountOpKind kind;
  const char* source = nullptr;
  const char* target = nullptr;
  const char* data = nullptr;
  unsigned long flags = 0;  // MS_* for tmpfs; for binds, MS_RDONLY/MS_NOSUID/MS_NODEV/MS_NOEXEC
  mode_t mode = 0755;
  bool recursive = false;
  bool optional = false;  // a failure is ignored (e.g. a device the host lacks)
  dev_t device = 0;       // kDeviceNode
  int tree = 0;           // kAttachTree: index into the trees given to apply_mount_plan
};

// At most this many detached trees per plan: the workspace, HOME, /tmp and /var/tmp.
inline constexpr int kMaxMountTrees = 4;

struct MountPlan {
  std::vector<MountOp> ops;
  std::deque<std::string> strings;  // owns every path; deque keeps c_str() stable
  // Host directories the parent hands over as detached trees (open_tree), in the order of
  // their kAttachTree indices (build_task_mount_plan); empty for the other plans.
  std::vector<std::string> trees;
};

struct MountRequest {
  std::string root_mount_point;  // an existing host directory to mount the new root on
  std::vector<std::string> readonly_binds;
  std::vector<std::pair<std::string, std::string>> readonly_binds_at;  // host source, target
  std::string workspace;  // host path, bound read-write at kSandboxWorkspace
  // Host path holding the workspace and home/, tmp/, var-tmp/ (Policy::task_dir); empty: HOME,
  // /tmp and /var/tmp are tmpfs.
  std::string task_dir;
  bool tmp_on_tmpfs = false;  // /tmp and /var/tmp as tmpfs even with a task_dir
  std::uint64_t tmp_bytes = 0;
  // The task's ids, for the passwd and group files the jail shows (kSandboxUser).
  uid_t uid = 65534;
  gid_t gid = 65534;
  // Devices as nodes of their own (mknod: root only) rather than binds of the host's, which
  // are mounts every copy of the jail would carry and tear down.
  bool device_nodes = false;
};

// Parent side: inspects the host (which binds exist, which are symlinks) and lays out the
// operations. Throws Error(kSandboxSetup) for an unusable request (relative paths...).
MountPlan build_mount_plan(const MountRequest& request);

// The same jail in two parts (mount_template.h). The template: everything but the task's own
// file systems, read-only, pivoted into (only the binds and the ids of `request` are used).
// The task's part, applied inside a copy of the template: its workspace, HOME, /tmp and
// /var/tmp, /proc, /dev/shm and /dev/pts. Each of the task's own directories comes as a
// detached tree of its own (MountPlan::trees), moved straight to its place: nothing is
// mounted only to be unmounted again, which would cost the task's start an RCU grace period.
MountPlan build_template_plan(const MountRequest& request);
MountPlan build_task_mount_plan(const MountRequest& request);
// Whether the binds of `request` can be part of a template: none may lie below /var/tmp,
// whose binds go on top of each task's own /var/tmp (build_mount_plan does that).
bool fits_a_template(const MountRequest& request);

// Picks a host directory on which the new root can be mounted: it must exist, be a real
// directory and not contain the workspace or any bind source (they would be hidden).
std::string choose_root_mount_point(const std::vector<std::string>& must_stay_visible);

// Child side: returns 0, or an errno with *failed pointing at the op that failed.
// `trees`: `tree_count` detached mounts (open_tree) for kAttachTree, in plan.trees' order.
int apply_mount_plan(const MountPlan& plan, const int* trees, int tree_count,
                     const MountOp** failed);

}  // namespace tamma::sandbox
