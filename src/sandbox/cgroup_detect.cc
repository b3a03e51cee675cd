// Detection of the host's cgroup layout (v1, v2 or hybrid) and the helpers the v1 and v2
// implementations share (declared in cgroup_internal.h).

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/unique_fd.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

namespace tamma::sandbox {
namespace cgroup_internal {

namespace {

constexpr std::string_view kSubtreePrefix = "tamma-worker-";

std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = text.find(separator, start);
    if (end == std::string_view::npos) {
      parts.emplace_back(text.substr(start));
      break;
    }
    parts.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_octal(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size() &&
        std::all_of(text.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                    text.begin() + static_cast<std::ptrdiff_t>(i) + 4,
                    [](char c) { return c >= '0' && c <= '7'; })) {
      out.push_back(static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 +
                                      (text[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::optional<std::uint64_t> to_u64(std::string_view text) {
  std::uint64_t value = 0;
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
  return value;
}

bool has_option(const MountInfo& mount, std::string_view option) {
  return std::find(mount.super_options.begin(), mount.super_options.end(), option) !=
         mount.super_options.end();
}

}  // namespace

std::optional<std::string> try_read_file(const fs::path& file) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("open " + file.string());
  }
  std::string content;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      // A group removed while we read it reads as gone, like a missing file.
      if (errno == ENODEV) return std::nullopt;
      throw_errno("read " + file.string());
    }
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
  }
  return content;
}

std::string read_file(const fs::path& file) {
  auto content = try_read_file(file);
  if (!content) throw_errno("open " + file.string(), ENOENT);
  return *content;
}

int try_write_file(const fs::path& file, std::string_view value) {
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno;
  const ssize_t n = ::write(fd.get(), value.data(), value.size());
  if (n < 0) return errno;
  if (static_cast<std::size_t>(n) != value.size()) return EIO;
  return 0;
}

void write_file(const fs::path& file, std::string_view value) {
  const int err = try_write_file(file, value);
  if (err != 0) throw_errno("write '" + std::string(value) + "' to " + file.string(), err);
}

std::string trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\n");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\n");
  return std::string(text.substr(first, last - first + 1));
}

std::uint64_t parse_u64(std::string_view text, std::string_view what) {
  const std::string trimmed = trim(text);
  auto value = to_u64(trimmed);
  if (!value) {
    throw Error(ErrorKind::kInfrastructure, "cgroup_parse_failed",
                "cannot parse '" + trimmed + "' as a number in " + std::string(what));
  }
  return *value;
}

std::map<std::string, std::uint64_t> parse_flat_keyed(std::string_view text) {
  std::map<std::string, std::uint64_t> values;
  for (const auto& line : split(text, '\n')) {
    const auto space = line.find(' ');
    if (space == std::string::npos) continue;
    // Keys of unexpected shape (a future kernel's) are skipped rather than fatal.
    if (auto value = to_u64(trim(std::string_view(line).substr(space + 1)))) {
      values[line.substr(0, space)] = *value;
    }
  }
  return values;
}

std::optional<std::uint64_t> read_keyed(const fs::path& file, std::string_view key) {
  auto content = try_read_file(file);
  if (!content) return std::nullopt;
  auto values = parse_flat_keyed(*content);
  auto it = values.find(std::string(key));
  if (it == values.end()) return std::nullopt;
  return it->second;
}

std::optional<std::uint64_t> read_u64(const fs::path& file) {
  auto content = try_read_file(file);
  if (!content) return std::nullopt;
  return parse_u64(*content, file.string());
}

