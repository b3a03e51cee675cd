#include "sandbox/user.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "common/error.h"

namespace tamma::sandbox {

namespace {

void write_proc_file(const std::string& path, const std::string& content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw_errno("open " + path);
  ssize_t put = ::write(fd, content.data(), content.size());
  int err = errno;
  ::close(fd);
  if (put != static_cast<ssize_t>(content.size())) throw_errno("write " + path, err);
}

}  // namespace

const char* to_string(DropStep step) {
  switch (step) {
    case DropStep::kNone:
      return "none";
    case DropStep::kBoundingSet:
      return "drop capability bounding set";
    case DropStep::kAmbient:
      return "clear ambient capabilities";
    case DropStep::kGroups:
      return "setgroups";
    case DropStep::kGid:
      return "setresgid";
    case DropStep::kUid:
      return "setresuid";
    case DropStep::kCapset:
      return "capset";
    case DropStep::kNoNewPrivs:
      return "PR_SET_NO_NEW_PRIVS";
  }
  return "?";
}

int drop_bounding_set(int cap_last) {
  for (int cap = 0; cap <= cap_last; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return errno;
  }
  return 0;
}

int drop_privileges(const PrivilegeDrop& drop, DropStep* step) {
  // The bounding set can only shrink while CAP_SETPCAP is still effective, so it goes first.
  *step = DropStep::kBoundingSet;
  if (!drop.bounding_set_dropped) {
    // Without CAP_SETPCAP the set cannot shrink; exec with no_new_privs gains nothing from it.
    if (int err = drop_bounding_set(drop.cap_last); err != 0 && !(drop.keep_ids && err == EPERM)) {
      return err;
    }
  }
  *step = DropStep::kAmbient;
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return errno;
  }
  // Raw system calls: glibc's wrappers would signal every thread of the parent to change
  // ids in lockstep, and those threads do not exist in this child.
  *step = DropStep::kGroups;
  if (::syscall(SYS_setgroups, 0, nullptr) != 0 &&
      !((drop.in_user_ns || drop.keep_ids) && errno == EPERM)) {
    return errno;
  }
  if (!drop.keep_ids) {
    *step = DropStep::kGid;
    if (::syscall(SYS_setresgid, drop.gid, drop.gid, drop.gid) != 0) return errno;
    *step = DropStep::kUid;
    if (::syscall(SYS_setresuid, drop.uid, drop.uid, drop.uid) != 0) return errno;
  }
  // Leaving uid 0 already cleared the sets; a task uid of 0, or a user namespace where the
  // task uid owns the namespace, would keep them, so clear them explicitly.
  *step = DropStep::kCapset;
  struct __user_cap_header_struct header {};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return errno;
  *step = DropStep::kNoNewPrivs;
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
  *step = DropStep::kNone;
  return 0;
}

int cap_last_cap() {
  // Fixed for the kernel's life: read once, not once per sandbox (an ifstream and three
  // syscalls on the slot's path).
  static const int last = [] {
    std::ifstream in("/proc/sys/kernel/cap_last_cap");
    int value = -1;
    if (in >> value && value >= 0) return value;
    // Kernels before 3.2 lack the file; CAP_LAST_CAP of the headers is the best guess.
    return static_cast<int>(CAP_LAST_CAP);
  }();
  return last;
}

void write_id_maps(pid_t pid, uid_t inside_uid, gid_t inside_gid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  write_proc_file(proc + "/uid_map",
                  std::to_string(inside_uid) + " " + std::to_string(::geteuid()) + " 1\n");
  write_proc_file(proc + "/setgroups", "deny");
  write_proc_file(proc + "/gid_map",
                  std::to_string(inside_gid) + " " + std::to_string(::getegid()) + " 1\n");
}

}  // namespace tamma::sandbox
