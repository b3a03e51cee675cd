#pragma once
// Runs commands in a real sandbox for the tests: pipes for the output, a bounded wait, and
// checks that nothing of a task is left behind.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "sandbox/mount.h"
#include "sandbox/sandbox.h"
#include "sandbox/shared_cgroups.h"

namespace tamma::sandbox::testing {

struct RunResult {
  std::optional<ExitStatus> exit;
  std::string out, err;
  std::uint64_t out_bytes = 0;  // all of stdout, also beyond what `out` keeps
  Usage usage;
  std::vector<std::string> degradations;
  bool killed_by_test = false;  // the deadline passed and the test called kill_all
  std::chrono::milliseconds wall{0};
};

struct RunOptions {
  std::chrono::milliseconds timeout{20'000};
  std::size_t keep_bytes = 1 << 20;
  // Called once, right after spawn, with the running process.
  std::function<void(Process&)> started;
};

inline std::pair<UniqueFd, UniqueFd> cloexec_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

inline RunResult run(Sandbox& sandbox, Command command, const RunOptions& options = {}) {
  using Clock = std::chrono::steady_clock;
  auto [out_r, out_w] = cloexec_pipe();
  auto [err_r, err_w] = cloexec_pipe();
  command.stdout_fd = out_w.get();
  command.stderr_fd = err_w.get();
  const auto start = Clock::now();
  auto process = sandbox.spawn(command);
  out_w.reset();
  err_w.reset();
  if (options.started) options.started(*process);
  RunResult result;
  const auto deadline = start + options.timeout;
  auto drain = [&](UniqueFd& fd, std::string& keep, std::uint64_t* total) {
    char buffer[65536];
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n <= 0) {
      if (n == 0 || errno != EINTR) fd.reset();
      return;
    }
    if (total != nullptr) *total += static_cast<std::uint64_t>(n);
    if (keep.size() < options.keep_bytes) keep.append(buffer, static_cast<std::size_t>(n));
  };
  while (!result.exit || out_r || err_r) {
    std::vector<pollfd> fds;
    if (out_r) fds.push_back({out_r.get(), POLLIN, 0});
    if (err_r) fds.push_back({err_r.get(), POLLIN, 0});
    if (!result.exit) fds.push_back({process->exit_fd(), POLLIN, 0});
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    int ready = ::poll(fds.data(), fds.size(), std::max<int>(0, static_cast<int>(left.count())));
    if (ready == 0 && Clock::now() >= deadline) {
      result.killed_by_test = true;
      process->kill_all();
      result.exit = process->poll_exit();
      break;
    }
    for (const auto& p : fds) {
      if (p.revents == 0) continue;
      if (out_r && p.fd == out_r.get())
        drain(out_r, result.out, &result.out_bytes);
      else if (err_r && p.fd == err_r.get())
        drain(err_r, result.err, nullptr);
      else if (!result.exit)
        result.exit = process->poll_exit();
    }
    // The main process is gone: the rest of the tree must not keep the pipes open.
    if (result.exit && (out_r || err_r)) process->kill_all();
  }
  result.wall = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  result.usage = process->usage();
  result.degradations = process->degradations();
  return result;
}

inline std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Mounts of this (the worker's) namespace at or below `root`. Every mount of a jail lies below
// the host directory its root is mounted on, so a mount that escaped a sandbox's private
// namespace shows there; counting only there keeps other tests' mounts (a workspace's disk
// image, mounted by a test running in parallel) out of the check.
inline int mount_count_under(const std::string& root) {
  std::ifstream in("/proc/self/mountinfo");
  int count = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, device, source, mount_point;
    fields >> id >> parent >> device >> source >> mount_point;
    if (mount_point == root || mount_point.rfind(root + "/", 0) == 0) ++count;
  }
  return count;
}

// Processes whose parent is this test process (the sandbox's PID 1s and tasks).
inline int child_count() {
  int count = 0;
  const std::string self = std::to_string(::getpid());
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = slurp(entry.path() / "stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid == self) ++count;
  }
  return count;
}

// Task groups still present in the worker's cgroup subtree.
inline std::vector<std::string> leftover_groups() {
  std::vector<std::string> left;
  CgroupManager* manager = shared_cgroup_manager();
  if (manager == nullptr) return left;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(manager->subtree(), ec)) {
    if (entry.is_directory()) left.push_back(entry.path().string());
  }
  return left;
}

// Asserts, at the end of a test, that the sandbox left nothing behind.
class NoLeaks {
 public:
  NoLeaks() : jail_root_(choose_root_mount_point({})), mounts_(mount_count_under(jail_root_)) {}
  void check() const {
    EXPECT_EQ(mount_count_under(jail_root_), mounts_)
        << "mounts leaked into the worker's namespace below " << jail_root_;
    EXPECT_EQ(child_count(), 0) << "task processes left behind";
    EXPECT_TRUE(leftover_groups().empty()) << "cgroups left behind";
  }

 private:
  std::string jail_root_;  // where the sandboxes of these tests mount their root
  int mounts_;
};

}  // namespace tamma::sandbox::testing
