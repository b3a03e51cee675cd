#include "sandbox/tier.h"

#include "sandbox/host.h"

namespace tamma::sandbox {

namespace {

void add(std::string& out, const std::string& what) {
  if (!out.empty()) out += ", ";
  out += what;
}

}  // namespace

const char* to_string(Tier tier) {
  switch (tier) {
    case Tier::kFull:
      return "full";
    case Tier::kRootless:
      return "rootless";
    case Tier::kUnprivileged:
      return "unprivileged";
    case Tier::kNone:
      return "none";
  }
  return "?";
}

std::optional<Tier> parse_tier(std::string_view text) {
  if (text == "full") return Tier::kFull;
  if (text == "rootless") return Tier::kRootless;
  if (text == "unprivileged") return Tier::kUnprivileged;
  return std::nullopt;
}

std::string missing_for(Tier tier, const HostCapabilities& caps) {
  std::string out;
  switch (tier) {
    case Tier::kFull:
      if (!caps.root) add(out, "root");
      if (!caps.pid_ns || !caps.mount_ns) add(out, "pid and mount namespaces");
      if (!caps.seccomp) add(out, "seccomp");
      if (caps.cgroup_version == "none") add(out, "writable cgroups");
      break;
    case Tier::kRootless:
      if (!caps.root && !caps.user_ns) {
        add(out, caps.userns_problem.empty() ? "user namespace"
                                             : "a usable user namespace (" + caps.userns_problem + ")");
      }
      if (!caps.pid_ns || !caps.mount_ns) add(out, "pid and mount namespaces");
      if (!caps.seccomp) add(out, "seccomp");
      break;
    case Tier::kUnprivileged:
      if (!caps.seccomp) add(out, "seccomp");
      break;
    case Tier::kNone:
      break;
  }
  return out;
}

Tier choose_tier(const HostCapabilities& caps) {
  for (Tier tier : {Tier::kFull, Tier::kRootless, Tier::kUnprivileged}) {
    if (missing_for(tier, caps).empty()) return tier;
  }
  return Tier::kNone;
}

}  // namespace tamma::sandbox
