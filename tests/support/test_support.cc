#include "support/test_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace tamma::testing {

TempDir::TempDir() : TempDir(std::filesystem::temp_directory_path()) {}

TempDir::TempDir(const std::filesystem::path& base) {
  std::string pattern = (base / "tamma-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;  // a test that failed half-way may have left anything
  std::filesystem::remove_all(path_, ignored);
}

void write_file(const std::filesystem::path& file, const std::string& content) {
  std::ofstream out(file, std::ios::binary);
  out << content;
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::vector<std::string>& env) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe2 failed");
  }
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    merged[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
  }
  for (const auto& kv : env) {
    auto eq = kv.find('=');
    merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : env_strings) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
}

ChildProcess::~ChildProcess() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) ::close(out_fd_);
  if (err_fd_ >= 0) ::close(err_fd_);
}

void ChildProcess::pump(int timeout_ms) {
  pollfd fds[2];
  int n = 0;
  if (out_fd_ >= 0) fds[n++] = {out_fd_, POLLIN, 0};
  if (err_fd_ >= 0) fds[n++] = {err_fd_, POLLIN, 0};
  if (n == 0) {
    ::usleep(static_cast<useconds_t>(timeout_ms) * 1000);
    return;
  }
  if (::poll(fds, static_cast<nfds_t>(n), timeout_ms) <= 0) return;
  for (int i = 0; i < n; ++i) {
    if (!fds[i].revents) continue;
    char buffer[65536];
    ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
    const bool is_out = fds[i].fd == out_fd_;
    if (got > 0) {
      (is_out ? result_.out : result_.err).append(buffer, static_cast<std::size_t>(got));
    } else {
      ::close(fds[i].fd);
      (is_out ? out_fd_ : err_fd_) = -1;
    }
  }
}

bool ChildProcess::wait_for_output(const std::string& text, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (result_.out.find(text) != std::string::npos ||
        result_.err.find(text) != std::string::npos) {
      return true;
    }
    if (out_fd_ < 0 && err_fd_ < 0) return false;
    pump(50);
  }
  return false;
}

void ChildProcess::send_signal(int sig) { ::kill(pid_, sig); }

void ChildProcess::drain_output() {
  // pump() reads at most one buffer per stream; a few rounds empty a full pipe.
  for (int i = 0; i < 64 && (out_fd_ >= 0 || err_fd_ >= 0); ++i) {
    const auto before = result_.out.size() + result_.err.size();
    pump(0);
    if (result_.out.size() + result_.err.size() == before) break;
  }
}

ProcessResult ChildProcess::wait(std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  int status = 0;
  for (;;) {
    pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (std::chrono::steady_clock::now() >= until) {
      result_.timed_out = true;
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    pump(20);
  }
  reaped_ = true;
  // The child is gone; whatever it wrote is still in the pipes (unless a grandchild holds
  // them, which is exactly what some tests check against: bounded drain).
  const auto drain_until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((out_fd_ >= 0 || err_fd_ >= 0) && std::chrono::steady_clock::now() < drain_until) pump(50);
  if (WIFEXITED(status)) {
    result_.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result_.signal = WTERMSIG(status);
  }
  return result_;
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          std::chrono::milliseconds limit) {
  ChildProcess child(argv, env);
  return child.wait(limit);
}

namespace {

// A /proc file of a process that may exit meanwhile: its reads then fail with ESRCH, which
// means "gone", not an error of the test.
std::string read_proc_file(const std::filesystem::path& path) {
  std::string text;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0)
    text.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  return text;
}

}  // namespace

std::vector<int> processes_with(const std::string& marker) {
  std::vector<int> found;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string text = read_proc_file(it->path() / "cmdline");
    if (text.find(marker) == std::string::npos) continue;
    const std::string stat_text = read_proc_file(it->path() / "stat");
    if (stat_text.empty()) continue;  // gone meanwhile
    auto close_paren = stat_text.rfind(')');
    if (close_paren != std::string::npos && close_paren + 2 < stat_text.size() &&
        stat_text[close_paren + 2] == 'Z') {
      continue;
    }
    found.push_back(std::stoi(name));
  }
  return found;
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace tamma::testing

namespace tamma::testing {

TestPki make_test_pki(const std::filesystem::path& dir) {
  TestPki pki{dir / "ca.pem", dir / "server.pem", dir / "server.key", dir / "other-ca.pem"};
  write_file(dir / "server.ext",
             "basicConstraints=CA:FALSE\n"
             "keyUsage=digitalSignature,keyEncipherment\n"
             "extendedKeyUsage=serverAuth\n"
             "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  auto run = [](const std::vector<std::string>& argv) {
    auto r = run_process(argv, {}, std::chrono::seconds(60));
    if (r.exit_code != 0) {
      throw std::runtime_error("openssl failed (" + argv[1] + "): " + r.err);
    }
  };
  // P-256 keys: quick to make, and what a modern deployment would use.
  for (const auto& [key, cert, name] :
       {std::tuple{dir / "ca.key", pki.ca, std::string("tamma test CA")},
        std::tuple{dir / "other-ca.key", pki.other_ca, std::string("unrelated CA")}}) {
    run({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key.string(), "-out", cert.string(),
         "-days", "2", "-subj", "/CN=" + name});
  }
  run({"/usr/bin/openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", pki.server_key.string(), "-out", (dir / "server.csr").string(), "-subj",
       "/CN=127.0.0.1"});
  run({"/usr/bin/openssl", "x509", "-req", "-in", (dir / "server.csr").string(), "-CA",
       pki.ca.string(), "-CAkey", (dir / "ca.key").string(), "-CAcreateserial", "-out",
       pki.server_cert.string(), "-days", "2", "-extfile", (dir / "server.ext").string()});
  return pki;
}

SmallTmpfs::SmallTmpfs(std::filesystem::path dir, const std::string& size) : dir_(std::move(dir)) {
  std::filesystem::create_directories(dir_);
  mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
}

SmallTmpfs::~SmallTmpfs() {
  if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
}

void SmallTmpfs::fill() const {
  std::ofstream out(dir_ / "filler", std::ios::binary);
  const std::string block(1 << 16, 'x');
  while (out.write(block.data(), static_cast<std::streamsize>(block.size()))) {
  }
}

void SmallTmpfs::empty() const { std::filesystem::remove(dir_ / "filler"); }

}  // namespace tamma::testing
