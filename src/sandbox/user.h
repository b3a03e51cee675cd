#pragma once
// Who the task runs as: uid/gid, supplementary groups, capabilities and no_new_privs, and
// the id maps of a user namespace when the worker itself is not root.

#include <sys/types.h>

namespace tamma::sandbox {

struct PrivilegeDrop {
  uid_t uid = 0;
  gid_t gid = 0;
  int cap_last = 0;                   // from cap_last_cap(), read by the parent
  bool in_user_ns = false;            // setgroups is denied in a user namespace we mapped
  bool bounding_set_dropped = false;  // by PID 1, which the task inherits it from
  // The unprivileged tier without CAP_SETUID/CAP_SETGID/CAP_SETPCAP (a container's
  // non-root user): the task keeps the worker's ids, and what needs those capabilities
  // (the bounding set, setgroups) is skipped when refused. Capabilities are still cleared
  // and no_new_privs set.
  bool keep_ids = false;
};

// What failed while dropping privileges, for the error record.
enum class DropStep { kNone, kBoundingSet, kAmbient, kGroups, kGid, kUid, kCapset, kNoNewPrivs };
const char* to_string(DropStep step);

// Child side, raw system calls only: empties the capability bounding and ambient sets,
// switches to uid/gid with no supplementary groups, clears every capability set and sets
// no_new_privs, so nothing the task execs can gain privileges. Returns 0 or an errno and
// sets *step.
int drop_privileges(const PrivilegeDrop& drop, DropStep* step);

// Child side: empties the capability bounding set (one system call per capability).
// PID 1 does it while the worker still makes the task's group: the task inherits the empty
// set, and PID 1, which never execs, loses nothing by it. Returns 0 or an errno.
int drop_bounding_set(int cap_last);

// Parent side: the highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap).
int cap_last_cap();

// Parent side: maps the worker's euid/egid to `inside_uid`/`inside_gid` in the user namespace
// of `pid` (denying setgroups first, as unprivileged gid maps require). Throws Error.
void write_id_maps(pid_t pid, uid_t inside_uid, gid_t inside_gid);

}  // namespace tamma::sandbox
