// cgroup v1: one directory per task in each controller hierarchy we use (memory, pids, cpu,
// cpuacct, freezer; cpu and cpuacct may share one hierarchy), under a per-worker subtree.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

namespace tamma::sandbox {
namespace {

using namespace cgroup_internal;

// One hierarchy as seen from a group (or subtree) in it.
struct Dir {
  std::vector<std::string> controllers;
  fs::path path;
};

bool carries(const std::vector<std::string>& controllers, std::string_view name) {
  return std::find(controllers.begin(), controllers.end(), name) != controllers.end();
}

const Dir* dir_for(const std::vector<Dir>& dirs, std::string_view controller) {
  for (const auto& dir : dirs) {
    if (carries(dir.controllers, controller)) return &dir;
  }
  return nullptr;
}

// Every process of the group. A task's processes are in its group in every hierarchy
// (add_process writes them all, children inherit them, and only root can move a process),
// so one hierarchy answers for all: the freezer's when there is one. Task groups are leaves:
// the worker makes no children in them and the task, unprivileged and without cgroupfs in
// its jail, cannot; a group that has children anyway is walked.
// Listing one file instead of walking five hierarchies (a cgroup directory holds dozens of
// control files to stat) is most of the per-task cost of v1 on a busy machine.
std::vector<pid_t> processes_below(const std::vector<Dir>& dirs) {
  if (dirs.empty()) return {};  // a group whose creation failed half-way
  const Dir* freezer = dir_for(dirs, kFreezer);
  const fs::path& primary = freezer != nullptr ? freezer->path : dirs.front().path;
  std::vector<pid_t> pids = read_pids(primary / "cgroup.procs");
  if (!pids.empty()) return pids;
  std::set<pid_t> below;
  for (const auto& group : subtree_bottom_up(primary)) {
    if (group == primary) continue;
    for (pid_t pid : read_pids(group / "cgroup.procs")) below.insert(pid);
  }
  return {below.begin(), below.end()};
}

void kill_each(const std::vector<pid_t>& pids, int sig) {
  for (pid_t pid : pids) {
    if (::kill(pid, sig) != 0 && errno != ESRCH) {
      throw_errno("kill(" + std::to_string(pid) + ", " + std::to_string(sig) + ")");
    }
  }
}

// Freeze, SIGKILL everything, thaw, wait until empty. Freezing first means nothing can fork
// or escape between listing the processes and killing them; frozen tasks keep the SIGKILL
// pending and die as soon as they are thawed. Without a freezer hierarchy the kill loop
// still converges, as killed processes cannot fork, but a fork racing the listing may need
// another round.
void kill_tree(const std::vector<Dir>& dirs) {
  const Dir* freezer = dir_for(dirs, kFreezer);
  if (freezer != nullptr && !processes_below(dirs).empty()) {
    const fs::path state = freezer->path / "freezer.state";
    write_file(state, "FROZEN");
    struct Thaw {
      fs::path state;
      ~Thaw() {
        if (const int err = try_write_file(state, "THAWED"); err != 0 && err != ENOENT) {
          spdlog::error("cgroup: cannot thaw {}: {}", state.string(), std::strerror(err));
        }
      }
    } thaw{state};
    // A task in uninterruptible sleep can hold FREEZING for long; kill regardless then.
    Backoff frozen(std::chrono::milliseconds(1'000));
    while (trim(try_read_file(state).value_or("FROZEN")) != "FROZEN" && frozen.wait()) {
    }
    kill_each(processes_below(dirs), SIGKILL);
  }
  Backoff empty(kEmptyTimeout);
  for (;;) {
    const auto pids = processes_below(dirs);
    if (pids.empty()) return;
    kill_each(pids, SIGKILL);
    if (!empty.wait()) {
      throw Error(ErrorKind::kInfrastructure, "cgroup_kill_timeout",
                  std::to_string(pids.size()) + " process(es) still in " +
                      dirs.front().path.string() + " " + std::to_string(kEmptyTimeout.count()) +
                      " ms after SIGKILL");
    }
  }
}

// Removes the groups (deepest first) of every hierarchy; returns false if one stayed.
bool remove_tree(const std::vector<Dir>& dirs) {
  bool removed = true;
  for (const auto& dir : dirs) {
    // A leaf goes in one call; only a group that still has children is walked.
    if (::rmdir(dir.path.c_str()) == 0 || errno == ENOENT) continue;
    for (const auto& group : subtree_bottom_up(dir.path)) {
      if (const int err = rmdir_retry(group); err != 0) {
        spdlog::error("cgroup: cannot remove {}: {}", group.string(), std::strerror(err));
        removed = false;
      }
    }
  }
  return removed;
}

[[noreturn]] void missing_controller(std::string_view controller, std::string_view limit) {
  throw Error(ErrorKind::kSandboxSetup, "cgroup_controller_missing",
              std::string(controller) + " controller not available (no v1 hierarchy mounted): " +
                  "cannot enforce " + std::string(limit));
}

void set_limit(const fs::path& file, const std::string& value, std::string_view limit) {
  if (const int err = try_write_file(file, value); err != 0) {
    throw Error(ErrorKind::kSandboxSetup, "cgroup_limit_failed",
                "cannot enforce " + std::string(limit) + ": writing '" + value + "' to " +
                    file.string() + " failed: " + std::strerror(err));
  }
}

class V1Cgroup final : public Cgroup {
 public:
  explicit V1Cgroup(std::vector<Dir> dirs) : dirs_(std::move(dirs)) {}

  ~V1Cgroup() override {
    // Usually the task is gone and the groups are empty leaves, which rmdir alone removes;
    // it answers EBUSY while a process (or a child group) is left. A process enters the
    // hierarchies in the order of dirs_, so once one group is removed no process is left in
    // the others: only what failed needs the kill and the walk.
    std::vector<Dir> left;
    for (const auto& dir : dirs_) {
      if (left.empty() && (::rmdir(dir.path.c_str()) == 0 || errno == ENOENT)) continue;
      left.push_back(dir);
    }
    if (left.empty()) return;
    try {
      kill_tree(left);
    } catch (const std::exception& e) {
      spdlog::error("cgroup: killing the processes of {} failed: {}", path(), e.what());
    }
    remove_tree(left);
  }

  [[nodiscard]] int clone_into_fd() const override { return -1; }

  void add_process(pid_t pid) override {
    for (const auto& dir : dirs_) write_file(dir.path / "cgroup.procs", std::to_string(pid));
  }

  [[nodiscard]] std::vector<UniqueFd> open_procs_files() const override {
    std::vector<UniqueFd> files;
    for (const auto& dir : dirs_) {
      const fs::path procs = dir.path / "cgroup.procs";
      UniqueFd fd(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
      if (!fd) throw_errno("open " + procs.string());
      files.push_back(std::move(fd));
    }
    return files;
  }

  [[nodiscard]] std::vector<pid_t> processes() const override { return processes_below(dirs_); }

  void signal_all(int sig) override { kill_each(processes(), sig); }

  void kill_all() override { kill_tree(dirs_); }

  [[nodiscard]] Usage usage() const override {
    Usage usage;
    if (const Dir* memory = dir_for(dirs_, kMemory)) {
      usage.peak_memory_bytes = read_u64(memory->path / "memory.max_usage_in_bytes").value_or(0);
      usage.oom_kills = read_keyed(memory->path / "memory.oom_control", "oom_kill").value_or(0);
      // Whether the group's own limit was reached. failcnt counts on the group whose limit
      // refused a charge, but recent kernels keep it for some counters only (memsw, checked
      // first when memory+swap is limited, may count nothing), so a peak at the limit counts
      // too. A parent's limit or the machine running out shows in neither.
      usage.memory_limit_hits = read_u64(memory->path / "memory.failcnt").value_or(0) +
                                read_u64(memory->path / "memory.memsw.failcnt").value_or(0);
      const auto limit = read_u64(memory->path / "memory.limit_in_bytes");
      const auto peak =
          std::max(usage.peak_memory_bytes,
                   read_u64(memory->path / "memory.memsw.max_usage_in_bytes").value_or(0));
      constexpr std::uint64_t kSlack = 256 << 10;  // charges are batched in pages
      if (limit && *limit > kSlack && peak + kSlack >= *limit) ++usage.memory_limit_hits;
    } else {
      usage.exact = false;
    }
    if (const Dir* cpuacct = dir_for(dirs_, kCpuacct)) {
      read_cpu_time(cpuacct->path, usage);
    } else {
      usage.exact = false;
    }
    if (const Dir* cpu = dir_for(dirs_, kCpu)) {
      const auto stat = parse_flat_keyed(try_read_file(cpu->path / "cpu.stat").value_or(""));
      if (auto it = stat.find("nr_throttled"); it != stat.end()) {
        usage.cpu_throttled_periods = it->second;
      }
      if (auto it = stat.find("throttled_time"); it != stat.end()) {
        usage.cpu_throttled_us = it->second / 1000;
      }
    }
    if (const Dir* pids = dir_for(dirs_, kPids)) {
      usage.pids_limit_hits = read_keyed(pids->path / "pids.events", "max").value_or(0);
    }
    return usage;
  }

  [[nodiscard]] std::string path() const override {
    const Dir* memory = dir_for(dirs_, kMemory);
    if (memory != nullptr) return memory->path.string();
    return dirs_.empty() ? std::string() : dirs_.front().path.string();
  }

 private:
  // cpuacct.usage is exact (scheduler runtime, ns) and counts every task that ever ran in
  // the group, orphans included. The user/system split (usage_user/usage_sys in ns, or
  // cpuacct.stat in USER_HZ ticks) comes from tick sampling unless the kernel has
  // VIRT_CPU_ACCOUNTING, so it is only used as a ratio to divide the exact total, as the
  // kernel itself does for cgroup v2's user_usec/system_usec.
  static void read_cpu_time(const fs::path& dir, Usage& usage) {
    const auto total_ns = read_u64(dir / "cpuacct.usage");
    std::optional<std::uint64_t> user = read_u64(dir / "cpuacct.usage_user");
    std::optional<std::uint64_t> system = read_u64(dir / "cpuacct.usage_sys");
    if (!user || !system) {
      const auto stat = parse_flat_keyed(try_read_file(dir / "cpuacct.stat").value_or(""));
      const auto u = stat.find("user");
      const auto s = stat.find("system");
      if (u != stat.end() && s != stat.end()) {
        const auto ns_per_tick =
            1'000'000'000ull / static_cast<std::uint64_t>(::sysconf(_SC_CLK_TCK));
        user = u->second * ns_per_tick;
        system = s->second * ns_per_tick;
      }
    }
    if (!total_ns) {
      usage.exact = false;
      usage.cpu_user_us = user.value_or(0) / 1000;
      usage.cpu_system_us = system.value_or(0) / 1000;
      return;
    }
    const std::uint64_t sampled = user.value_or(0) + system.value_or(0);
    // No tick landed yet (a very short task): attribute it all to user time.
    const double user_share =
        sampled == 0 ? 1.0 : static_cast<double>(*user) / static_cast<double>(sampled);
    const auto user_ns =
        static_cast<std::uint64_t>(std::llround(user_share * static_cast<double>(*total_ns)));
    usage.cpu_user_us = user_ns / 1000;
    usage.cpu_system_us = (*total_ns - std::min(user_ns, *total_ns)) / 1000;
  }

  std::vector<Dir> dirs_;
};

class V1Manager final : public CgroupManager {
 public:
  explicit V1Manager(std::vector<V1Hierarchy> hierarchies) {
    const std::string name = subtree_name(self_owner());
    for (auto& hierarchy : hierarchies) {
      hierarchies_.push_back(Dir{hierarchy.controllers, hierarchy.own});
      subtrees_.push_back(Dir{std::move(hierarchy.controllers), hierarchy.own / name});
    }
    for (const auto& subtree : subtrees_) {
      ensure_dir(subtree.path);
      subtree_fds_.emplace_back(::open(subtree.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!subtree_fds_.back()) throw_errno("open " + subtree.path.string());
    }
  }

  ~V1Manager() override {
    for (const auto& subtree : subtrees_) {
      // Busy means a task group still exists; its owner removes it and leaves this one to
      // the next worker's remove_stale().
      if (const int err = rmdir_retry(subtree.path, std::chrono::milliseconds(0)); err != 0) {
        spdlog::warn("cgroup: cannot remove worker subtree {}: {}", subtree.path.string(),
                     std::strerror(err));
      }
    }
  }

  [[nodiscard]] CgroupVersion version() const override { return CgroupVersion::kV1; }

  [[nodiscard]] std::vector<std::string> controllers() const override {
    std::vector<std::string> out;
    for (const auto& subtree : subtrees_) {
      out.insert(out.end(), subtree.controllers.begin(), subtree.controllers.end());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  [[nodiscard]] std::string subtree() const override {
    const Dir* memory = dir_for(subtrees_, kMemory);
    return (memory != nullptr ? memory->path : subtrees_.front().path).string();
  }

  [[nodiscard]] std::vector<int> parent_fds(TreeKill kill) const override {
    std::vector<int> fds;
    for (std::size_t i = 0; i < subtrees_.size(); ++i) {
      if (!skipped(subtrees_[i], kill)) fds.push_back(subtree_fds_[i].get());
    }
    return fds;
  }

  std::unique_ptr<Cgroup> create_group(std::string_view name, const Limits& limits,
                                       TreeKill kill) override {
    validate_group_name(name);
    const Dir* memory = dir_for(subtrees_, kMemory);
    const Dir* pids = dir_for(subtrees_, kPids);
    const Dir* cpu = dir_for(subtrees_, kCpu);
    // Refuse before creating anything, naming the first missing piece.
    if (limits.memory_bytes && memory == nullptr) missing_controller(kMemory, "resources.memory");
    if (limits.pids && pids == nullptr) missing_controller(kPids, "resources.pids");
    if (limits.cpus && cpu == nullptr) missing_controller(kCpu, "resources.cpus");
    if (limits.cpus && !(*limits.cpus > 0.0)) {
      throw Error(ErrorKind::kConfig, "invalid_cpu_limit",
                  "resources.cpus must be positive, got " + std::to_string(*limits.cpus));
    }

    std::vector<Dir> dirs;
    for (const auto& subtree : subtrees_) {
      if (skipped(subtree, kill)) continue;
      const fs::path dir = subtree.path / std::string(name);
      if (::mkdir(dir.c_str(), 0755) != 0) {
        const int err = errno;
        // What was created so far goes with the partial group below.
        V1Cgroup partial(std::move(dirs));
        throw_errno("mkdir " + dir.string(), err);
      }
      dirs.push_back(Dir{subtree.controllers, dir});
    }
    auto group = std::make_unique<V1Cgroup>(dirs);

    if (limits.memory_bytes) {
      const fs::path dir = dir_for(dirs, kMemory)->path;
      const std::string bytes = std::to_string(*limits.memory_bytes);
      set_limit(dir / "memory.limit_in_bytes", bytes, "resources.memory");
      // memsw is memory+swap: the same value means no swap. It must not be below the memory
      // limit, hence the order.
      if (fs::exists(dir / "memory.memsw.limit_in_bytes")) {
        set_limit(dir / "memory.memsw.limit_in_bytes", bytes, "resources.memory (swap off)");
      } else if (host_has_swap()) {
        spdlog::warn(
            "cgroup: swap accounting is off (no memory.memsw.limit_in_bytes): a task "
            "in {} may swap beyond resources.memory",
            dir.string());
      }
      if (const int err = try_write_file(dir / "memory.swappiness", "0"); err != 0) {
        spdlog::debug("cgroup: memory.swappiness not writable in {}: {}", dir.string(),
                      std::strerror(err));
      }
    }
    if (limits.pids) {
      set_limit(dir_for(dirs, kPids)->path / "pids.max", std::to_string(*limits.pids),
                "resources.pids");
    }
    if (limits.cpus) {
      const fs::path dir = dir_for(dirs, kCpu)->path;
      const auto quota = std::max<std::uint64_t>(
          kMinCpuQuotaUs, static_cast<std::uint64_t>(
                              std::llround(*limits.cpus * static_cast<double>(kCpuPeriodUs))));
      set_limit(dir / "cpu.cfs_period_us", std::to_string(kCpuPeriodUs), "resources.cpus");
      set_limit(dir / "cpu.cfs_quota_us", std::to_string(quota), "resources.cpus");
    }
    return group;
  }

  std::size_t remove_stale() override {
    // One stale worker has a subtree in every hierarchy; count it once.
    std::map<std::string, std::vector<Dir>> stale;
    // Each owner is looked up in /proc once, not once per hierarchy (this worker's own
    // subtree is in all five of them).
    std::map<std::string, bool> alive;
    for (const auto& hierarchy : hierarchies_) {
      std::error_code ec;
      for (fs::directory_iterator it(hierarchy.path, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string entry = it->path().filename().string();
        auto owner = parse_subtree_name(entry);
        if (!owner) continue;
        auto [known, inserted] = alive.try_emplace(entry, false);
        if (inserted) known->second = owner_alive(*owner);
        if (known->second) continue;
        stale[entry].push_back(Dir{hierarchy.controllers, it->path()});
      }
    }
    std::size_t removed = 0;
    for (const auto& [entry, dirs] : stale) {
      try {
        kill_tree(dirs);
      } catch (const std::exception& e) {
        spdlog::error("cgroup: killing the processes left in stale {} failed: {}", entry, e.what());
        continue;
      }
      if (remove_tree(dirs)) {
        spdlog::info("cgroup: removed stale worker subtree {}", entry);
        ++removed;
      }
    }
    return removed;
  }

 private:
  // The freezer only stops a tree from forking while it is killed, which a pid namespace
  // does itself.
  static bool skipped(const Dir& subtree, TreeKill kill) {
    return kill == TreeKill::kByPidNamespace && subtree.controllers.size() == 1 &&
           subtree.controllers.front() == kFreezer;
  }

  std::vector<Dir> hierarchies_;       // the worker's own group in each hierarchy
  std::vector<Dir> subtrees_;          // this worker's subtree in each hierarchy
  std::vector<UniqueFd> subtree_fds_;  // open, in the order of subtrees_
};

}  // namespace

std::unique_ptr<CgroupManager> cgroup_internal::make_v1_manager(
    std::vector<V1Hierarchy> hierarchies) {
  if (hierarchies.empty()) {
    throw Error(ErrorKind::kSandboxSetup, "cgroup_not_mounted",
                "no cgroup v1 hierarchy with memory, pids, cpu, cpuacct or freezer is mounted");
  }
  auto manager = std::make_unique<V1Manager>(std::move(hierarchies));
  manager->remove_stale();
  return manager;
}

}  // namespace tamma::sandbox
