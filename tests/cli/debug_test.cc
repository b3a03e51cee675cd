// Debugging a failed task locally (issue 14, item 6): `--keep-workspace`,
// `--shell-on-failure` driven through a real pseudo-terminal, and `--log-level debug` timings.
// The real binary and sandbox.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace tamma {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::ProcessResult;
using testing::read_file;
using testing::TempDir;

class DebugFailedTask : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    marker_ = "tamma-marker-" + std::to_string(rd());
  }

  void TearDown() override {
    EXPECT_TRUE(testing::processes_with(marker_).empty()) << "leaked processes of " << marker_;
    // What a test kept is its to look at; anything else left is a leak.
    std::error_code ec;
    fs::remove_all(workspaces_.path() / ".kept", ec);
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(workspaces_.path())) {
      left.push_back(e.path().filename());
    }
    EXPECT_TRUE(left.empty()) << "workspace root not empty: " << (left.empty() ? "" : left[0]);
  }

  std::vector<std::string> worker(std::vector<std::string> args) {
    std::vector<std::string> argv{TAMMA_WORKER_BINARY, "run", "--workspace-root",
                                  workspaces_.path().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  // The directory a run said it kept the task's files in.
  static fs::path kept_dir(const std::string& err) {
    std::smatch m;
    if (!std::regex_search(err, m, std::regex("files are kept in (\\S+) "))) return {};
    return m[1].str();
  }

  TempDir workspaces_;
  std::string marker_;
};

TEST_F(DebugFailedTask, KeepWorkspaceKeepsTheFilesOfAFailedTaskAndSaysWhere) {
  for (const bool disk_limit : {false, true}) {
    SCOPED_TRACE(disk_limit ? "a disk-limited image (copied out)" : "a plain directory (moved)");
    std::vector<std::string> args{"--keep-workspace"};
    if (disk_limit) args.insert(args.end(), {"--disk", "16M"});
    args.insert(args.end(), {"--", "/bin/sh", "-c",
                             "echo built > out.txt; mkdir d; ln -s /etc/passwd d/link; "
                             "echo cache > $HOME/cache; echo t > /tmp/t; exit 3 # " +
                                 marker_});
    const ProcessResult r = testing::run_process(worker(args));
    EXPECT_EQ(r.exit_code, 1) << r.err;
    const fs::path kept = kept_dir(r.err);
    ASSERT_FALSE(kept.empty()) << "no path printed: " << r.err;
    EXPECT_EQ(kept.parent_path(), workspaces_.path() / ".kept");
    EXPECT_EQ(read_file(kept / "work" / "out.txt"), "built\n");
    EXPECT_EQ(read_file(kept / "home" / "cache"), "cache\n");
    EXPECT_EQ(read_file(kept / "tmp" / "t"), "t\n");
    // The task's symlink is kept as a link, never followed into the host's files.
    EXPECT_TRUE(fs::is_symlink(fs::symlink_status(kept / "work" / "d" / "link")));
    EXPECT_EQ(fs::read_symlink(kept / "work" / "d" / "link"), "/etc/passwd");
    fs::remove_all(kept);
  }
}

TEST_F(DebugFailedTask, KeepWorkspaceKeepsNothingOfATaskThatSucceeded) {
  const ProcessResult r = testing::run_process(
      worker({"--keep-workspace", "--", "/bin/sh", "-c", "echo built > out.txt # " + marker_}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(kept_dir(r.err).empty()) << r.err;
  EXPECT_FALSE(fs::exists(workspaces_.path() / ".kept" / "out.txt"));
  EXPECT_TRUE(!fs::exists(workspaces_.path() / ".kept") ||
              fs::is_empty(workspaces_.path() / ".kept"));
}

TEST_F(DebugFailedTask, DebugLogTimesEachPhase) {
  const ProcessResult r = testing::run_process(
      worker({"--log-level", "debug", "--", "/bin/sh", "-c", "true # " + marker_}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* phase : {"workspace made in ", "sandbox prepared in ", "step 'command' ran in ",
                            "steps run in ", "workspace removed in "}) {
    EXPECT_TRUE(std::regex_search(r.err, std::regex(std::string(phase) + "[0-9.]+ ms")))
        << "no timing for '" << phase << "' in:\n"
        << r.err;
  }
}

TEST_F(DebugFailedTask, ShellOnFailureRefusesWithoutATerminal) {
  const ProcessResult r = testing::run_process(
      worker({"--shell-on-failure", "--", "/bin/sh", "-c", "exit 1 # " + marker_}));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--shell-on-failure needs a terminal"), std::string::npos) << r.err;
}

// A user at a terminal: the worker runs with a pseudo-terminal as its stdin, stdout and
// stderr, as in an interactive session; the test types into it and reads what the user sees.
class Terminal {
 public:
  Terminal() {
    master_ = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master_ < 0 || ::grantpt(master_) != 0 || ::unlockpt(master_) != 0) return;
    std::array<char, 128> name{};
    if (::ptsname_r(master_, name.data(), name.size()) == 0) slave_name_ = name.data();
  }
  ~Terminal() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) ::close(master_);
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  [[nodiscard]] bool ok() const { return !slave_name_.empty(); }

  void start(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    pid_ = ::fork();
    if (pid_ != 0) return;
    ::setsid();
    const int slave = ::open(slave_name_.c_str(), O_RDWR);  // becomes the controlling terminal
    if (slave < 0) ::_exit(120);
    ::dup2(slave, 0);
    ::dup2(slave, 1);
    ::dup2(slave, 2);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }

  void type(const std::string& text) const {
    ASSERT_EQ(::write(master_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }

  // Reads what the terminal shows until `text` appears (true) or `limit` passes.
  bool wait_for(const std::string& text, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (seen_.find(text, searched_from_) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      struct pollfd p {
        master_, POLLIN, 0
      };
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      std::array<char, 4096> buffer{};
      const ssize_t n = ::read(master_, buffer.data(), buffer.size());
      if (n <= 0) return false;
      seen_.append(buffer.data(), static_cast<std::size_t>(n));
    }
    searched_from_ = seen_.find(text, searched_from_) + text.size();
    return true;
  }

  // The worker's exit code (-1 if it had to be killed).
  int wait_exit(std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      wait_for("\x01never\x01", 50ms);  // keeps reading, so the worker never blocks on output
    }
    return -1;
  }

  [[nodiscard]] const std::string& transcript() const { return seen_; }

 private:
  int master_ = -1;
  std::string slave_name_;
  pid_t pid_ = -1;
  std::string seen_;
  std::size_t searched_from_ = 0;
};

TEST_F(DebugFailedTask, ShellOnFailureOpensAShellWhereTheStepRanWithSecretsMasked) {
  Terminal terminal;
  ASSERT_TRUE(terminal.ok()) << "no pseudo-terminal: " << std::strerror(errno);
  const std::string secret = "s3cr3t-" + marker_.substr(13);
  terminal.start(
      worker({"--shell-on-failure", "--secret-env", "MY_SECRET", "--memory", "256M", "--",
              "/bin/sh", "-c",
              "echo step-uid=$(id -u); echo left-by-step > failed.txt; exit 3 # " + marker_}),
      {"MY_SECRET=" + secret, "TERM=dumb"});
  ASSERT_TRUE(terminal.wait_for("step-uid=", 60s)) << terminal.transcript();
  ASSERT_TRUE(terminal.wait_for("[tamma sandbox] /workspace", 60s))
      << "no shell prompt in the step's directory:\n"
      << terminal.transcript();
  terminal.type("echo secret=$MY_SECRET; cat failed.txt; echo shell-uid=$(id -u)\n");
  ASSERT_TRUE(terminal.wait_for("secret=", 30s)) << terminal.transcript();
  ASSERT_TRUE(terminal.wait_for("left-by-step", 30s)) << terminal.transcript();
  ASSERT_TRUE(terminal.wait_for("shell-uid=", 30s)) << terminal.transcript();
  terminal.type("exit\n");
  EXPECT_EQ(terminal.wait_exit(60s), 1) << "the task's own outcome (failed) after the shell:\n"
                                        << terminal.transcript();
  const std::string& seen = terminal.transcript();
  EXPECT_NE(seen.find("secret=[MASKED]"), std::string::npos) << seen;
  EXPECT_EQ(seen.find(secret), std::string::npos) << "the secret reached the terminal:\n" << seen;
  // Same user inside as the step had.
  std::smatch step_uid;
  std::smatch shell_uid;
  ASSERT_TRUE(std::regex_search(seen, step_uid, std::regex("step-uid=([0-9]+)")));
  ASSERT_TRUE(std::regex_search(seen, shell_uid, std::regex("shell-uid=([0-9]+)")));
  EXPECT_EQ(step_uid[1], shell_uid[1]);
  EXPECT_NE(seen.find("the shell has ended"), std::string::npos) << seen;
}

}  // namespace
}  // namespace tamma
