#include "support/postgres_cluster.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>

#include "support/test_support.h"

namespace tamma::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Every cluster directory is "<tmp>/tamma-pg-<pid of the test process>-XXXXXX": the pid tells
// a later test process whether the owner is still alive.
constexpr std::string_view kDirectoryPrefix = "tamma-pg-";
constexpr const char* kSuperuser = "tamma";

constexpr auto kInitdbLimit = std::chrono::seconds(120);
constexpr auto kStartLimit = std::chrono::seconds(60);
constexpr auto kStopLimit = std::chrono::seconds(60);
// An immediate shutdown only signals the backends; longer than this means something is stuck,
// and SIGKILL follows.
constexpr auto kImmediateStopLimit = std::chrono::seconds(10);
// The port is picked before the server binds it; another process may take it in between.
constexpr int kPortAttempts = 5;

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// Alive and not a zombie: a zombie holds no port, socket or data directory.
bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  std::string stat;
  try {
    stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  } catch (const std::exception&) {
    return false;
  }
  const auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) return false;
  const char state = stat[close_paren + 2];
  return state != 'Z' && state != 'X';
}

bool wait_until_gone(pid_t pid, std::chrono::milliseconds limit) {
  const auto until = Clock::now() + limit;
  while (process_alive(pid)) {
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// Waits for our own child to exit and reaps it; false when `limit` passed first.
bool reap_child(pid_t pid, std::chrono::milliseconds limit, int* status_out = nullptr) {
  const auto until = Clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid || (done < 0 && errno == ECHILD)) {
      if (status_out != nullptr) *status_out = status;
      return true;
    }
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

bool is_executable(const fs::path& file) { return ::access(file.c_str(), X_OK) == 0; }

std::optional<fs::path> find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const auto end = std::min(dirs.find(':', start), dirs.size());
    const fs::path candidate = fs::path(dirs.substr(start, end - start)) / program;
    if (end > start && is_executable(candidate)) return candidate;
    start = end + 1;
  }
  return std::nullopt;
}

// `chosen` when given; else pg_config's answer first (it names the installation the headers came
// from), then Debian's versioned directories, newest first. pg_config alone is not enough:
// libpq-dev ships it without the server.
fs::path find_server_binaries(const fs::path& chosen) {
  std::vector<fs::path> candidates;
  if (!chosen.empty()) {
    candidates.push_back(chosen);
  } else if (auto pg_config = find_on_path("pg_config")) {
    auto result = run_process({pg_config->string(), "--bindir"}, {}, std::chrono::seconds(30));
    std::string out = result.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (result.exit_code == 0 && !out.empty()) candidates.emplace_back(out);
  }
  std::vector<std::pair<int, fs::path>> versioned;
  std::error_code ec;
  for (fs::directory_iterator it("/usr/lib/postgresql", ec), end;
       chosen.empty() && !ec && it != end; it.increment(ec)) {
    const std::string version = it->path().filename();
    if (version.empty() || version.find_first_not_of("0123456789") != std::string::npos) continue;
    versioned.emplace_back(std::stoi(version), it->path() / "bin");
  }
  std::sort(versioned.rbegin(), versioned.rend());
  for (const auto& [version, dir] : versioned) candidates.push_back(dir);

  std::string looked;
  for (const auto& dir : candidates) {
    if (is_executable(dir / "initdb") && is_executable(dir / "postgres")) return dir;
    looked += (looked.empty() ? "" : ", ") + dir.string();
  }
  throw std::runtime_error(
      "PostgreSQL server binaries (initdb, postgres) not found (looked in: " +
      (looked.empty() ? std::string("pg_config --bindir, /usr/lib/postgresql/*/bin") : looked) +
      "). Install the Debian package `postgresql` (scripts/setup.sh does): the PostgreSQL store "
      "tests need a real server.");
}

// What a forked child does before exec; prepared in the parent, because between fork and exec
// only async-signal-safe calls are allowed.
struct ExecPlan {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  fs::path working_directory;
  int output_fd = -1;  // stdout and stderr
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
  int parent_death_signal = SIGKILL;
};