std::vector<ProcCgroup> parse_proc_cgroup(std::string_view text) {
  std::vector<ProcCgroup> entries;
  for (const auto& line : split(text, '\n')) {
    if (line.empty()) continue;
    const auto first = line.find(':');
    const auto second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) {
      throw Error(ErrorKind::kInfrastructure, "cgroup_parse_failed",
                  "unexpected line in /proc/self/cgroup: '" + line + "'");
    }
    ProcCgroup entry;
    entry.hierarchy_id =
        static_cast<int>(parse_u64(std::string_view(line).substr(0, first), "/proc/self/cgroup"));
    const std::string controllers = line.substr(first + 1, second - first - 1);
    if (!controllers.empty()) entry.controllers = split(controllers, ',');
    entry.path = line.substr(second + 1);
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::vector<MountInfo> parse_mountinfo(std::string_view text) {
  std::vector<MountInfo> mounts;
  for (const auto& line : split(text, '\n')) {
    if (line.empty()) continue;
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    const auto fields = split(line, ' ');
    const auto dash =
        static_cast<std::size_t>(std::find(fields.begin(), fields.end(), "-") - fields.begin());
    if (fields.size() < 6 || dash + 3 >= fields.size()) {
      throw Error(ErrorKind::kInfrastructure, "mountinfo_parse_failed",
                  "unexpected line in /proc/self/mountinfo: '" + line + "'");
    }
    MountInfo mount;
    mount.root = unescape_octal(fields[3]);
    mount.mount_point = unescape_octal(fields[4]);
    mount.fstype = fields[dash + 1];
    mount.source = unescape_octal(fields[dash + 2]);
    mount.super_options = split(fields[dash + 3], ',');
    mounts.push_back(std::move(mount));
  }
  return mounts;
}

std::optional<std::uint64_t> process_start_time(pid_t pid) {
  std::optional<std::string> stat;
  try {
    stat = try_read_file("/proc/" + std::to_string(pid) + "/stat");
  } catch (const Error&) {
    return std::nullopt;  // ESRCH while reading: the process just exited
  }
  if (!stat) return std::nullopt;
  // comm (field 2) may contain spaces and parentheses: count fields after the last ')'.
  const auto paren = stat->rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  const auto fields = split(std::string_view(*stat).substr(paren + 2), ' ');
  constexpr std::size_t kStartTimeIndex = 22 - 3;  // field 3 (state) is index 0
  if (fields.size() <= kStartTimeIndex) return std::nullopt;
  return to_u64(fields[kStartTimeIndex]);
}

Owner self_owner() {
  const pid_t pid = ::getpid();
  auto start = process_start_time(pid);
  if (!start) {
    throw Error(ErrorKind::kInfrastructure, "proc_unreadable",
                "cannot read this process's start time from /proc/self/stat");
  }
  return Owner{pid, *start};
}

std::string subtree_name(const Owner& owner) {
  return std::string(kSubtreePrefix) + std::to_string(owner.pid) + "-" +
         std::to_string(owner.start_time);
}

std::optional<Owner> parse_subtree_name(std::string_view name) {
  if (!name.starts_with(kSubtreePrefix)) return std::nullopt;
  name.remove_prefix(kSubtreePrefix.size());
  const auto dash = name.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto pid = to_u64(name.substr(0, dash));
  auto start = to_u64(name.substr(dash + 1));
  if (!pid || !start || *pid == 0 || *pid > static_cast<std::uint64_t>(INT32_MAX)) {
    return std::nullopt;
  }
  return Owner{static_cast<pid_t>(*pid), *start};
}

bool owner_alive(const Owner& owner) {
  auto start = process_start_time(owner.pid);
  return start && *start == owner.start_time;
}

bool host_has_swap() {
  auto swaps = try_read_file("/proc/swaps");
  // The first line is a header; any further line is an active swap area.
  return swaps && std::count(swaps->begin(), swaps->end(), '\n') > 1;
}

void validate_group_name(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos || name.size() > 200) {
    throw Error(ErrorKind::kInfrastructure, "invalid_cgroup_name",
                "cgroup name '" + std::string(name) + "' is not a single path component");
  }
}

std::vector<pid_t> read_pids(const fs::path& procs_file) {
  std::vector<pid_t> pids;
  auto content = try_read_file(procs_file);
  if (!content) return pids;
  for (const auto& line : split(*content, '\n')) {
    if (line.empty()) continue;
    pids.push_back(static_cast<pid_t>(parse_u64(line, procs_file.string())));
  }
  return pids;
}

void ensure_dir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir " + dir.string());
}

int rmdir_retry(const fs::path& dir, std::chrono::milliseconds timeout) {
  Backoff backoff(timeout);
  for (;;) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return 0;
    const int err = errno;
    if (err != EBUSY || !backoff.wait()) return err;
  }
}

std::vector<fs::path> subtree_bottom_up(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec) && !it->is_symlink(type_ec)) {
      auto below = subtree_bottom_up(it->path());
      out.insert(out.end(), below.begin(), below.end());
    }
  }
  out.push_back(dir);
  return out;
}

Backoff::Backoff(std::chrono::milliseconds timeout)
    : deadline_(std::chrono::steady_clock::now() + timeout) {}

bool Backoff::wait() {
  const auto now = std::chrono::steady_clock::now();
  if (now >= deadline_) return false;
  std::this_thread::sleep_for(
      std::min<std::chrono::steady_clock::duration>(delay_, deadline_ - now));
  delay_ = std::min<std::chrono::microseconds>(delay_ * 2, std::chrono::milliseconds(10));
  return true;
}

