// The shell of `--shell-on-failure`. The shell gets a pseudo-terminal of its own, not the
// user's terminal: its output must pass through the secret masker before the user sees it
// (a `printenv` would otherwise show every secret of the task), and the sandbox must not hold
// a descriptor of the user's terminal (TIOCSTI and friends). The worker relays keystrokes in
// and masked output out, with the user's terminal in raw mode so that the shell's own
// terminal does the line editing, echo and Ctrl-C.

#include "cli/worker_debug_shell.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "common/error.h"
#include "common/unique_fd.h"

namespace tamma::cli {
namespace {

using Clock = std::chrono::steady_clock;

// The user's terminal in raw mode for as long as the shell runs, restored however it ends.
class RawTerminal {
 public:
  explicit RawTerminal(int fd) : fd_(fd) {
    if (::tcgetattr(fd_, &saved_) != 0) return;
    struct termios raw = saved_;
    ::cfmakeraw(&raw);
    active_ = ::tcsetattr(fd_, TCSAFLUSH, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(fd_, TCSAFLUSH, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  int fd_;
  struct termios saved_ {};
  bool active_ = false;
};

// Writes everything, waiting while `fd` (non-blocking or a slow terminal) is full.
void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t put = ::write(fd, data.data(), data.size());
    if (put > 0) {
      data.remove_prefix(static_cast<std::size_t>(put));
    } else if (put < 0 && (errno == EAGAIN || errno == EINTR)) {
      struct pollfd p {
        fd, POLLOUT, 0
      };
      ::poll(&p, 1, 100);
    } else {
      return;  // the other side is gone; nothing more to show
    }
  }
}

std::string how_it_ended(const protocol::StepResult& step) {
  std::string text{protocol::to_string(step.status)};
  if (step.limit != protocol::LimitKind::kNone)
    text += fmt::format(" ({} limit)", protocol::to_string(step.limit));
  if (step.exit_code) text += fmt::format(", exit {}", *step.exit_code);
  if (step.signal) text += fmt::format(", signal {}", *step.signal);
  return text;
}

// bash without its rc files (Debian's /etc/bash.bashrc would replace the prompt that says
// where the user is), made the session leader of its terminal by setsid --ctty so that job
// control and Ctrl-C work in it (--wait: setsid forks when it is a group leader already, and
// the sandbox ends the tree when its first process exits).
std::vector<std::string> shell_argv() {
  std::vector<std::string> argv;
  if (::access("/usr/bin/setsid", X_OK) == 0) argv = {"/usr/bin/setsid", "--ctty", "--wait"};
  if (::access("/bin/bash", X_OK) == 0) {
    argv.insert(argv.end(), {"/bin/bash", "--norc", "-i"});
  } else {
    argv.insert(argv.end(), {"/bin/sh", "-i"});
  }
  return argv;
}

std::pair<UniqueFd, UniqueFd> open_pty() {
  UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master) throw_errno("opening a pseudo-terminal for the shell");
  std::array<char, 128> name{};
  if (::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0 ||
      ::ptsname_r(master.get(), name.data(), name.size()) != 0) {
    throw_errno("preparing the shell's pseudo-terminal");
  }
  UniqueFd slave(::open(name.data(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave) throw_errno("opening the shell's pseudo-terminal");
  struct winsize size {};
  if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &size) == 0) ::ioctl(slave.get(), TIOCSWINSZ, &size);
  ::fcntl(master.get(), F_SETFL, O_NONBLOCK);
  return {std::move(master), std::move(slave)};
}

}  // namespace

bool can_offer_debug_shell() { return ::isatty(STDIN_FILENO) == 1 && ::isatty(STDERR_FILENO) == 1; }

void open_debug_shell(const worker::FailedStep& failed) {
  std::fprintf(stderr,
               "\ntamma-worker: step '%s' ended %s. A shell where it ran (same sandbox, limits, "
               "user, directory and environment; secrets masked in what it prints). Exit the "
               "shell to let the task finish.\n",
               failed.result.name.c_str(), how_it_ended(failed.result).c_str());
  auto [master, slave] = open_pty();
  sandbox::Command command = failed.command;
  command.argv = shell_argv();
  const char* term = std::getenv("TERM");
  command.env.push_back(std::string("TERM=") + (term != nullptr && *term ? term : "xterm"));
  command.env.emplace_back("PS1=[tamma sandbox] \\w\\$ ");
  command.stdin_fd = slave.get();
  command.stdout_fd = slave.get();
  command.stderr_fd = slave.get();
  auto process = failed.sandbox.spawn(command);
  // Only the shell holds its terminal now: when it and its children are gone, reads say EIO.
  slave.reset();

  worker::SecretMasker masker = failed.masker;
  {
    RawTerminal raw(STDIN_FILENO);
    bool user_open = true;
    bool exited = false;
    Clock::time_point exited_at{};
    std::array<char, 4096> buffer{};
    for (;;) {
      if (failed.cancellation.requested()) break;
      std::array<struct pollfd, 3> fds{{{master.get(), POLLIN, 0},
                                        {process->exit_fd(), POLLIN, 0},
                                        {user_open ? STDIN_FILENO : -1, POLLIN, 0}}};
      ::poll(fds.data(), fds.size(), exited ? 20 : 200);
      bool got_output = false;
      if (fds[0].revents != 0) {
        const ssize_t n = ::read(master.get(), buffer.data(), buffer.size());
        if (n > 0) {
          write_all(STDERR_FILENO, masker.feed({buffer.data(), static_cast<std::size_t>(n)}));
          got_output = true;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          break;  // EIO: nothing holds the terminal any more
        }
      }
      if (fds[1].revents != 0 && !exited && process->poll_exit()) {
        exited = true;
        exited_at = Clock::now();
      }
      // What the shell printed last is read before its background jobs are killed.
      if (exited && !got_output && Clock::now() - exited_at > std::chrono::milliseconds(200)) break;
      if (user_open && fds[2].revents != 0) {
        const ssize_t n = ::read(STDIN_FILENO, buffer.data(), buffer.size());
        if (n > 0) {
          write_all(master.get(), {buffer.data(), static_cast<std::size_t>(n)});
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          user_open = false;  // the user's end closed: the shell gets no more input
          write_all(master.get(), "\x04");
        }
      }
    }
    write_all(STDERR_FILENO, masker.finish());
    process->kill_all();
  }
  std::fprintf(stderr, "\ntamma-worker: the shell has ended; the task goes on.\n");
}

}  // namespace tamma::cli