pid_t spawn(const ExecPlan& plan) {
  std::vector<char*> argv;
  for (const auto& a : plan.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> env;
  for (const auto& e : plan.env) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) throw std::runtime_error(errno_text("open /dev/null"));
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(null_fd);
    throw std::runtime_error(errno_text("fork"));
  }
  if (pid == 0) {
    ::dup2(null_fd, 0);
    ::dup2(plan.output_fd, 1);
    ::dup2(plan.output_fd, 2);
    // The test process's other descriptors (listening sockets, database files) must not live
    // on in a server that may outlast a test.
    ::close_range(3, ~0U, 0);
    if (plan.switch_user) {
      // Supplementary groups first: after setuid there is no permission left to drop them.
      if (::setgroups(0, nullptr) != 0 || ::setgid(plan.gid) != 0 || ::setuid(plan.uid) != 0) {
        constexpr char kMessage[] = "cannot switch to the PostgreSQL server user\n";
        (void)!::write(2, kMessage, sizeof kMessage - 1);
        ::_exit(126);
      }
    }
    // After the user switch, which clears it; and the parent may have died before this line.
    ::prctl(PR_SET_PDEATHSIG, plan.parent_death_signal);
    if (::getppid() != parent) ::_exit(1);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Ignored signals stay ignored across exec; the server relies on its own handlers.
    for (int sig : {SIGPIPE, SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2}) {
      struct sigaction action {};
      action.sa_handler = SIG_DFL;
      ::sigaction(sig, &action, nullptr);
    }
    if (::chdir(plan.working_directory.c_str()) != 0) ::_exit(126);
    ::execve(argv[0], argv.data(), env.data());
    constexpr char kMessage[] = "exec of a PostgreSQL binary failed\n";
    (void)!::write(2, kMessage, sizeof kMessage - 1);
    ::_exit(127);
  }
  ::close(null_fd);
  return pid;
}

int open_output(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(errno_text("open " + file.string()));
  return fd;
}

// The last `lines` lines of `file` from byte `from` on; "" when it cannot be read.
std::string tail_of(const fs::path& file, std::size_t lines, std::uint64_t from = 0) {
  std::string text;
  try {
    text = read_file(file);
  } catch (const std::exception&) {
    return "";
  }
  text.erase(0, std::min<std::uint64_t>(from, text.size()));
  std::size_t start = text.size();
  // Skip the final newline, then walk back over `lines` line breaks.
  if (start > 0 && text[start - 1] == '\n') --start;
  for (std::size_t found = 0; found < lines && start > 0; ++found) {
    const auto newline = text.rfind('\n', start - 1);
    start = newline == std::string::npos ? 0 : newline;
  }
  if (start > 0) ++start;
  return text.substr(start);
}

// Kills what a test process that died left running, and removes its directories.
void sweep_stale_clusters(const fs::path& base) {
  std::error_code ec;
  for (fs::directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename();
    if (name.rfind(kDirectoryPrefix, 0) != 0) continue;
    const auto pid_text = name.substr(
        kDirectoryPrefix.size(), name.find('-', kDirectoryPrefix.size()) - kDirectoryPrefix.size());
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t owner = static_cast<pid_t>(std::stol(pid_text));
    if (owner == ::getpid() || process_alive(owner)) continue;
    const fs::path data = it->path() / "data";
    try {
      // postmaster.pid's first line is the postmaster's pid; the process must still be that
      // postmaster (its command line names this data directory), not a reused pid.
      const std::string lock = read_file(data / "postmaster.pid");
      const pid_t postmaster = static_cast<pid_t>(std::stol(lock.substr(0, lock.find('\n'))));
      const std::string cmdline = read_file("/proc/" + std::to_string(postmaster) + "/cmdline");
      if (process_alive(postmaster) && cmdline.find(data.string()) != std::string::npos) {
        ::kill(postmaster, SIGQUIT);
        if (!wait_until_gone(postmaster, kImmediateStopLimit)) {
          ::kill(postmaster, SIGKILL);
          wait_until_gone(postmaster, kImmediateStopLimit);
        }
      }
    } catch (const std::exception&) {
      // No lock file or no such process: nothing runs there.
    }
    std::error_code ignored;
    fs::remove_all(it->path(), ignored);
  }
}

struct PgConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};

}  // namespace

PostgresCluster::PostgresCluster() : PostgresCluster(Options{}) {}

