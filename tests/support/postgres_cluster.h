#pragma once
// A real, throwaway PostgreSQL server for tests: its own cluster (initdb) in a temporary
// directory, listening on a free loopback port, trust authentication for the superuser
// "tamma". No mock: the PostgreSQL store is tested against the server it will meet in
// production.
//
// The postmaster is a direct child of the test process (not daemonized by pg_ctl), so it can
// carry PR_SET_PDEATHSIG: a test process that dies in any way, SIGKILL included, takes its
// cluster with it. Directories such a death leaves behind are swept by the next cluster any
// test process starts. The thread that constructs (or restarts) a cluster must outlive it:
// the parent-death signal follows the thread that forked the postmaster.
//
// Needs the Debian package `postgresql` (scripts/setup.sh); without it the constructor throws
// saying so, and the test fails: never a skip.

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tamma::testing {

class PostgresCluster {
 public:
  struct Options {
    // fsync, synchronous_commit and full_page_writes stay on (the server's defaults): for
    // tests that stop the server hard and expect every committed write back. Off by default,
    // which makes a cluster several times faster to use and durability is nobody's question.
    bool durable = false;
    int max_connections = 200;
    // Where initdb and postgres are; empty: pg_config --bindir, then the newest
    // /usr/lib/postgresql/N/bin that has them.
    std::filesystem::path bin_dir;
  };

  // Sweeps the leftovers of test processes that died, then makes and starts the cluster;
  // returns once it accepts connections. Throws std::runtime_error with the reason (and the
  // server's log) when it cannot.
  PostgresCluster();
  explicit PostgresCluster(Options options);
  // Stops the server at once (immediate shutdown) and removes its directory.
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  // A libpq connection string for `database` as the superuser.
  [[nodiscard]] std::string conninfo(const std::string& database = "postgres") const;
  // Creates a database whose name starts with `prefix` (lower-case letters, digits and '_'),
  // unique in this cluster, and returns its name.
  std::string create_database(const std::string& prefix);
  // Runs `sql` (one or more statements) in `database`; returns the rows of the last
  // statement, each column as text (nullopt for NULL). Throws with the server's message.
  std::vector<std::vector<std::optional<std::string>>> execute(const std::string& database,
                                                               const std::string& sql) const;

  // `mode` is pg_ctl's shutdown mode: "smart" (waits for clients to disconnect), "fast"
  // (disconnects them, clean shutdown) or "immediate" (no checkpoint: the next start recovers
  // from the WAL, as after a crash).
  void stop(const std::string& mode = "fast");
  // Starts the stopped server again on the same port and data; returns once it accepts
  // connections.
  void start();
  void restart(const std::string& mode = "fast");
  [[nodiscard]] bool running() const { return postmaster_pid_ > 0; }

  [[nodiscard]] int port() const { return port_; }
  // The postmaster's pid while running, -1 otherwise.
  [[nodiscard]] pid_t postmaster_pid() const { return postmaster_pid_; }
  // The cluster's own directory: data/ (PGDATA), the server log and the Unix socket.
  [[nodiscard]] const std::filesystem::path& directory() const { return directory_; }
  [[nodiscard]] const std::filesystem::path& data_dir() const { return data_dir_; }
  // The last `lines` lines of the server's log, for failure messages.
  [[nodiscard]] std::string log_tail(std::size_t lines) const;

 private:
  // Starts the postmaster; false when it exited because the port was taken meanwhile.
  bool try_start();
  void kill_postmaster_now();

  Options options_;
  std::filesystem::path bin_dir_;
  std::filesystem::path directory_;
  std::filesystem::path data_dir_;
  std::filesystem::path log_file_;
  // Who runs the server: initdb and postgres refuse root, so a root test uses the `postgres`
  // system user; anyone else runs it as themselves (run_as_other_user_ false).
  bool run_as_other_user_ = false;
  uid_t server_uid_ = 0;
  gid_t server_gid_ = 0;
  int port_ = 0;
  pid_t postmaster_pid_ = -1;
  pid_t owner_pid_ = -1;  // the test process that made the cluster
  int databases_created_ = 0;
};

// One cluster per test process, started by the first call and stopped (its directory removed)
// when the process exits, whatever the tests' outcome. A failed start is tried again by the
// next call, so every test that needs it fails with the reason.
PostgresCluster& shared_postgres_cluster();

}  // namespace tamma::testing
