#pragma once

#include <cstdint>
#include <optional>

namespace tamma::sandbox {

// Kernel-enforced limits for one task; unset means "no limit asked for".
struct Limits {
  std::optional<std::uint64_t> memory_bytes;  // memory cgroup, swap disabled
  std::optional<double> cpus;                 // CPU bandwidth quota, in cores
  std::optional<std::uint64_t> pids;          // pids cgroup
};

// What the kernel accounted for the whole process tree of a task.
struct Usage {
  std::uint64_t peak_memory_bytes = 0;  // over all processes together
  std::uint64_t cpu_user_us = 0;        // includes orphaned grandchildren
  std::uint64_t cpu_system_us = 0;
  std::uint64_t oom_kills = 0;  // processes of the task killed by an out-of-memory kill
  // Times the task's OWN memory limit was reached (v1 memory[.memsw].failcnt or a peak at the
  // limit, v2 memory.events "oom"). An OOM kill without one was chosen by a limit above the task's
  // or by the machine running out: the host's failure, not the task's.
  std::uint64_t memory_limit_hits = 0;
  std::uint64_t pids_limit_hits = 0;        // forks refused by the pids limit
  std::uint64_t cpu_throttled_periods = 0;  // periods in which the quota ran out
  std::uint64_t cpu_throttled_us = 0;
  bool exact = true;  // false when measured without a cgroup (degraded mode)
  // With a loopback-only network: connection attempts and packets that found no way out
  // (NetCounters in net.h); 0 with the host's network or without isolation.
  std::uint64_t network_unreachable = 0;
};

}  // namespace tamma::sandbox
