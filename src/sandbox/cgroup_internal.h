#pragma once
// Shared by the v1 and v2 cgroup implementations and their tests: cgroup file I/O, parsing
// of /proc/self/cgroup, /proc/self/mountinfo and /proc/<pid>/stat, the naming of per-worker
// subtrees (so a later worker can tell whether their owner is still alive) and the bounded
// waits the kernel needs around process exit. Implemented in cgroup_detect.cc.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sandbox/cgroup.h"

namespace tamma::sandbox::cgroup_internal {

namespace fs = std::filesystem;

// The three controllers that carry task limits; "cpuacct" and "freezer" only account/stop.
inline constexpr const char* kMemory = "memory";
inline constexpr const char* kPids = "pids";
inline constexpr const char* kCpu = "cpu";
inline constexpr const char* kCpuacct = "cpuacct";
inline constexpr const char* kFreezer = "freezer";

// Default CFS period; 100 ms is the kernel's default and keeps throttling granularity fine.
inline constexpr std::uint64_t kCpuPeriodUs = 100'000;
// The kernel refuses quotas below 1 ms.
inline constexpr std::uint64_t kMinCpuQuotaUs = 1'000;

// How long to wait for a killed group to empty and for rmdir to stop answering EBUSY.
inline constexpr std::chrono::milliseconds kEmptyTimeout{10'000};
inline constexpr std::chrono::milliseconds kRmdirTimeout{2'000};

// Whole file; throws Error(kInfrastructure) naming the path.
std::string read_file(const fs::path& file);
// nullopt when the file does not exist (ENOENT), throws on any other error.
std::optional<std::string> try_read_file(const fs::path& file);
// One write(2) of `value`, as cgroup files require; throws naming the path and value.
void write_file(const fs::path& file, std::string_view value);
// Returns 0 or the errno of the failed open/write, for files that may legitimately refuse.
int try_write_file(const fs::path& file, std::string_view value);

std::string trim(std::string_view text);
// Throws Error(kInfrastructure) when `text` is not a decimal unsigned number.
std::uint64_t parse_u64(std::string_view text, std::string_view what);
// "key value" lines (cpu.stat, memory.events, pids.events, memory.oom_control, cpuacct.stat).
std::map<std::string, std::uint64_t> parse_flat_keyed(std::string_view text);
// Value of `key` in a flat-keyed file; nullopt when the file or the key is absent.
std::optional<std::uint64_t> read_keyed(const fs::path& file, std::string_view key);
std::optional<std::uint64_t> read_u64(const fs::path& file);

// One line of /proc/<pid>/cgroup: "hierarchy-id:controller,list:/path".
struct ProcCgroup {
  int hierarchy_id = 0;
  std::vector<std::string> controllers;  // empty for the v2 line "0::/path"
  std::string path;
};
std::vector<ProcCgroup> parse_proc_cgroup(std::string_view text);

// The fields of one /proc/<pid>/mountinfo line that matter here.
struct MountInfo {
  std::string root;         // the mount's root inside its filesystem
  std::string mount_point;  // octal escapes (\040 ...) decoded
  std::string fstype;
  std::vector<std::string> super_options;
  std::string source;  // e.g. the block device
};
std::vector<MountInfo> parse_mountinfo(std::string_view text);

// Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat):
// with the pid, it names one process for good since pids are reused.
std::optional<std::uint64_t> process_start_time(pid_t pid);

// The name of the subtree that holds a worker's task groups. Liveness is judged by pid, so
// workers sharing a parent cgroup must share a pid namespace (they do on one host).
struct Owner {
  pid_t pid = 0;
  std::uint64_t start_time = 0;
};
Owner self_owner();
std::string subtree_name(const Owner& owner);  // "tamma-worker-<pid>-<starttime>"
std::optional<Owner> parse_subtree_name(std::string_view name);
bool owner_alive(const Owner& owner);

// Whether /proc/swaps lists an active swap area (a limit without swap accounting leaks).
bool host_has_swap();

// Task group names become directory names: one non-empty path component.
void validate_group_name(std::string_view name);

// Pids listed in a cgroup.procs (or tasks) file; empty when the file is gone.
std::vector<pid_t> read_pids(const fs::path& procs_file);

// mkdir that treats an existing directory as success; throws on anything else.
void ensure_dir(const fs::path& dir);
// rmdir, retrying EBUSY for `timeout`; ENOENT is success. Returns the final errno or 0.
int rmdir_retry(const fs::path& dir, std::chrono::milliseconds timeout = kRmdirTimeout);
// Subdirectories (cgroups) of `dir`, deepest first, `dir` itself last.
std::vector<fs::path> subtree_bottom_up(const fs::path& dir);

// Sleeps a little longer each round, so short waits stay cheap and long ones do not spin.
class Backoff {
 public:
  explicit Backoff(std::chrono::milliseconds timeout);
  // false once the deadline has passed; otherwise sleeps and returns true.
  bool wait();

 private:
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::microseconds delay_{50};
};

// Makers for the two implementations, with everything detection found. Tests call these
// directly to point the v2 code at a hierarchy of their choice.
struct V1Hierarchy {
  std::vector<std::string> controllers;  // as mounted together, e.g. {"cpu", "cpuacct"}
  fs::path own;                          // the worker's own group in this hierarchy
};
// The v1 hierarchies mounted right below `base` that carry a controller we use, each with
// the worker's own group in it (from `own`, the parsed /proc/self/cgroup).
std::vector<V1Hierarchy> find_v1_hierarchies(const std::vector<MountInfo>& mounts,
                                             const std::vector<ProcCgroup>& own,
                                             const fs::path& base);
std::unique_ptr<CgroupManager> make_v1_manager(std::vector<V1Hierarchy> hierarchies);

struct V2Options {
  fs::path mount;  // where the cgroup2 hierarchy is mounted
  fs::path own;    // the worker's own group (from "0::/path"), absolute on the host
  // Controllers to enable for task groups when the parent offers them.
  std::vector<std::string> wanted{kMemory, kPids, kCpu};
};
std::unique_ptr<CgroupManager> make_v2_manager(const V2Options& options);

// Leaf group, next to the worker subtrees, into which v2 moves the processes of the
// worker's own group so that controllers can be enabled there (no-internal-process rule).
inline constexpr const char* kV2LeafName = "tamma-leaf";

// Moves every process listed in `from`/cgroup.procs into `to` until none is left (processes
// may fork meanwhile); throws if the group does not empty within a bounded number of rounds.
void move_all_processes(const fs::path& from, const fs::path& to);

// The worker's own group in each hierarchy, resolved against the mount's root (a container
// may bind a sub-hierarchy at the mount point).
fs::path resolve_own(const MountInfo& mount, const std::string& proc_path);

}  // namespace tamma::sandbox::cgroup_internal
