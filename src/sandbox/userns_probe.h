#pragma once
// Whether a user namespace is usable, step by step, rather than whether one can be created.
//
// Ubuntu 23.10+ (kernel.apparmor_restrict_unprivileged_userns=1) lets an unprivileged
// process create a user namespace but confines it to a profile that denies every capability
// inside: clone succeeds and the id maps, mounts or sethostname fail afterwards, depending on
// who does them. Trying one clone says "yes" there, and every isolated task then fails; this
// probe does each step the sandbox does, in the order it does them, and names the first that
// fails.

#include <string>

namespace tamma::sandbox {

struct UsernsProbe {
  bool created = false;              // clone(CLONE_NEWUSER | the other namespaces) succeeded
  std::string failed_step;           // empty when every step worked
  int err = 0;                       // errno of the failed step
  bool apparmor_restricted = false;  // kernel.apparmor_restrict_unprivileged_userns = 1

  [[nodiscard]] bool usable() const { return created && failed_step.empty(); }
  // "user namespace created, but <step> in it denied (EACCES)", plus the AppArmor cause.
  [[nodiscard]] std::string problem() const;
  // What an operator does about it (empty when nothing is known to help).
  [[nodiscard]] std::string fix() const;
};

// Forks one child into new user, mount, pid, net, ipc and uts namespaces, maps the worker's
// ids into it from outside as the sandbox does, and has it make / private, mount a tmpfs and
// proc, set the host name and switch ids. About a millisecond; run once per process.
UsernsProbe probe_userns();

}  // namespace tamma::sandbox
