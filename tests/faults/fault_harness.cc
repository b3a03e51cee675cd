#include "faults/fault_harness.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>
#include <sys/mount.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/encoding.h"
#include "common/error.h"
#include "faults/link_relay.h"

extern char** environ;

namespace tamma::faults {
namespace {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// The pid in a name like "tamma-faults-<pid>-...", or 0.
int owner_pid(const std::string& text) {
  const std::string marker = "tamma-faults-";
  const auto at = text.find(marker);
  if (at == std::string::npos) return 0;
  return std::atoi(text.c_str() + at + marker.size());
}

bool process_alive(int pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_text(const fs::path& file, const std::string& text) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(errno_text("open " + file.string()));
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int saved = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    errno = saved;
    throw std::runtime_error(errno_text("write " + text + " to " + file.string()));
  }
}

// Kills every process of a cgroup subtree and removes its groups, deepest first. True when
// nothing is left.
bool remove_cgroup_tree(const fs::path& root) {
  const auto deadline = Clock::now() + 15s;
  while (Clock::now() < deadline) {
    std::vector<fs::path> groups;
    std::error_code ec;
    if (!fs::exists(root, ec)) return true;
    groups.push_back(root);
    for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_directory(ec)) groups.push_back(it->path());
    }
    std::sort(groups.begin(), groups.end(), [](const fs::path& a, const fs::path& b) {
      return a.string().size() > b.string().size();
    });
    for (const auto& g : groups) {
      std::istringstream procs(read_text(g / "cgroup.procs"));
      for (int pid; procs >> pid;) {
        ::kill(pid, SIGCONT);
        ::kill(pid, SIGKILL);
      }
    }
    bool all = true;
    for (const auto& g : groups) {
      if (::rmdir(g.c_str()) != 0 && errno != ENOENT) all = false;
    }
    if (all) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

void unmount_stubbornly(const fs::path& where) {
  const auto deadline = Clock::now() + 5s;
  while (::umount2(where.c_str(), 0) != 0) {
    if (errno == EINVAL || errno == ENOENT) return;  // not mounted (any more)
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "[faults] %s busy, detaching it lazily\n", where.c_str());
      ::umount2(where.c_str(), MNT_DETACH);
      return;
    }
    std::this_thread::sleep_for(100ms);
  }
}

void thaw_at(const fs::path& where) {
  const int fd = ::open(where.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::ioctl(fd, FITHAW, 0);  // EINVAL when it was not frozen
  ::close(fd);
}

std::string format_line(const char* format, int index, std::size_t n) {
  char buffer[160];
  std::snprintf(buffer, sizeof buffer, format, index, static_cast<double>(n));
  return buffer;
}

constexpr const char* kPad = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN";

}  // namespace

// ---- Process ----

Process::Process(LaunchOptions options) : options_(std::move(options)) {
  // Everything the child needs is made before fork: after it, only system calls.
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    const auto eq = kv.find('=');
    merged[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
  }
  for (const auto& kv : options_.env) {
    const auto eq = kv.find('=');
    merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> cargv, cenv;
  for (const auto& a : options_.argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : env_strings) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);

  const int log_fd =
      ::open(options_.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error(errno_text("open " + options_.log_file.string()));
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int netns_fd = -1;
  if (!options_.netns.empty()) {
    netns_fd = ::open(options_.netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0) {
      ::close(log_fd);
      throw std::runtime_error(errno_text("open " + options_.netns.string()));
    }
  }
  std::vector<int> cgroup_fds;
  auto close_all = [&] {
    for (int fd : {log_fd, null_fd, netns_fd}) {
      if (fd >= 0) ::close(fd);
    }
    for (int fd : cgroup_fds) ::close(fd);
  };
  for (const auto& procs : options_.cgroup_procs) {
    const int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      const std::string error = errno_text("open " + procs.string());
      close_all();
      throw std::runtime_error(error);
    }
    cgroup_fds.push_back(fd);
  }
  const pid_t parent = ::getpid();
  const rlim_t nofile = options_.nofile.value_or(0);
  const bool set_nofile = options_.nofile.has_value();

  pid_ = ::fork();
  if (pid_ < 0) {
    const std::string error = errno_text("fork");
    close_all();
    throw std::runtime_error(error);
  }
  if (pid_ == 0) {
    // Dies with the test process (this is the main thread's child: the signal follows the
    // thread that forked, and gtest runs tests on the main thread).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    if (netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) != 0) ::_exit(125);
    if (set_nofile) {
      // The soft limit only: the hard one stays, so the test can raise the soft one again (a
      // hard limit needs CAP_SYS_RESOURCE to go back up, which root in a container may lack).
      rlimit limit{};
      if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(124);
      limit.rlim_cur = std::min(nofile, limit.rlim_max);
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(124);
    }
    if (!cgroup_fds.empty()) {
      char digits[24];
      int len = 0;
      for (pid_t p = ::getpid(); p > 0; p /= 10) digits[len++] = static_cast<char>('0' + p % 10);
      std::reverse(digits, digits + len);
      for (int fd : cgroup_fds) {
        if (::write(fd, digits, static_cast<std::size_t>(len)) != len) ::_exit(123);
      }
    }
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::dup2(null_fd, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  close_all();
}

Process::~Process() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGKILL);
    // Bounded: a process in uninterruptible sleep (a frozen filesystem nobody thawed) would
    // hold the test forever; it is left to init then, and said so.
    if (!wait_exit(30s)) {
      std::fprintf(stderr, "[faults] pid %d did not die after SIGKILL\n", static_cast<int>(pid_));
    }
  }
}

