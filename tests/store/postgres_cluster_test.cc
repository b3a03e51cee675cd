// The PostgreSQL test harness itself: a real server that answers, keeps data across restarts,
// and leaves nothing behind, not even when its test process dies without cleaning up.

#include "support/postgres_cluster.h"

#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace tamma::testing {
namespace {

namespace fs = std::filesystem;

// Alive and not a zombie.
bool process_alive(pid_t pid) {
  try {
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    const auto close_paren = stat.rfind(')');
    return close_paren != std::string::npos && close_paren + 2 < stat.size() &&
           stat[close_paren + 2] != 'Z' && stat[close_paren + 2] != 'X';
  } catch (const std::exception&) {
    return false;
  }
}

bool gone_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (process_alive(pid)) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// The postmaster and every process it started (backends, checkpointer, walwriter...).
std::set<pid_t> server_processes(pid_t postmaster) {
  std::set<pid_t> found{postmaster};
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    try {
      const std::string stat = read_file(it->path() / "stat");
      // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
      const auto close_paren = stat.rfind(')');
      const pid_t parent = static_cast<pid_t>(std::stol(stat.substr(close_paren + 4)));
      if (parent == postmaster) found.insert(static_cast<pid_t>(std::stol(name)));
    } catch (const std::exception&) {
      // Gone meanwhile.
    }
  }
  return found;
}

// The first column of the first row of `sql`, through libpq directly (not the harness's own
// execute()), so the test checks the server rather than the harness's client code.
std::string query_value(const std::string& conninfo, const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> connection(PQconnectdb(conninfo.c_str()), &PQfinish);
  if (PQstatus(connection.get()) != CONNECTION_OK) {
    throw std::runtime_error("connect " + conninfo + ": " + PQerrorMessage(connection.get()));
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(connection.get(), sql.c_str()),
                                                       &PQclear);
  if (PQresultStatus(result.get()) != PGRES_TUPLES_OK || PQntuples(result.get()) < 1) {
    throw std::runtime_error(sql + ": " + PQresultErrorMessage(result.get()));
  }
  return PQgetvalue(result.get(), 0, 0);
}

TEST(PostgresCluster, AnswersQueriesAndMakesDistinctDatabases) {
  PostgresCluster cluster;
  EXPECT_EQ(query_value(cluster.conninfo(), "SELECT 1"), "1");
  EXPECT_EQ(query_value(cluster.conninfo(), "SHOW fsync"), "off") << "throwaway by default";
  const std::string first = cluster.create_database("harness");
  const std::string second = cluster.create_database("harness");
  EXPECT_NE(first, second);
  // Each is a database of its own: a table made in one is not in the other.
  cluster.execute(first, "CREATE TABLE only_here (x int)");
  EXPECT_EQ(query_value(cluster.conninfo(first), "SELECT current_database()"), first);
  EXPECT_EQ(query_value(cluster.conninfo(second),
                        "SELECT count(*) FROM pg_tables WHERE "
                        "tablename = 'only_here'"),
            "0");
  const auto rows = cluster.execute(first, "SELECT NULL::text, 'x'");
  ASSERT_EQ(rows.size(), 1u);
  ASSERT_EQ(rows[0].size(), 2u);
  EXPECT_FALSE(rows[0][0].has_value());
  EXPECT_EQ(rows[0][1], "x");
  EXPECT_THROW(cluster.create_database("Not-A-Prefix"), std::invalid_argument);
  EXPECT_THROW(cluster.execute(first, "SELECT * FROM no_such_table"), std::runtime_error);
}