PostgresCluster::PostgresCluster(Options options) : options_(options), owner_pid_(::getpid()) {
  bin_dir_ = find_server_binaries(options_.bin_dir);
  if (::geteuid() == 0) {
    // initdb and postgres refuse to run as root.
    const passwd* user = ::getpwnam("postgres");
    if (user == nullptr) {
      throw std::runtime_error(
          "running as root, and there is no `postgres` user to run PostgreSQL as (initdb and "
          "postgres refuse root). Install the Debian package `postgresql`, which creates it.");
    }
    run_as_other_user_ = true;
    server_uid_ = user->pw_uid;
    server_gid_ = user->pw_gid;
  }

  const fs::path base = fs::temp_directory_path();
  sweep_stale_clusters(base);
  std::string pattern =
      (base / (std::string(kDirectoryPrefix) + std::to_string(::getpid()) + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error(errno_text("mkdtemp"));
  directory_ = pattern;
  data_dir_ = directory_ / "data";
  log_file_ = directory_ / "postgres.log";
  try {
    if (run_as_other_user_ && ::chown(directory_.c_str(), server_uid_, server_gid_) != 0) {
      throw std::runtime_error(errno_text("chown " + directory_.string()));
    }
    const fs::path initdb_log = directory_ / "initdb.log";
    const int output = open_output(initdb_log);
    ExecPlan plan{{(bin_dir_ / "initdb").string(), "--no-sync", "--no-instructions", "-A", "trust",
                   "-U", kSuperuser, "-E", "UTF8", "--locale=C", "-D", data_dir_.string()},
                  {"PATH=/usr/bin:/bin", "LC_ALL=C"},
                  directory_,
                  output,
                  run_as_other_user_,
                  server_uid_,
                  server_gid_,
                  SIGKILL};
    pid_t pid = -1;
    try {
      pid = spawn(plan);
    } catch (...) {
      ::close(output);
      throw;
    }
    ::close(output);
    int status = 0;
    if (!reap_child(pid, kInitdbLimit, &status)) {
      ::kill(pid, SIGKILL);
      reap_child(pid, std::chrono::seconds(10));
      throw std::runtime_error("initdb did not finish within 120 s:\n" + tail_of(initdb_log, 30));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error("initdb failed (" + describe_exit(status) + "):\n" +
                               tail_of(initdb_log, 30));
    }
    for (int attempt = 1;; ++attempt) {
      port_ = free_port();
      if (try_start()) break;
      if (attempt == kPortAttempts) {
        throw std::runtime_error("PostgreSQL found every port it was given taken:\n" +
                                 log_tail(20));
      }
    }
  } catch (...) {
    kill_postmaster_now();
    std::error_code ignored;
    fs::remove_all(directory_, ignored);
    throw;
  }
}

PostgresCluster::~PostgresCluster() {
  // A forked copy of the test process (one that exits without exec) must not take the
  // parent's server down with it.
  if (::getpid() != owner_pid_) return;
  kill_postmaster_now();
  std::error_code ignored;
  fs::remove_all(directory_, ignored);
}

bool PostgresCluster::try_start() {
  std::error_code ec;
  const auto log_start = fs::exists(log_file_, ec) ? fs::file_size(log_file_, ec) : 0;
  std::vector<std::string> argv = {(bin_dir_ / "postgres").string(),
                                   "-D",
                                   data_dir_.string(),
                                   "-p",
                                   std::to_string(port_),
                                   "-k",
                                   directory_.string(),
                                   "-c",
                                   "listen_addresses=127.0.0.1",
                                   "-c",
                                   "max_connections=" + std::to_string(options_.max_connections)};
  if (!options_.durable) {
    for (const char* setting : {"fsync=off", "synchronous_commit=off", "full_page_writes=off"}) {
      argv.emplace_back("-c");
      argv.emplace_back(setting);
    }
  }
  const int output = open_output(log_file_);
  // SIGQUIT is an immediate shutdown: the postmaster takes its backends down with it.
  ExecPlan plan{std::move(argv),    {"PATH=/usr/bin:/bin", "LC_ALL=C"},
                directory_,         output,
                run_as_other_user_, server_uid_,
                server_gid_,        SIGQUIT};
  try {
    postmaster_pid_ = spawn(plan);
  } catch (...) {
    ::close(output);
    throw;
  }
  ::close(output);

  const std::string ping = conninfo("postgres") + " connect_timeout=2";
  const auto until = Clock::now() + kStartLimit;
  for (;;) {
    int status = 0;
    if (::waitpid(postmaster_pid_, &status, WNOHANG) == postmaster_pid_) {
      postmaster_pid_ = -1;
      const std::string log = tail_of(log_file_, 30, log_start);
      if (log.find("Address already in use") != std::string::npos) return false;
      throw std::runtime_error("PostgreSQL exited while starting (" + describe_exit(status) +
                               "):\n" + log);
    }
    if (PQping(ping.c_str()) == PQPING_OK) return true;
    if (Clock::now() >= until) {
      kill_postmaster_now();
      throw std::runtime_error("PostgreSQL did not accept connections within 60 s:\n" +
                               tail_of(log_file_, 30, log_start));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void PostgresCluster::start() {
  if (running()) return;
  if (!try_start()) {
    throw std::runtime_error("PostgreSQL cannot start again: port " + std::to_string(port_) +
                             " was taken while it was stopped");
  }
}

void PostgresCluster::stop(const std::string& mode) {
  // The signals pg_ctl stop -m MODE sends.
  int signal = 0;
  if (mode == "smart") {
    signal = SIGTERM;
  } else if (mode == "fast") {
    signal = SIGINT;
  } else if (mode == "immediate") {
    signal = SIGQUIT;
  } else {
    throw std::invalid_argument("shutdown mode '" + mode +
                                "' is not one of smart, fast, immediate");
  }
  if (!running()) return;
  ::kill(postmaster_pid_, signal);
  if (!reap_child(postmaster_pid_, kStopLimit)) {
    const std::string log = log_tail(30);
    kill_postmaster_now();
    throw std::runtime_error("PostgreSQL did not stop (" + mode + ") within 60 s:\n" + log);
  }
  postmaster_pid_ = -1;
}

void PostgresCluster::restart(const std::string& mode) {
  stop(mode);
  start();
}

void PostgresCluster::kill_postmaster_now() {
  if (postmaster_pid_ <= 0) return;
  ::kill(postmaster_pid_, SIGQUIT);
  if (!reap_child(postmaster_pid_, kImmediateStopLimit)) {
    ::kill(postmaster_pid_, SIGKILL);
    reap_child(postmaster_pid_, kImmediateStopLimit);
  }
  postmaster_pid_ = -1;
}

std::string PostgresCluster::conninfo(const std::string& database) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + kSuperuser +
         " dbname=" + database;
}

std::vector<std::vector<std::optional<std::string>>> PostgresCluster::execute(
    const std::string& database, const std::string& sql) const {
  const std::string info = conninfo(database) + " connect_timeout=10";
  std::unique_ptr<PGconn, PgConnDeleter> connection(PQconnectdb(info.c_str()));
  if (!connection || PQstatus(connection.get()) != CONNECTION_OK) {
    throw std::runtime_error("cannot connect to PostgreSQL (" + info + "): " +
                             (connection ? PQerrorMessage(connection.get()) : "out of memory"));
  }
  std::unique_ptr<PGresult, PgResultDeleter> result(PQexec(connection.get(), sql.c_str()));
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    throw std::runtime_error("PostgreSQL refused `" + sql +
                             "`: " + PQresultErrorMessage(result.get()));
  }
  std::vector<std::vector<std::optional<std::string>>> rows;
  for (int row = 0; row < PQntuples(result.get()); ++row) {
    auto& columns = rows.emplace_back();
    for (int column = 0; column < PQnfields(result.get()); ++column) {
      if (PQgetisnull(result.get(), row, column)) {
        columns.emplace_back(std::nullopt);
      } else {
        columns.emplace_back(
            std::string(PQgetvalue(result.get(), row, column),
                        static_cast<std::size_t>(PQgetlength(result.get(), row, column))));
      }
    }
  }
  return rows;
}

std::string PostgresCluster::create_database(const std::string& prefix) {
  // Checked rather than quoted: the name is spliced into SQL and read back in conninfo.
  if (prefix.empty() || prefix.size() > 40 ||
      prefix.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos) {
    throw std::invalid_argument("database prefix '" + prefix +
                                "' must be 1-40 lower-case letters, digits or '_'");
  }
  const std::string name = prefix + "_" + std::to_string(++databases_created_);
  execute("postgres", "CREATE DATABASE " + name);
  return name;
}

std::string PostgresCluster::log_tail(std::size_t lines) const { return tail_of(log_file_, lines); }

PostgresCluster& shared_postgres_cluster() {
  // Built on first use, so a run that selects no PostgreSQL test starts no server; destroyed
  // by the static destructors at exit, after every test (passed or failed) has run.
  static PostgresCluster cluster;
  return cluster;
}

}  // namespace tamma::testing