void move_all_processes(const fs::path& from, const fs::path& to) {
  // Each round moves what was listed; a process forking meanwhile leaves a child behind,
  // which the next round catches. A group that keeps refilling is a bug worth reporting.
  constexpr int kRounds = 100;
  for (int round = 0; round < kRounds; ++round) {
    const auto pids = read_pids(from / "cgroup.procs");
    if (pids.empty()) return;
    for (pid_t pid : pids) {
      const int err = try_write_file(to / "cgroup.procs", std::to_string(pid));
      if (err != 0 && err != ESRCH) {
        throw_errno("move pid " + std::to_string(pid) + " into " + (to / "cgroup.procs").string(),
                    err);
      }
    }
  }
  throw Error(
      ErrorKind::kSandboxSetup, "cgroup_not_emptied",
      "processes keep appearing in " + from.string() + " while moving them to " + to.string());
}

fs::path resolve_own(const MountInfo& mount, const std::string& proc_path) {
  const fs::path mount_point = fs::path(mount.mount_point).lexically_normal();
  auto below = [&](std::string_view rest) {
    const fs::path rel = fs::path(rest).relative_path().lexically_normal();
    return rel.empty() || rel == "." ? mount_point : mount_point / rel;
  };
  if (mount.root == "/") return below(proc_path);
  // A container may see only a sub-hierarchy at the mount point; our path then starts with it.
  const std::string& root = mount.root;
  if (proc_path == root) return mount_point;
  if (proc_path.starts_with(root + "/"))
    return below(std::string_view(proc_path).substr(root.size()));
  throw Error(ErrorKind::kSandboxSetup, "cgroup_outside_mount",
              "this process's cgroup " + proc_path + " is outside the hierarchy mounted at " +
                  mount.mount_point + " (root " + root + ")");
}

std::vector<V1Hierarchy> find_v1_hierarchies(const std::vector<MountInfo>& mounts,
                                             const std::vector<ProcCgroup>& own,
                                             const fs::path& base) {
  static const std::vector<std::string> kUsed{kMemory, kPids, kCpu, kCpuacct, kFreezer};
  std::vector<V1Hierarchy> hierarchies;
  for (const MountInfo& entry_mount : mounts) {
    const MountInfo* mount = &entry_mount;
    if (mount->fstype != "cgroup" ||
        fs::path(mount->mount_point).parent_path() != base.lexically_normal()) {
      continue;
    }
    std::vector<std::string> controllers;
    for (const auto& name : kUsed) {
      if (has_option(*mount, name)) controllers.push_back(name);
    }
    if (controllers.empty()) continue;
    // A hierarchy already taken (the same one bind-mounted twice) is not used twice.
    const bool duplicate = std::any_of(hierarchies.begin(), hierarchies.end(),
                                       [&](const auto& h) { return h.controllers == controllers; });
    if (duplicate) continue;
    const auto entry = std::find_if(own.begin(), own.end(), [&](const ProcCgroup& e) {
      return std::find(e.controllers.begin(), e.controllers.end(), controllers.front()) !=
             e.controllers.end();
    });
    if (entry == own.end()) {
      throw Error(ErrorKind::kSandboxSetup, "cgroup_v1_membership_unknown",
                  "the " + controllers.front() + " hierarchy is mounted at " + mount->mount_point +
                      " but /proc/self/cgroup does not list it");
    }
    hierarchies.push_back(V1Hierarchy{controllers, resolve_own(*mount, entry->path)});
  }
  return hierarchies;
}

}  // namespace cgroup_internal

namespace {

using namespace cgroup_internal;

constexpr const char* kDefaultBase = "/sys/fs/cgroup";

const ProcCgroup* find_v2_entry(const std::vector<ProcCgroup>& own) {
  for (const auto& entry : own) {
    if (entry.hierarchy_id == 0 && entry.controllers.empty()) return &entry;
  }
  return nullptr;
}

bool is_under(const fs::path& path, const fs::path& base) {
  auto rel = path.lexically_normal().lexically_relative(base.lexically_normal());
  return !rel.empty() && *rel.begin() != "..";
}

std::unique_ptr<CgroupManager> make_v2(const MountInfo& mount, const std::vector<ProcCgroup>& own) {
  const auto* entry = find_v2_entry(own);
  if (entry == nullptr) {
    throw Error(
        ErrorKind::kSandboxSetup, "cgroup_v2_membership_unknown",
        "cgroup2 is mounted at " + mount.mount_point + " but /proc/self/cgroup has no '0::' line");
  }
  V2Options options;
  options.mount = mount.mount_point;
  options.own = resolve_own(mount, entry->path);
  return make_v2_manager(options);
}

// A worker that is not root cannot create groups in a hybrid host's root-owned v1
// hierarchies, but its group in the unified hierarchy may be delegated to it (systemd does
// that for a user's services): there it gets no limits (the controllers are v1's) but exact
// tree kill and membership through cgroup.kill and cgroup.procs. Limits are then refused by
// name, as on any host that lacks their controller.
std::unique_ptr<CgroupManager> v1_or_unified(std::vector<V1Hierarchy> hierarchies,
                                             const MountInfo* unified,
                                             const std::vector<ProcCgroup>& own) {
  try {
    return make_v1_manager(std::move(hierarchies));
  } catch (const Error& v1) {
    if (::geteuid() == 0 || unified == nullptr) throw;
    try {
      auto manager = make_v2(*unified, own);
      spdlog::warn(
          "cgroup: the v1 hierarchies are not writable by uid {} ({}): using the delegated "
          "group {} of the unified hierarchy, which has no memory, pids or cpu controller",
          ::geteuid(), v1.what(), manager->subtree());
      return manager;
    } catch (const Error& v2) {
      throw Error(ErrorKind::kSandboxSetup, "cgroup_not_delegated",
                  std::string("no cgroup hierarchy is usable by uid ") +
                      std::to_string(::geteuid()) + ": v1: " + v1.what() +
                      "; unified: " + v2.what());
    }
  }
}

}  // namespace