TEST(PostgresCluster, RestartKeepsCommittedDataOnTheSamePort) {
  PostgresCluster::Options options;
  options.durable = true;
  PostgresCluster cluster(options);
  EXPECT_EQ(query_value(cluster.conninfo(), "SHOW fsync"), "on");
  const std::string db = cluster.create_database("restart");
  cluster.execute(db, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)");
  const int port = cluster.port();
  const pid_t before = cluster.postmaster_pid();

  cluster.restart("fast");
  EXPECT_EQ(cluster.port(), port);
  EXPECT_NE(cluster.postmaster_pid(), before) << "a new postmaster";
  EXPECT_FALSE(process_alive(before));
  EXPECT_EQ(query_value(cluster.conninfo(db), "SELECT x FROM kept"), "42");

  // An immediate stop skips the shutdown checkpoint: the start recovers from the WAL.
  cluster.execute(db, "INSERT INTO kept VALUES (43)");
  cluster.restart("immediate");
  EXPECT_EQ(query_value(cluster.conninfo(db), "SELECT sum(x) FROM kept"), "85");

  cluster.stop();
  EXPECT_FALSE(cluster.running());
  EXPECT_NE(PQping(cluster.conninfo().c_str()), PQPING_OK);
  cluster.start();
  EXPECT_EQ(query_value(cluster.conninfo(db), "SELECT count(*) FROM kept"), "2");
  EXPECT_NE(cluster.log_tail(50).find("database system is ready"), std::string::npos)
      << cluster.log_tail(50);
  EXPECT_THROW(cluster.stop("gentle"), std::invalid_argument);
}

TEST(PostgresCluster, LeavesNoProcessAndNoDirectoryBehind) {
  auto cluster = std::make_unique<PostgresCluster>();
  const std::string info = cluster->conninfo();
  // A client still connected has a backend the shutdown must take down too.
  std::unique_ptr<PGconn, decltype(&PQfinish)> client(PQconnectdb(info.c_str()), &PQfinish);
  ASSERT_EQ(PQstatus(client.get()), CONNECTION_OK);
  const fs::path directory = cluster->directory();
  const auto processes = server_processes(cluster->postmaster_pid());
  ASSERT_GT(processes.size(), 2u) << "the postmaster, its helpers and the client's backend";
  ASSERT_TRUE(fs::exists(cluster->data_dir() / "PG_VERSION"));

  cluster.reset();
  for (pid_t pid : processes) EXPECT_FALSE(process_alive(pid)) << "pid " << pid;
  EXPECT_FALSE(fs::exists(directory));
  EXPECT_NE(PQping(info.c_str()), PQPING_OK);
}

TEST(PostgresCluster, AClusterWhoseTestProcessDiedIsKilledAndSwept) {
  // A test process that dies without running a destructor (SIGKILL, abort, a ctest timeout)
  // is played by a forked child that starts a cluster and _exits.
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(report[0]);
    try {
      auto* leaked = new PostgresCluster();  // never destroyed: that is the point
      const std::string line =
          std::to_string(leaked->postmaster_pid()) + " " + leaked->directory().string() + "\n";
      (void)!::write(report[1], line.data(), line.size());
    } catch (const std::exception& e) {
      const std::string line = std::string("error ") + e.what() + "\n";
      (void)!::write(report[1], line.data(), line.size());
    }
    ::_exit(0);
  }
  ::close(report[1]);
  std::string line;
  char buffer[4096];
  for (ssize_t n; (n = ::read(report[0], buffer, sizeof buffer)) > 0;) {
    line.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(report[0]);
  ::waitpid(child, nullptr, 0);
  ASSERT_EQ(line.rfind("error", 0), std::string::npos) << line;
  const auto space = line.find(' ');
  ASSERT_NE(space, std::string::npos) << line;
  const pid_t postmaster = static_cast<pid_t>(std::stol(line.substr(0, space)));
  const fs::path directory = line.substr(space + 1, line.size() - space - 2);

  // The parent-death signal takes the server down with its test process...
  EXPECT_TRUE(gone_within(postmaster, std::chrono::seconds(30)));
  // ...and the directory it left is removed by the next cluster any test process starts.
  ASSERT_TRUE(fs::exists(directory));
  PostgresCluster next;
  EXPECT_FALSE(fs::exists(directory));
}

TEST(PostgresCluster, MissingServerBinariesFailLoudlyNamingThePackage) {
  PostgresCluster::Options options;
  options.bin_dir = "/nonexistent/postgresql/bin";
  try {
    PostgresCluster cluster(options);
    FAIL() << "a cluster started without server binaries";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("`postgresql`"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tamma::testing
