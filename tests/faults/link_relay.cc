#include "faults/link_relay.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <queue>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace tamma::faults {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// Opens a TAP device named `ifname` inside the namespace at `netns`: the descriptor is made by
// a thread that has joined the namespace, which is where the device then lives.
int open_tap_in(const std::filesystem::path& netns, const char* ifname) {
  int fd = -1;
  std::string error;
  std::thread t([&] {
    const int ns = ::open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      error = errno_text("open " + netns.string());
      return;
    }
    // Only this thread moves; it ends right after, so nobody else runs in the namespace.
    if (::setns(ns, CLONE_NEWNET) != 0) {
      error = errno_text("setns " + netns.string());
      ::close(ns);
      return;
    }
    ::close(ns);
    const int tun = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (tun < 0) {
      error = errno_text("open /dev/net/tun");
      return;
    }
    ifreq ifr{};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    std::strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    if (::ioctl(tun, TUNSETIFF, &ifr) != 0) {
      error = errno_text(std::string("TUNSETIFF ") + ifname);
      ::close(tun);
      return;
    }
    fd = tun;
  });
  t.join();
  if (fd < 0) throw std::runtime_error("link relay: " + error);
  return fd;
}

struct Frame {
  Clock::time_point due;
  std::uint64_t seq;
  std::string bytes;
  bool operator>(const Frame& other) const {
    return due != other.due ? due > other.due : seq > other.seq;
  }
};
using FrameQueue = std::priority_queue<Frame, std::vector<Frame>, std::greater<>>;

bool process_alive(int pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

void run_checked(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error(errno_text("pipe2"));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    throw std::runtime_error("cannot run " + join(argv) + ": " + std::strerror(rc));
  }
  std::string output;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) output.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(join(argv) + " failed (status " + std::to_string(status) +
                             "): " + output);
  }
}

LinkRelay::LinkRelay() {
  static std::atomic<int> counter{0};
  const int n = counter.fetch_add(1);
  const std::string base = "tamma-faults-" + std::to_string(::getpid()) + "-" + std::to_string(n);
  name_a_ = base + "-a";
  name_b_ = base + "-b";
  // The subnet only has to be unique between the two ends: each pair has namespaces of its
  // own, so relays of other tests may use the same numbers. Varied anyway, to read logs by.
  subnet_ = 1 + static_cast<int>((::getpid() + n) % 250);
  try {
    if (::geteuid() != 0) throw std::runtime_error("link relay: needs root (netns, TAP devices)");
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
      throw std::runtime_error(errno_text("link relay: /dev/net/tun"));
    }
    run_checked({"ip", "netns", "add", name_a_});
    made_a_ = true;
    run_checked({"ip", "netns", "add", name_b_});
    made_b_ = true;
    fd_a_ = open_tap_in(netns_path(Side::kA), "tap0");
    fd_b_ = open_tap_in(netns_path(Side::kB), "tap0");
    for (Side side : {Side::kA, Side::kB}) {
      const std::string& ns = netns_name(side);
      run_checked({"ip", "-n", ns, "link", "set", "lo", "up"});
      run_checked({"ip", "-n", ns, "addr", "add", address(side) + "/24", "dev", "tap0"});
      run_checked({"ip", "-n", ns, "link", "set", "tap0", "up"});
    }
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) throw std::runtime_error(errno_text("eventfd"));
    thread_ = std::thread([this] { forward_loop(); });
  } catch (...) {
    teardown();
    throw;
  }
}

LinkRelay::~LinkRelay() { teardown(); }

void LinkRelay::teardown() noexcept {
  if (thread_.joinable()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto ignored = ::write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  for (int* fd : {&fd_a_, &fd_b_, &stop_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  // Closing the descriptors removed the TAP devices; the namespaces go with their names.
  for (auto [made, name] : {std::pair{&made_a_, &name_a_}, std::pair{&made_b_, &name_b_}}) {
    if (!*made) continue;
    try {
      run_checked({"ip", "netns", "del", *name});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[faults] could not delete netns %s: %s\n", name->c_str(), e.what());
    }
    *made = false;
  }
}

std::string LinkRelay::address(Side side) const {
  return "10.77." + std::to_string(subnet_) + (side == Side::kA ? ".1" : ".2");
}

LinkRelay::Stats LinkRelay::stats() const {
  return {forwarded_.load(), dropped_loss_.load(), dropped_partition_.load(),
          dropped_overflow_.load()};
}

void LinkRelay::forward_loop() {
  std::mt19937_64 rng(0x7a11a + static_cast<std::uint64_t>(subnet_));
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  FrameQueue to_b;  // read from A, written to B
  FrameQueue to_a;
  std::uint64_t seq = 0;
  std::vector<char> buffer(65536);

  for (;;) {
    // Sleep until a frame arrives, a queued frame is due, or the destructor calls.
    int timeout_ms = -1;
    const auto now = Clock::now();
    for (const FrameQueue* q : {&to_a, &to_b}) {
      if (q->empty()) continue;
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(q->top().due - now).count();
      const int w = static_cast<int>(std::max<std::int64_t>(wait, 0));
      timeout_ms = timeout_ms < 0 ? w : std::min(timeout_ms, w);
    }
    pollfd fds[3] = {{fd_a_, POLLIN, 0}, {fd_b_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int ready = ::poll(fds, 3, timeout_ms);
    if (ready < 0 && errno != EINTR) return;
    if (fds[2].revents != 0) return;

    for (int i = 0; i < 2; ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      FrameQueue& queue = i == 0 ? to_b : to_a;
      // Everything waiting now, up to a bound so the other side is not starved.
      for (int frames = 0; frames < 256; ++frames) {
        const ssize_t got = ::read(fds[i].fd, buffer.data(), buffer.size());
        if (got <= 0) break;
        if (partition_.load()) {
          dropped_partition_.fetch_add(1);
          continue;
        }
        const double loss = loss_.load();
        if (loss > 0 && uniform(rng) < loss) {
          dropped_loss_.fetch_add(1);
          continue;
        }
        if (queue.size() >= kQueueLimit) {
          dropped_overflow_.fetch_add(1);
          continue;
        }
        queue.push(Frame{Clock::now() + std::chrono::milliseconds(delay_ms_.load()), seq++,
                         std::string(buffer.data(), static_cast<std::size_t>(got))});
      }
    }

    const auto send_time = Clock::now();
    for (int i = 0; i < 2; ++i) {
      FrameQueue& queue = i == 0 ? to_b : to_a;
      const int out = i == 0 ? fd_b_ : fd_a_;
      while (!queue.empty() && queue.top().due <= send_time) {
        // A partition that starts while frames are in flight cuts them too, as a cable would.
        if (partition_.load()) {
          dropped_partition_.fetch_add(1);
        } else if (::write(out, queue.top().bytes.data(), queue.top().bytes.size()) < 0) {
          dropped_overflow_.fetch_add(1);  // the device refused it (full or down)
        } else {
          forwarded_.fetch_add(1);
        }
        queue.pop();
      }
    }
  }
}

void LinkRelay::sweep_stale() {
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/run/netns", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const std::string prefix = "tamma-faults-";
    if (name.rfind(prefix, 0) != 0) continue;
    const int pid = std::atoi(name.c_str() + prefix.size());
    if (pid <= 0 || process_alive(pid)) continue;
    try {
      run_checked({"ip", "netns", "del", name});
      std::fprintf(stderr, "[faults] removed stale netns %s\n", name.c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[faults] could not remove stale netns %s: %s\n", name.c_str(),
                   e.what());
    }
  }
}

}  // namespace tamma::faults
