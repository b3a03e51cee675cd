#pragma once
// Isolation tiers (ADR 0030): what a host can give a task, from most to least.
//
//   full          a root worker: namespaces, cgroups, loop-mounted disk limits;
//   rootless      a non-root worker in a user namespace (item 2, delegated cgroup v2);
//   unprivileged  no namespace can be made (a default container): Landlock, seccomp,
//                 no_new_privs, no capabilities, rlimits, and a keeper that finds and kills
//                 every descendant of the task;
//   none          not even seccomp: nothing to confine a task with.

#include <optional>
#include <string>
#include <string_view>

namespace tamma::sandbox {

struct HostCapabilities;

// Ordered: a larger value isolates more.
enum class Tier { kNone = 0, kUnprivileged = 1, kRootless = 2, kFull = 3 };

const char* to_string(Tier tier);
// "full", "rootless", "unprivileged" (the values of the `isolation` setting).
std::optional<Tier> parse_tier(std::string_view text);

// The best tier this host offers, from what probe_host() found.
Tier choose_tier(const HostCapabilities& caps);

// Why `caps` does not reach `tier` ("" when it does), naming each missing piece.
std::string missing_for(Tier tier, const HostCapabilities& caps);

}  // namespace tamma::sandbox
