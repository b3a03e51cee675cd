#include "sandbox/landlock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/error.h"

// Debian 12's kernel headers (6.1) stop at ABI 2; the later rights and fields are fixed
// numbers of the kernel ABI.
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0)
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1)
#endif
#ifndef LANDLOCK_SCOPE_SIGNAL
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

namespace tamma::sandbox {

namespace {

// The attribute as of ABI 6; older kernels accept it while the fields they do not know are 0.
struct RulesetAttr {
  std::uint64_t handled_access_fs = 0;
  std::uint64_t handled_access_net = 0;
  std::uint64_t scoped = 0;
};

struct PathBeneath {
  std::uint64_t allowed_access;
  std::int32_t parent_fd;
} __attribute__((packed));

constexpr std::uint64_t kRead = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
constexpr std::uint64_t kFileRights = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                      LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |
                                      LANDLOCK_ACCESS_FS_IOCTL_DEV;

long create_ruleset(const RulesetAttr* attr, std::size_t size, std::uint32_t flags) {
  return ::syscall(SYS_landlock_create_ruleset, attr, size, flags);
}

void add_rule(int ruleset, const std::string& path, std::uint64_t access, std::uint64_t handled) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!fd) return;  // a path this host lacks gives nothing
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return;
  // Rights that only apply to directories make a rule on a file invalid.
  if (!S_ISDIR(st.st_mode)) access &= kFileRights;
  PathBeneath rule{access & handled, fd.get()};
  if (rule.allowed_access == 0) return;
  if (::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0) {
    throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                "Landlock rule for " + path + ": " + strerrordesc_np(errno));
  }
}

}  // namespace

std::string LandlockSupport::why_unavailable() const {
  switch (err) {
    case 0:
      return "";
    case ENOSYS:
      return "Landlock not built into this kernel (Linux 5.13+, CONFIG_SECURITY_LANDLOCK)";
    case EOPNOTSUPP:
      return "Landlock built but not enabled (add landlock to the lsm= boot parameter)";
    case EPERM:
      return "Landlock denied by a seccomp profile";
    default:
      return std::string("Landlock unavailable: ") + strerrordesc_np(err);
  }
}

LandlockSupport probe_landlock() {
  LandlockSupport support;
  const long abi = create_ruleset(nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    support.err = errno;
    return support;
  }
  support.abi = static_cast<int>(abi);
  support.net = abi >= 4;
  if (abi >= 6) {
    RulesetAttr attr;
    attr.handled_access_fs = LANDLOCK_ACCESS_FS_READ_FILE;
    attr.scoped = LANDLOCK_SCOPE_SIGNAL | LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET;
    UniqueFd fd(static_cast<int>(create_ruleset(&attr, sizeof attr, 0)));
    support.scopes = static_cast<bool>(fd);
  }
  return support;
}

std::uint64_t landlock_fs_rights(int abi) {
  if (abi < 1) return 0;
  std::uint64_t rights = (1ULL << 13) - 1;  // ABI 1: EXECUTE .. MAKE_SYM
  if (abi >= 2) rights |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
  if (abi >= 5) rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
  return rights;
}

UniqueFd build_landlock_ruleset(const LandlockPlan& plan) {
  RulesetAttr attr;
  attr.handled_access_fs = landlock_fs_rights(plan.abi);
  if (plan.deny_tcp && plan.abi >= 4) {
    attr.handled_access_net = LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP;
  }
  if (plan.scope && plan.abi >= 6) {
    attr.scoped = LANDLOCK_SCOPE_SIGNAL | LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET;
  }
  UniqueFd ruleset(static_cast<int>(create_ruleset(&attr, sizeof attr, 0)));
  if (!ruleset) {
    throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                std::string("Landlock ruleset: ") + strerrordesc_np(errno));
  }
  const std::uint64_t handled = attr.handled_access_fs;
  for (const auto& path : plan.read_exec) {
    add_rule(ruleset.get(), path, kRead | LANDLOCK_ACCESS_FS_EXECUTE, handled);
  }
  for (const auto& path : plan.read_only) add_rule(ruleset.get(), path, kRead, handled);
  for (const auto& path : plan.devices) {
    add_rule(ruleset.get(), path,
             kRead | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |
                 LANDLOCK_ACCESS_FS_IOCTL_DEV,
             handled);
  }
  const std::uint64_t no_devices = LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_BLOCK;
  for (const auto& path : plan.writable) add_rule(ruleset.get(), path, ~no_devices, handled);
  return ruleset;
}

int landlock_enter(int ruleset_fd) {
  return ::syscall(SYS_landlock_restrict_self, ruleset_fd, 0) == 0 ? 0 : errno;
}

}  // namespace tamma::sandbox
