// cgroup v2: one group per task under <own>/tamma-worker-<pid>-<starttime>/, with memory,
// pids and cpu enabled down the path as far as the parent delegates them.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/unique_fd.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

namespace tamma::sandbox {
namespace {

using namespace cgroup_internal;

std::set<std::string> words(std::string_view text) {
  std::set<std::string> out;
  std::istringstream in{std::string(text)};
  for (std::string word; in >> word;) out.insert(word);
  return out;
}

std::vector<pid_t> processes_below(const fs::path& dir) {
  std::set<pid_t> pids;
  for (const auto& group : subtree_bottom_up(dir)) {
    for (pid_t pid : read_pids(group / "cgroup.procs")) pids.insert(pid);
  }
  return {pids.begin(), pids.end()};
}

void kill_each(const std::vector<pid_t>& pids, int sig) {
  for (pid_t pid : pids) {
    if (::kill(pid, sig) != 0 && errno != ESRCH) {
      throw_errno("kill(" + std::to_string(pid) + ", " + std::to_string(sig) + ")");
    }
  }
}

// Waits until cgroup.events of `dir` reads `key` == `value`. The kernel signals a change of
// that file as a modification, so inotify wakes us exactly when it happens; the poll timeout
// is capped only as a guard against a missed event. Returns false on timeout.
bool wait_event(const fs::path& dir, std::string_view key, std::uint64_t value,
                std::chrono::milliseconds timeout) {
  const fs::path events = dir / "cgroup.events";
  UniqueFd inotify(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (inotify && ::inotify_add_watch(inotify.get(), events.c_str(), IN_MODIFY) < 0) inotify.reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Backoff backoff(timeout);
  for (;;) {
    auto current = read_keyed(events, key);
    if (!current || *current == value) return true;  // a vanished group is empty too
    if (!inotify) {
      if (!backoff.wait()) return false;
      continue;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{inotify.get(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 100))) < 0 &&
        errno != EINTR) {
      throw_errno("poll inotify on " + events.string());
    }
    char drain[4096];
    while (::read(inotify.get(), drain, sizeof drain) > 0) {
    }
  }
}

// SIGKILLs everything in `dir` and below and waits until it is empty. cgroup.kill (5.14)
// does it in one step, atomically with respect to forks; older kernels freeze first
// (cgroup.freeze, 5.2) so nothing forks between listing and killing.
void kill_tree(const fs::path& dir) {
  const fs::path kill_file = dir / "cgroup.kill";
  if (fs::exists(kill_file)) {
    write_file(kill_file, "1");
  } else if (fs::exists(dir / "cgroup.freeze")) {
    write_file(dir / "cgroup.freeze", "1");
    struct Thaw {
      fs::path file;
      ~Thaw() {
        if (const int err = try_write_file(file, "0"); err != 0 && err != ENOENT) {
          spdlog::error("cgroup: cannot thaw {}: {}", file.string(), std::strerror(err));
        }
      }
    } thaw{dir / "cgroup.freeze"};
    wait_event(dir, "frozen", 1, std::chrono::milliseconds(1'000));
    kill_each(processes_below(dir), SIGKILL);
  }
  Backoff backoff(kEmptyTimeout);
  for (;;) {
    if (wait_event(dir, "populated", 0, std::chrono::milliseconds(200))) return;
    // Only reached without cgroup.kill, or if something escaped it: kill what is listed.
    kill_each(processes_below(dir), SIGKILL);
    if (!backoff.wait()) {
      throw Error(ErrorKind::kInfrastructure, "cgroup_kill_timeout",
                  dir.string() + " still populated " + std::to_string(kEmptyTimeout.count()) +
                      " ms after SIGKILL");
    }
  }
}

bool remove_tree(const fs::path& dir) {
  bool removed = true;
  for (const auto& group : subtree_bottom_up(dir)) {
    if (const int err = rmdir_retry(group); err != 0) {
      spdlog::error("cgroup: cannot remove {}: {}", group.string(), std::strerror(err));
      removed = false;
    }
  }
  return removed;
}

void set_limit(const fs::path& file, const std::string& value, std::string_view limit) {
  if (const int err = try_write_file(file, value); err != 0) {
    throw Error(ErrorKind::kSandboxSetup, "cgroup_limit_failed",
                "cannot enforce " + std::string(limit) + ": writing '" + value + "' to " +
                    file.string() + " failed: " + std::strerror(err));
  }
}

// A worker that is not root may use its own group only if it was delegated to it (systemd's
// Delegate=yes, or a directory chowned as systemd does for users): it must create groups in
// it, and moving a process (the worker into its leaf, each task's PID 1 through
// CLONE_INTO_CGROUP) needs write access to cgroup.procs of the common ancestor of the two
// groups, which is `own`. Without the check the failures come late and bare: mkdir EACCES on
// the first task, or every spawn failing with EACCES from clone3.
void check_delegation(const fs::path& own, const std::vector<std::string>& to_enable) {
  std::vector<fs::path> needed{own, own / "cgroup.procs"};
  if (!to_enable.empty()) needed.push_back(own / "cgroup.subtree_control");
  for (const auto& file : needed) {
    if (::faccessat(AT_FDCWD, file.c_str(), W_OK, AT_EACCESS) == 0) continue;
    const int err = errno;
    if (err == EROFS) {
      throw Error(ErrorKind::kSandboxSetup, "cgroup_read_only",
                  "the cgroup filesystem holding " + own.string() +
                      " is mounted read-only (as in a container by default): no task groups");
    }
    struct stat st {};
    const std::string owner =
        ::stat(file.c_str(), &st) == 0 ? "uid " + std::to_string(st.st_uid) : "unknown";
    throw Error(
        ErrorKind::kSandboxSetup, "cgroup_not_delegated",
        "the worker's cgroup " + own.string() + " is not delegated to it: " + file.string() +
            " (owned by " + owner + ") is not writable by uid " + std::to_string(::geteuid()) +
            " (" + std::strerror(err) +
            "); run the worker as a systemd service with Delegate=yes (as packaged), or chown " +
            "the group, its cgroup.procs, cgroup.subtree_control and cgroup.threads to it");
  }
  // Below the root a domain group holds the task groups; a threaded one cannot.
  if (auto type = try_read_file(own / "cgroup.type"); type && trim(*type) != "domain") {
    throw Error(ErrorKind::kSandboxSetup, "cgroup_not_delegated",
                "the worker's cgroup " + own.string() + " is of type '" + trim(*type) +
                    "': task groups need a domain group");
  }
}

class V2Cgroup final : public Cgroup {
 public:
  V2Cgroup(fs::path dir, UniqueFd dir_fd) : dir_(std::move(dir)), dir_fd_(std::move(dir_fd)) {}

  ~V2Cgroup() override {
    dir_fd_.reset();
    // Usually the task is gone and the group is an empty leaf, which rmdir alone removes;
    // it answers EBUSY while a process (or a child group) is left.
    if (::rmdir(dir_.c_str()) == 0 || errno == ENOENT) return;
    try {
      kill_all();
    } catch (const std::exception& e) {
      spdlog::error("cgroup: killing the processes of {} failed: {}", dir_.string(), e.what());
    }
    remove_tree(dir_);
  }

  [[nodiscard]] int clone_into_fd() const override { return dir_fd_.get(); }

  void add_process(pid_t pid) override { write_file(dir_ / "cgroup.procs", std::to_string(pid)); }

  [[nodiscard]] std::vector<UniqueFd> open_procs_files() const override { return {}; }

  [[nodiscard]] std::vector<pid_t> processes() const override { return processes_below(dir_); }

  void signal_all(int sig) override { kill_each(processes(), sig); }

  void kill_all() override { kill_tree(dir_); }

  [[nodiscard]] Usage usage() const override {
    Usage usage;
    if (auto peak = read_u64(dir_ / "memory.peak")) {
      usage.peak_memory_bytes = *peak;
    } else if (auto current = read_u64(dir_ / "memory.current")) {
      // memory.peak is 5.19+; before it only samples of memory.current exist, which miss
      // any spike between two calls.
      std::uint64_t seen = sampled_peak_.load();
      while (*current > seen && !sampled_peak_.compare_exchange_weak(seen, *current)) {
      }
      usage.peak_memory_bytes = std::max(seen, *current);
      usage.exact = false;
      if (!warned_sampled_.exchange(true)) {
        spdlog::warn(
            "cgroup: no memory.peak in {} (kernel before 5.19): peak memory is "
            "sampled from memory.current and may miss short spikes",
            dir_.string());
      }
    } else {
      usage.exact = false;  // the memory controller is not enabled for this group
    }
    const auto cpu = parse_flat_keyed(try_read_file(dir_ / "cpu.stat").value_or(""));
    auto get = [&](const char* key) {
      auto it = cpu.find(key);
      return it == cpu.end() ? std::uint64_t{0} : it->second;
    };
    usage.cpu_user_us = get("user_usec");
    usage.cpu_system_us = get("system_usec");
    usage.cpu_throttled_periods = get("nr_throttled");
    usage.cpu_throttled_us = get("throttled_usec");
    // memory.events is hierarchical and .local is not; a task group has no children of its
    // own, so they agree, but under memory_localevents only .local would: take the larger.
    usage.oom_kills = std::max(read_keyed(dir_ / "memory.events", "oom_kill").value_or(0),
                               read_keyed(dir_ / "memory.events.local", "oom_kill").value_or(0));
    // "oom" is counted on the group whose own memory.max was reached (and on its ancestors), so
    // a parent's limit or the machine running out never shows here.
    usage.memory_limit_hits = std::max(read_keyed(dir_ / "memory.events", "oom").value_or(0),
                                       read_keyed(dir_ / "memory.events.local", "oom").value_or(0));
    usage.pids_limit_hits = std::max(read_keyed(dir_ / "pids.events", "max").value_or(0),
                                     read_keyed(dir_ / "pids.events.local", "max").value_or(0));
    return usage;
  }

  [[nodiscard]] std::string path() const override { return dir_.string(); }

 private:
  fs::path dir_;
  UniqueFd dir_fd_;
  mutable std::atomic<std::uint64_t> sampled_peak_{0};
  mutable std::atomic<bool> warned_sampled_{false};
};

class V2Manager final : public CgroupManager {
 public:
  explicit V2Manager(const V2Options& options) : own_(options.own) {
    // An earlier manager in this process may have moved us into the leaf already.
    if (own_.filename() == kV2LeafName) own_ = own_.parent_path();
    subtree_ = own_ / subtree_name(self_owner());

    const auto offered = words(read_file(own_ / "cgroup.controllers"));
    std::vector<std::string> wanted;
    for (const auto& name : options.wanted) {
      if (offered.count(name) != 0) {
        wanted.push_back(name);
      } else {
        not_offered_.push_back(name);
      }
    }
    std::vector<std::string> to_enable;
    const auto enabled = words(read_file(own_ / "cgroup.subtree_control"));
    for (const auto& name : wanted) {
      if (enabled.count(name) == 0) to_enable.push_back(name);
    }
    check_delegation(own_, to_enable);
    enable_in_own(wanted);
    ensure_dir(subtree_);
    subtree_fd_.reset(::open(subtree_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!subtree_fd_) throw_errno("open " + subtree_.string());
    const auto in_own = words(read_file(own_ / "cgroup.subtree_control"));
    for (const auto& name : wanted) {
      if (in_own.count(name) == 0) continue;
      // The subtree holds no process, so enabling cannot hit the no-internal-process rule.
      write_file(subtree_ / "cgroup.subtree_control", "+" + name);
      controllers_.push_back(name);
    }
    std::sort(controllers_.begin(), controllers_.end());
  }

  ~V2Manager() override {
    if (const int err = rmdir_retry(subtree_, std::chrono::milliseconds(0)); err != 0) {
      spdlog::warn("cgroup: cannot remove worker subtree {}: {}", subtree_.string(),
                   std::strerror(err));
    }
  }

  [[nodiscard]] CgroupVersion version() const override { return CgroupVersion::kV2; }
  [[nodiscard]] std::vector<std::string> controllers() const override { return controllers_; }
  [[nodiscard]] std::string subtree() const override { return subtree_.string(); }
  [[nodiscard]] std::vector<int> parent_fds(TreeKill /*kill*/) const override {
    return {subtree_fd_.get()};
  }

  // cgroup.kill ends every process of a v2 group whatever `kill` says.
  std::unique_ptr<Cgroup> create_group(std::string_view name, const Limits& limits,
                                       TreeKill /*kill*/) override {
    validate_group_name(name);
    if (limits.memory_bytes) require(kMemory, "resources.memory");
    if (limits.pids) require(kPids, "resources.pids");
    if (limits.cpus) require(kCpu, "resources.cpus");
    if (limits.cpus && !(*limits.cpus > 0.0)) {
      throw Error(ErrorKind::kConfig, "invalid_cpu_limit",
                  "resources.cpus must be positive, got " + std::to_string(*limits.cpus));
    }
    const fs::path dir = subtree_ / std::string(name);
    if (::mkdir(dir.c_str(), 0755) != 0) throw_errno("mkdir " + dir.string());
    UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd) {
      const int err = errno;
      ::rmdir(dir.c_str());
      throw_errno("open " + dir.string(), err);
    }
    auto group = std::make_unique<V2Cgroup>(dir, std::move(dir_fd));

    if (limits.memory_bytes) {
      set_limit(dir / "memory.max", std::to_string(*limits.memory_bytes), "resources.memory");
      if (fs::exists(dir / "memory.swap.max")) {
        set_limit(dir / "memory.swap.max", "0", "resources.memory (swap off)");
      } else if (host_has_swap()) {
        spdlog::warn(
            "cgroup: no memory.swap.max (swap accounting off): a task in {} may "
            "swap beyond resources.memory",
            dir.string());
      }
    }
    if (limits.pids) {
      set_limit(dir / "pids.max", std::to_string(*limits.pids), "resources.pids");
    }
    if (limits.cpus) {
      const auto quota = std::max<std::uint64_t>(
          kMinCpuQuotaUs, static_cast<std::uint64_t>(
                              std::llround(*limits.cpus * static_cast<double>(kCpuPeriodUs))));
      set_limit(dir / "cpu.max", std::to_string(quota) + " " + std::to_string(kCpuPeriodUs),
                "resources.cpus");
    }
    return group;
  }

  std::size_t remove_stale() override {
    std::size_t removed = 0;
    std::error_code ec;
    for (fs::directory_iterator it(own_, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string entry = it->path().filename().string();
      auto owner = parse_subtree_name(entry);
      if (!owner || owner_alive(*owner)) continue;
      try {
        kill_tree(it->path());
      } catch (const std::exception& e) {
        spdlog::error("cgroup: killing the processes left in stale {} failed: {}",
                      it->path().string(), e.what());
        continue;
      }
      if (remove_tree(it->path())) {
        spdlog::info("cgroup: removed stale worker subtree {}", it->path().string());
        ++removed;
      }
    }
    return removed;
  }

 private:
  void require(const char* controller, std::string_view limit) const {
    if (std::find(controllers_.begin(), controllers_.end(), controller) != controllers_.end()) {
      return;
    }
    const bool offered =
        std::find(not_offered_.begin(), not_offered_.end(), controller) == not_offered_.end();
    throw Error(
        ErrorKind::kSandboxSetup, "cgroup_controller_missing",
        std::string(controller) + " controller not available: " +
            (offered ? "could not be enabled in " + (own_ / "cgroup.subtree_control").string()
                     : "not in " + (own_ / "cgroup.controllers").string()) +
            ": cannot enforce " + std::string(limit));
  }

  // Enables `wanted` in the worker's own group so its subtree can get them. Outside the root,
  // a group with controllers enabled for its children may hold no process itself, so the
  // processes of the own group (the worker, and whatever shares its group) move to a leaf.
  void enable_in_own(const std::vector<std::string>& wanted) {
    const auto enabled = words(read_file(own_ / "cgroup.subtree_control"));
    std::vector<std::string> missing;
    for (const auto& name : wanted) {
      if (enabled.count(name) == 0) missing.push_back(name);
    }
    if (missing.empty()) return;
    // Only the root has no cgroup.type, and only the root is exempt from the rule.
    const bool is_root = !fs::exists(own_ / "cgroup.type");
    for (const auto& name : missing) {
      for (int attempt = 0;; ++attempt) {
        if (!is_root && !read_pids(own_ / "cgroup.procs").empty()) {
          const fs::path leaf = own_ / kV2LeafName;
          ensure_dir(leaf);
          move_all_processes(own_, leaf);
          spdlog::info("cgroup: moved the processes of {} into {} to enable controllers",
                       own_.string(), leaf.string());
        }
        const int err = try_write_file(own_ / "cgroup.subtree_control", "+" + name);
        if (err == 0) break;
        // EBUSY: a process entered the own group meanwhile (a supervisor adding a helper).
        if (err == EBUSY && !is_root && attempt < 3) continue;
        spdlog::warn("cgroup: cannot enable {} in {}: {}", name,
                     (own_ / "cgroup.subtree_control").string(), std::strerror(err));
        break;
      }
    }
  }

  fs::path own_;
  fs::path subtree_;
  UniqueFd subtree_fd_;
  std::vector<std::string> controllers_;
  std::vector<std::string> not_offered_;
};

}  // namespace

std::unique_ptr<CgroupManager> cgroup_internal::make_v2_manager(const V2Options& options) {
  auto manager = std::make_unique<V2Manager>(options);
  manager->remove_stale();
  return manager;
}

}  // namespace tamma::sandbox
