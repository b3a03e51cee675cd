#pragma once
// Shared by all test binaries: temporary directories and running real processes.

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace tamma::testing {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  explicit TempDir(const std::filesystem::path& base);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A tmpfs of `size` ("8m") mounted over `dir` for one test and unmounted (detached) on every
// path: a small filesystem to fill. Needs root; mounted() says whether it worked.
class SmallTmpfs {
 public:
  SmallTmpfs(std::filesystem::path dir, const std::string& size);
  ~SmallTmpfs();
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  [[nodiscard]] bool mounted() const { return mounted_; }
  // Writes a file ("filler") until the filesystem refuses more; empty() removes it.
  void fill() const;
  void empty() const;

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
};

void write_file(const std::filesystem::path& file, const std::string& content);
std::string read_file(const std::filesystem::path& file);

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out;
  std::string err;
  bool timed_out = false;  // the test's own safety limit, not the worker's
};

// A real child process with its stdout and stderr captured through pipes.
class ChildProcess {
 public:
  // `env` entries are added to (or replace) the test's own environment.
  ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  [[nodiscard]] int pid() const { return pid_; }
  // Reads output until `text` appears on stdout or stderr, or `limit` passes.
  bool wait_for_output(const std::string& text, std::chrono::milliseconds limit);
  void send_signal(int sig);
  // Reads whatever output is waiting, without blocking: a long-lived child that logs a lot
  // would otherwise stall on a full pipe while the test is busy elsewhere.
  void drain_output();
  [[nodiscard]] const std::string& err_so_far() const { return result_.err; }
  // Waits for exit (killing the child after `limit`, which marks timed_out).
  ProcessResult wait(std::chrono::milliseconds limit = std::chrono::seconds(120));

 private:
  void pump(int timeout_ms);
  int pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  ProcessResult result_;
  bool reaped_ = false;
};

// Runs a command to completion.
ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env = {},
                          std::chrono::milliseconds limit = std::chrono::seconds(120));

// A loopback port nothing listens on right now (the kernel's pick, released for a child
// process to take).
int free_port();

// Pids of live processes whose command line contains `marker` (zombies excluded).
std::vector<int> processes_with(const std::string& marker);

}  // namespace tamma::testing

namespace tamma::testing {

// A CA and a server certificate it signed, for 127.0.0.1 and localhost, made by the openssl
// command in `dir`; and a second CA that signed nothing here (a client trusting only it must
// refuse the server).
struct TestPki {
  std::filesystem::path ca;           // PEM certificate of the CA
  std::filesystem::path server_cert;  // PEM certificate chain of the server
  std::filesystem::path server_key;   // PEM private key of the server
  std::filesystem::path other_ca;
};
TestPki make_test_pki(const std::filesystem::path& dir);

}  // namespace tamma::testing