bool Process::running() {
  if (reaped_) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    return false;
  }
  return true;
}

void Process::signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

bool Process::wait_exit(std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (running()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

int Process::stop(std::chrono::milliseconds grace) {
  if (!running()) return status_;
  signal(SIGCONT);
  signal(SIGTERM);
  if (!wait_exit(grace)) kill();
  return status_;
}

void Process::kill() {
  signal(SIGCONT);
  signal(SIGKILL);
  wait_exit(30s);
}

std::string Process::log() const { return read_text(options_.log_file); }

bool Process::wait_for_log(const std::string& text, std::chrono::milliseconds limit,
                           std::size_t from) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    const std::string l = log();
    if (l.size() > from && l.find(text, from) != std::string::npos) return true;
    if (Clock::now() >= deadline || !running()) return false;
    std::this_thread::sleep_for(50ms);
  }
}

std::string tail_lines(const std::string& text, std::size_t lines) {
  std::size_t at = text.size();
  for (std::size_t n = 0; n <= lines && at > 0; ++n) {
    const auto nl = text.rfind('\n', at - 1);
    if (nl == std::string::npos) return text;
    at = nl;
  }
  return text.substr(at == 0 ? 0 : at + 1);
}

// ---- LoopFs ----

LoopFs::LoopFs(const fs::path& work_dir, std::uint64_t size_mb)
    : image_(work_dir / "fs.img"), mount_point_(work_dir / "mnt") {
  try {
    if (::geteuid() != 0) throw std::runtime_error("loop filesystem: needs root");
    {
      const int fd = ::open(image_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0) throw std::runtime_error(errno_text("create " + image_.string()));
      const int rc = ::ftruncate(fd, static_cast<off_t>(size_mb << 20));
      ::close(fd);
      if (rc != 0) throw std::runtime_error(errno_text("ftruncate " + image_.string()));
    }
    // No blocks reserved for root: the orchestrator runs as root and would not see it full.
    run_checked({"mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                 image_.string()});
    fs::create_directories(mount_point_);
    attach();
    if (::mount(device_.c_str(), mount_point_.c_str(), "ext4", 0, nullptr) != 0) {
      throw std::runtime_error(errno_text("mount " + device_ + " on " + mount_point_.string()));
    }
    mounted_ = true;
  } catch (...) {
    cleanup();
    throw;
  }
}

LoopFs::~LoopFs() { cleanup(); }

void LoopFs::attach() {
  // losetup prints the device it took.
  const fs::path out = image_.parent_path() / "losetup.out";
  run_checked(
      {"sh", "-c", "losetup --find --show '" + image_.string() + "' > '" + out.string() + "'"});
  device_ = read_text(out);
  while (!device_.empty() && (device_.back() == '\n' || device_.back() == ' ')) {
    device_.pop_back();
  }
  if (device_.rfind("/dev/loop", 0) != 0) {
    throw std::runtime_error("losetup gave no device: '" + device_ + "'");
  }
}

void LoopFs::cleanup() noexcept {
  thaw();
  if (mounted_) {
    unmount_stubbornly(mount_point_);
    mounted_ = false;
  }
  if (!device_.empty()) {
    try {
      run_checked({"losetup", "-d", device_});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[faults] %s\n", e.what());
    }
    device_.clear();
  }
}

void LoopFs::fill() {
  const fs::path filler = mount_point_ / ".filler";
  const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error(errno_text("create " + filler.string()));
  // Most of it at once, then the last blocks one write at a time until the kernel says no.
  const std::uint64_t avail = available_bytes();
  if (avail > (1u << 20)) {
    struct stat st {};
    ::fstat(fd, &st);
    ::posix_fallocate(fd, st.st_size, static_cast<off_t>(avail - (1u << 20)));
  }
  std::string block(64 * 1024, 'F');
  for (std::size_t size : {std::size_t{64 * 1024}, std::size_t{4096}, std::size_t{1}}) {
    while (::write(fd, block.data(), size) == static_cast<ssize_t>(size)) {
    }
  }
  ::fsync(fd);
  ::close(fd);
}

void LoopFs::free_space() {
  std::error_code ec;
  fs::remove(mount_point_ / ".filler", ec);
  // ext4 gives freed blocks back at the journal commit: make it now, not in 5 s.
  const int fd = ::open(mount_point_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::syncfs(fd);
    ::close(fd);
  }
}

std::uint64_t LoopFs::available_bytes() const {
  struct statvfs s {};
  if (::statvfs(mount_point_.c_str(), &s) != 0) return 0;
  return static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
}

void LoopFs::freeze(std::chrono::milliseconds longest) {
  thaw();
  const int dir = ::open(mount_point_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) throw std::runtime_error(errno_text("open " + mount_point_.string()));
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    ::close(dir);
    throw std::runtime_error(errno_text("pipe2"));
  }
  const int timeout_ms = static_cast<int>(longest.count());
  const pid_t guardian = ::fork();
  if (guardian < 0) {
    ::close(dir);
    throw std::runtime_error(errno_text("fork"));
  }
  if (guardian == 0) {
    // The guardian: its own session (a kill of the test's process group spares it), waits for
    // a byte, the end of the pipe (the test is gone) or the time limit, then thaws.
    ::setsid();
    ::close(pipe_fds[1]);
    pollfd p{pipe_fds[0], POLLIN, 0};
    while (::poll(&p, 1, timeout_ms) < 0 && errno == EINTR) {
    }
    ::ioctl(dir, FITHAW, 0);
    ::_exit(0);
  }
  ::close(pipe_fds[0]);
  guardian_pipe_ = pipe_fds[1];
  guardian_ = guardian;
  if (::ioctl(dir, FIFREEZE, 0) != 0) {
    const std::string error = errno_text("FIFREEZE " + mount_point_.string());
    ::close(dir);
    thaw();
    throw std::runtime_error(error);
  }
  ::close(dir);
}

void LoopFs::thaw() {
  if (guardian_pipe_ >= 0) {
    ::close(guardian_pipe_);
    guardian_pipe_ = -1;
  }
  if (guardian_ > 0) {
    while (::waitpid(guardian_, nullptr, 0) < 0 && errno == EINTR) {
    }
    guardian_ = -1;
  }
  if (mounted_) thaw_at(mount_point_);
}

// Not in every libc's headers: linux/fs/ext4/ext4.h.
constexpr unsigned long kExt4IocShutdown = _IOR('X', 125, std::uint32_t);
constexpr std::uint32_t kExt4GoingFlagsNoLogFlush = 0x2;

void LoopFs::crash() {
  const int dir = ::open(mount_point_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) throw std::runtime_error(errno_text("open " + mount_point_.string()));
  std::uint32_t flags = kExt4GoingFlagsNoLogFlush;
  const int rc = ::ioctl(dir, kExt4IocShutdown, &flags);
  const int err = errno;
  ::close(dir);
  if (rc != 0) {
    errno = err;
    throw std::runtime_error(errno_text("EXT4_IOC_SHUTDOWN " + mount_point_.string()));
  }
}

void LoopFs::remount() {
  thaw();
  if (mounted_) {
    if (::umount2(mount_point_.c_str(), 0) != 0) {
      throw std::runtime_error(errno_text("umount " + mount_point_.string()));
    }
    mounted_ = false;
  }
  // The image comes back on a new loop device. Mounting the old one again would hand back
  // its superblock, still shut down, whenever a mount namespace made meanwhile (a sandbox
  // of a test running beside this one, `ip netns exec`) still holds a copy of the mount:
  // the umount above then only took this namespace's. A fresh device is a fresh mount,
  // its journal replayed from what reached the image.
  try {
    run_checked({"losetup", "-d", device_});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[faults] %s\n", e.what());
  }
  device_.clear();
  attach();
  if (::mount(device_.c_str(), mount_point_.c_str(), "ext4", 0, nullptr) != 0) {
    throw std::runtime_error(errno_text("mount " + device_ + " on " + mount_point_.string()));
  }
  mounted_ = true;
}

// ---- MemoryCgroup ----

MemoryCgroup::MemoryCgroup(std::uint64_t limit_bytes) {
  static int counter = 0;
  const fs::path base = "/sys/fs/cgroup/memory";
  if (!fs::exists(base / "memory.limit_in_bytes")) {
    throw std::runtime_error("no cgroup v1 memory hierarchy at " + base.string());
  }
  dir_ = base / ("tamma-faults-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  if (::mkdir(dir_.c_str(), 0755) != 0)
    throw std::runtime_error(errno_text("mkdir " + dir_.string()));
  try {
    write_text(dir_ / "memory.limit_in_bytes", std::to_string(limit_bytes));
  } catch (...) {
    ::rmdir(dir_.c_str());
    throw;
  }
}

MemoryCgroup::~MemoryCgroup() {
  if (!remove_cgroup_tree(dir_)) {
    std::fprintf(stderr, "[faults] could not remove cgroup %s\n", dir_.c_str());
  }
}

std::string MemoryCgroup::read(const std::string& file) const { return read_text(dir_ / file); }

// ---- sweeping what a killed run left ----

void sweep_stale_resources() {
  LinkRelay::sweep_stale();
  // Mounts first (thawed before anything else touches them), then their loop devices.
  std::istringstream mountinfo(read_text("/proc/self/mountinfo"));
  std::vector<fs::path> stale_mounts;
  for (std::string line; std::getline(mountinfo, line);) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, point;
    fields >> id >> parent >> devno >> root >> point;
    const int pid = owner_pid(point);
    if (pid > 0 && !process_alive(pid)) stale_mounts.emplace_back(point);
  }
  for (const auto& m : stale_mounts) {
    thaw_at(m);
    ::umount2(m.c_str(), MNT_DETACH);
    std::fprintf(stderr, "[faults] removed stale mount %s\n", m.c_str());
  }
  std::error_code ec;
  for (fs::directory_iterator it("/sys/block", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string backing = read_text(it->path() / "loop" / "backing_file");
    const int pid = owner_pid(backing);
    if (pid <= 0 || process_alive(pid)) continue;
    try {
      run_checked({"losetup", "-d", "/dev/" + it->path().filename().string()});
      std::fprintf(stderr, "[faults] detached stale %s\n", it->path().filename().c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[faults] %s\n", e.what());
    }
  }
  for (fs::directory_iterator it("/sys/fs/cgroup/memory", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("tamma-faults-", 0) != 0) continue;
    const int pid = owner_pid(name);
    if (pid > 0 && !process_alive(pid) && remove_cgroup_tree(it->path())) {
      std::fprintf(stderr, "[faults] removed stale cgroup %s\n", it->path().c_str());
    }
  }
  for (fs::directory_iterator it(fs::temp_directory_path(), ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("tamma-faults-", 0) != 0) continue;
    const int pid = owner_pid(name);
    std::error_code ignored;
    if (pid > 0 && !process_alive(pid)) fs::remove_all(it->path(), ignored);
  }
}

// ---- Api ----

Api::Api(std::string url, std::string token, fs::path netns)
    : url_(std::move(url)), token_(std::move(token)), netns_(std::move(netns)) {
  thread_ = std::thread([this] { loop(); });
}

Api::~Api() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Api::loop() {
  if (!netns_.empty()) {
    const int fd = ::open(netns_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0)
      netns_error_ = errno_text("setns " + netns_.string());
    if (fd >= 0) ::close(fd);
  }
  for (;;) {
    std::packaged_task<void()> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

orchestrator::HttpResult Api::call(const std::string& method, const std::string& path,
                                   const std::string& body, std::vector<std::string> headers,
                                   std::chrono::milliseconds timeout) {
  orchestrator::HttpResult result;
  std::packaged_task<void()> job([&] {
    if (!netns_error_.empty()) throw std::runtime_error(netns_error_);
    try {
      if (!client_) client_ = std::make_unique<orchestrator::HttpClient>(url_, token_);
      result = client_->request(method, path, body, headers, timeout);
    } catch (...) {
      client_.reset();  // a connection that failed once is not trusted again
      throw;
    }
  });
  auto done = job.get_future();
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  wake_.notify_all();
  done.get();  // rethrows
  return result;
}

orchestrator::HttpResult Api::call_retrying(const std::string& method, const std::string& path,
                                            const std::string& body,
                                            std::vector<std::string> headers,
                                            std::chrono::milliseconds patience) {
  const auto deadline = Clock::now() + patience;
  for (;;) {
    try {
      return call(method, path, body, headers, 30s);
    } catch (const Error&) {
      if (Clock::now() > deadline) throw;
      std::this_thread::sleep_for(200ms);
    }
  }
}

// ---- workload ----

json TaskPlan::spec() const {
  const std::string line_format = "t" + std::to_string(index) + "-%08.0f-" + std::string(kPad);
  std::string run = "echo begin-" + std::to_string(index) + "\n";
  run += "seq -f '" + line_format + "' 1 " + std::to_string(first_lines) + "\n";
  if (alloc_mb > 0) {
    // tail keeps a line without a newline whole in memory until its input ends (after the
    // sleep); if it is killed meanwhile, wc counts less and the comparison fails the step.
    const std::string bytes = std::to_string(alloc_mb << 20);
    run += "test \"$({ head -c " + std::to_string(alloc_mb) + "M /dev/zero; sleep " +
           std::to_string(sleep_s) + "; } | tail | wc -c)\" = " + bytes + "\n";
  } else if (sleep_s > 0) {
    run += "sleep " + std::to_string(sleep_s) + "\n";
  }
  if (second_lines > 0) {
    run += "seq -f '" + line_format + "' " + std::to_string(first_lines + 1) + " " +
           std::to_string(first_lines + second_lines) + "\n";
  }
  run += "mkdir -p out\n";
  run += "seq -f 'art-" + std::to_string(index) + "-%07.0f' 1 " + std::to_string(artifact_lines) +
         " > " + artifact_name() + "\n";
  run += "echo end-" + std::to_string(index) + "\n";
  json spec = {{"type", "command"},
               {"timeout", "5m"},
               {"steps", {{{"name", "work"}, {"run", run}}}},
               {"artifacts", {artifact_name()}}};
  if (alloc_mb > 0) spec["resources"] = {{"memory", "2G"}};
  return spec;
}

std::string TaskPlan::expected_log() const {
  std::string out = "begin-" + std::to_string(index) + "\n";
  const std::string format = "t%d-%08.0f-" + std::string(kPad) + "\n";
  out.reserve((first_lines + second_lines) * 66 + 32);
  for (std::size_t n = 1; n <= first_lines + second_lines; ++n) {
    out += format_line(format.c_str(), index, n);
  }
  out += "end-" + std::to_string(index) + "\n";
  return out;
}

std::string TaskPlan::artifact_name() const { return "out/art-" + std::to_string(index) + ".txt"; }

std::string TaskPlan::expected_artifact() const {
  std::string out;
  for (std::size_t n = 1; n <= artifact_lines; ++n) {
    out += format_line("art-%d-%07.0f\n", index, n);
  }
  return out;
}

std::vector<TaskPlan> make_plans(int count, int min_sleep_s) {
  std::vector<TaskPlan> plans;
  for (int i = 0; i < count; ++i) {
    TaskPlan p;
    p.index = i;
    const std::size_t line_bytes =
        format_line(("t%d-%08.0f-" + std::string(kPad) + "\n").c_str(), i, 1).size();
    if (i % 4 == 0) {
      // 4 MiB printed at once, then exit: all of it must reach the log.
      p.first_lines = (4u << 20) / line_bytes;
    } else {
      const std::size_t kib = 150 + static_cast<std::size_t>(i * 173) % 451;
      const std::size_t lines = kib * 1024 / line_bytes;
      p.first_lines = lines / 2;
      p.second_lines = lines - lines / 2;
      p.sleep_s = min_sleep_s + i % 3;
    }
    p.artifact_lines = 2000 + static_cast<std::size_t>(i * 7919) % 40000;
    plans.push_back(p);
  }
  return plans;
}

std::string sha256_hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

bool is_final_state(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "dead" || state == "cancelled";
}

std::string Tally::line(const std::string& name) const {
  return "[faults] " + name + ": submitted=" + std::to_string(submitted) +
         " succeeded=" + std::to_string(succeeded) + " retried=" + std::to_string(retried) +
         " lost=" + std::to_string(lost) + " doubled=" + std::to_string(doubled) +
         " logs_incomplete=" + std::to_string(logs_incomplete) +
         " artifacts_bad=" + std::to_string(artifacts_bad) +
         " recovery_ms=" + std::to_string(recovery_ms);
}

std::string read_log(Api& api, const std::string& task_id, int attempt) {
  std::string log;
  for (;;) {
    auto r = api.call_retrying("GET", "/api/v1/tasks/" + task_id +
                                          "/logs?attempt=" + std::to_string(attempt) +
                                          "&offset=" + std::to_string(log.size()));
    if (r.status != 200) {
      throw std::runtime_error("logs of " + task_id + ": " + std::to_string(r.status) + " " +
                               r.body.substr(0, 300));
    }
    log += r.body;
    const std::string length = r.header("x-tamma-log-length");
    if (r.body.empty() || length.empty() || log.size() >= std::stoull(length)) return log;
  }
}

namespace {

struct AttemptRow {
  std::string task_id;
  int attempt = 0;
  std::string outcome;
};

// Read-only, straight through SQLite: the orchestrator's own store code is not needed for
// this, and a reader never takes the writer's lock in WAL mode.
std::vector<AttemptRow> attempts_in(const fs::path& db_file, std::string& error) {
  std::vector<AttemptRow> rows;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    error = "open " + db_file.string() + ": " + (db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return rows;
  }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db,
                         "SELECT task_id, attempt, COALESCE(outcome, '') FROM attempts "
                         "ORDER BY task_id, attempt",
                         -1, &s, nullptr) != SQLITE_OK) {
    error = std::string("attempts: ") + sqlite3_errmsg(db);
    sqlite3_close(db);
    return rows;
  }
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    rows.push_back({reinterpret_cast<const char*>(sqlite3_column_text(s, 0)),
                    sqlite3_column_int(s, 1),
                    reinterpret_cast<const char*>(sqlite3_column_text(s, 2))});
  }
  if (rc != SQLITE_DONE) error = std::string("attempts: ") + sqlite3_errmsg(db);
  sqlite3_finalize(s);
  sqlite3_close(db);
  return rows;
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Where two texts first differ, for a message.
std::string first_difference(const std::string& got, const std::string& want) {
  std::size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return "got " + std::to_string(got.size()) + " bytes, expected " + std::to_string(want.size()) +
         ", first difference at byte " + std::to_string(i);
}

}  // namespace

void verify_tasks(Api& api, const std::vector<TaskPlan>& plans, const std::vector<std::string>& ids,
                  const fs::path& db_file, Tally& tally) {
  std::string db_error;
  std::map<std::string, int> completions;
  for (const auto& row : attempts_in(db_file, db_error)) {
    // Every attempt row of a task of this batch: the outcomes say how each attempt ended.
    if (std::find(ids.begin(), ids.end(), row.task_id) == ids.end()) continue;
    ++tally.attempt_outcomes[row.outcome.empty() ? "(open)" : row.outcome];
    if (row.outcome == "succeeded") ++completions[row.task_id];
  }
  if (!db_error.empty()) tally.problems.push_back("attempts table unreadable: " + db_error);

  for (std::size_t i = 0; i < plans.size(); ++i) {
    const TaskPlan& plan = plans[i];
    const std::string& id = ids[i];
    const std::string who = "task " + std::to_string(plan.index) + " (" + id + ")";
    ++tally.submitted;
    if (id.empty()) {
      ++tally.lost;
      tally.problems.push_back(who + ": was never accepted");
      continue;
    }
    auto r = api.call_retrying("GET", "/api/v1/tasks/" + id);
    if (r.status != 200) {
      ++tally.lost;
      tally.problems.push_back(who + ": GET " + std::to_string(r.status));
      continue;
    }
    const json view = r.json();
    const std::string state = view.value("state", "");
    const int attempt = view.value("attempt", 0);
    ++tally.states[state];
    if (attempt > 1) ++tally.retried;
    if (!is_final_state(state)) {
      ++tally.lost;
      tally.problems.push_back(who + ": still " + state + " (attempt " + std::to_string(attempt) +
                               ") at the deadline");
      continue;
    }
    if (state == "succeeded") {
      ++tally.succeeded;
    } else {
      std::string why = view.contains("error") ? view["error"].dump() : "";
      if (why.empty() || why == "null") {
        why = view.contains("result") && view["result"].is_object()
                  ? view["result"].value("error", json()).dump()
                  : "";
      }
      tally.problems.push_back(who + ": ended " + state + " at attempt " + std::to_string(attempt) +
                               ": " + why.substr(0, 400));
    }

    const std::string log = read_log(api, id, attempt);
    const std::string expected = plan.expected_log();
    const std::string begin = "begin-" + std::to_string(plan.index) + "\n";
    const bool two_runs = count_of(log, begin) > 1;
    if (completions[id] > 1 || two_runs) {
      ++tally.doubled;
      tally.problems.push_back(who + ": completed " + std::to_string(completions[id]) +
                               " times; its log holds " + std::to_string(count_of(log, begin)) +
                               " runs");
    }
    if (log != expected) {
      // A task that failed stopped printing where it failed: its log is short by design, and
      // the failure is counted already. A succeeded task owes every byte.
      if (state == "succeeded") ++tally.logs_incomplete;
      tally.problems.push_back(who + ": log of attempt " + std::to_string(attempt) +
                               (state == "succeeded" ? " wrong: " : " (cut by the failure): ") +
                               first_difference(log, expected));
    }

    if (state != "succeeded") continue;  // only a succeeded task owes its artifact
    const std::string want = sha256_hex(plan.expected_artifact());
    std::string view_sha, result_sha;
    for (const auto& a : view.value("artifacts", json::array())) {
      if (a.value("name", "") == plan.artifact_name()) view_sha = a.value("sha256", "");
    }
    if (view.contains("result") && view["result"].is_object()) {
      for (const auto& a : view["result"].value("artifacts", json::array())) {
        if (a.value("path", "") == plan.artifact_name()) result_sha = a.value("sha256", "");
      }
    }
    auto download = api.call_retrying(
        "GET", "/api/v1/tasks/" + id + "/artifacts/" + url_encode(plan.artifact_name()));
    const std::string got_sha = download.status == 200 ? sha256_hex(download.body) : "";
    if (view_sha != want || result_sha != want || got_sha != want) {
      ++tally.artifacts_bad;
      tally.problems.push_back(who + ": artifact " + plan.artifact_name() + ": expected " + want +
                               ", task view " + view_sha + ", result " + result_sha +
                               ", download " + std::to_string(download.status) + " " + got_sha);
    }
  }
}

std::vector<std::string> stored_artifact_problems(const fs::path& db_file, int& rows) {
  std::vector<std::string> problems;
  rows = 0;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    problems.push_back("open " + db_file.string() + ": " +
                       (db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close(db);
    return problems;
  }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT task_id, attempt, name, size, sha256, path FROM artifacts", -1,
                         &s, nullptr) != SQLITE_OK) {
    problems.push_back(std::string("artifacts: ") + sqlite3_errmsg(db));
    sqlite3_close(db);
    return problems;
  }
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    ++rows;
    auto text = [&](int column) {
      const unsigned char* v = sqlite3_column_text(s, column);
      return v != nullptr ? std::string(reinterpret_cast<const char*>(v)) : std::string();
    };
    const std::string who =
        text(0) + " attempt " + std::to_string(sqlite3_column_int(s, 1)) + " artifact " + text(2);
    const auto size = static_cast<std::uintmax_t>(sqlite3_column_int64(s, 3));
    const fs::path path = text(5);
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      problems.push_back(who + ": its row points to a file that is not there");
      continue;
    }
    const std::string bytes = read_text(path);
    if (bytes.size() != size || sha256_hex(bytes) != text(4)) {
      problems.push_back(who + ": " + std::to_string(bytes.size()) + " bytes on disk (row says " +
                         std::to_string(size) + "), SHA-256 " + sha256_hex(bytes) + " (row says " +
                         text(4) + ")");
    }
  }
  if (rc != SQLITE_DONE) problems.push_back(std::string("artifacts: ") + sqlite3_errmsg(db));
  sqlite3_finalize(s);
  sqlite3_close(db);
  return problems;
}

}  // namespace tamma::faults