// root_override names the cgroup2 mount to use (tests point it at /sys/fs/cgroup/unified on
// hybrid hosts) or a tmpfs directory holding v1 controller mounts, in place of /sys/fs/cgroup.
std::unique_ptr<CgroupManager> CgroupManager::create(const std::string& root_override) {
  const fs::path base = root_override.empty() ? fs::path(kDefaultBase) : fs::path(root_override);
  struct statfs st {};
  if (::statfs(base.c_str(), &st) != 0) {
    throw Error(ErrorKind::kSandboxSetup, "cgroup_not_mounted",
                "cannot statfs " + base.string() + ": " + std::strerror(errno) +
                    ": no cgroup hierarchy to enforce limits with");
  }
  const auto mounts = parse_mountinfo(read_file("/proc/self/mountinfo"));
  const auto own = parse_proc_cgroup(read_file("/proc/self/cgroup"));

  if (st.f_type == CGROUP2_SUPER_MAGIC) {
    // The longest cgroup2 mount point containing base: base itself in the usual case.
    const MountInfo* best = nullptr;
    for (const auto& mount : mounts) {
      if (mount.fstype != "cgroup2") continue;
      const fs::path point(mount.mount_point);
      if (point != base.lexically_normal() && !is_under(base, point)) continue;
      if (best == nullptr || mount.mount_point.size() > best->mount_point.size()) best = &mount;
    }
    if (best == nullptr) {
      throw Error(ErrorKind::kSandboxSetup, "cgroup2_mount_unknown",
                  base.string() + " is cgroup2 but not listed in /proc/self/mountinfo");
    }
    return make_v2(*best, own);
  }

  if (st.f_type != TMPFS_MAGIC) {
    throw Error(ErrorKind::kSandboxSetup, "cgroup_not_mounted",
                base.string() + " is neither a cgroup2 mount nor a tmpfs of v1 hierarchies");
  }

  // v1 or hybrid: the controller mounts sit right below base.
  const MountInfo* unified = nullptr;
  for (const auto& mount : mounts) {
    if (mount.fstype == "cgroup2" && unified == nullptr &&
        fs::path(mount.mount_point).parent_path() == base.lexically_normal()) {
      unified = &mount;
    }
  }
  auto hierarchies = find_v1_hierarchies(mounts, own, base);
  const bool v1_memory = std::any_of(hierarchies.begin(), hierarchies.end(), [](const auto& h) {
    return std::find(h.controllers.begin(), h.controllers.end(), kMemory) != h.controllers.end();
  });
  if (v1_memory) return v1_or_unified(std::move(hierarchies), unified, own);

  // A hybrid host whose memory controller was given to the unified hierarchy limits there.
  if (unified != nullptr) {
    auto controllers = try_read_file(fs::path(unified->mount_point) / "cgroup.controllers");
    if (controllers && controllers->find(kMemory) != std::string::npos) {
      return make_v2(*unified, own);
    }
  }
  if (!hierarchies.empty()) {
    spdlog::warn(
        "cgroup: no memory controller in any hierarchy under {}: memory limits "
        "cannot be enforced",
        base.string());
    return make_v1_manager(std::move(hierarchies));
  }
  if (unified != nullptr) return make_v2(*unified, own);
  throw Error(ErrorKind::kSandboxSetup, "cgroup_not_mounted",
              "no cgroup hierarchy is mounted under " + base.string());
}

}  // namespace tamma::sandbox
