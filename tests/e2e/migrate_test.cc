// `tamma-orchestrator migrate` as an operator runs it before a rolling upgrade: against a new
// database, an old one, a current one, and one a newer orchestrator already moved on, for both
// stores; and `serve` afterwards starts on what it left.

#include <sqlite3.h>

#include <regex>

#include "e2e_support.h"
#include "support/postgres_cluster.h"

namespace tamma::e2e {
namespace {

using testing::run_process;
using testing::TempDir;

testing::ProcessResult migrate(const std::string& db) {
  return run_process({kOrchestratorBinary, "migrate", "--db", db}, {"TAMMA_DB_URL="});
}

// `sql` run on an SQLite file with the library itself, as an older version or an admin would.
void sqlite_exec(const std::filesystem::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  std::string message = error != nullptr ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << message;
}

int sqlite_user_version(const std::filesystem::path& file) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, nullptr);
  int version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
  sqlite3_finalize(s);
  sqlite3_close(db);
  return version;
}

// "NAME: schema version A -> B" or "NAME: schema version B, already current": {A, B}, with
// A == B for the second form.
std::pair<int, int> reported(const std::string& out) {
  std::smatch m;
  if (std::regex_search(out, m, std::regex(R"(schema version (\d+) -> (\d+)\n)"))) {
    return {std::stoi(m[1]), std::stoi(m[2])};
  }
  if (std::regex_search(out, m, std::regex(R"(schema version (\d+), already current\n)"))) {
    return {std::stoi(m[1]), std::stoi(m[1])};
  }
  ADD_FAILURE() << "no schema line in: " << out;
  return {-1, -1};
}

TEST(MigrateCommand, SqliteFromNothingThenCurrentThenRefusesANewerOne) {
  TempDir dir;
  const auto file = dir.path() / "db.sqlite";  // where OrchestratorProcess keeps it

  auto missing = migrate("sqlite:" + file.string());
  EXPECT_EQ(missing.exit_code, 2) << "a mistyped path must not make a database nobody uses";
  EXPECT_NE(missing.err.find("no SQLite database"), std::string::npos) << missing.err;
  EXPECT_FALSE(std::filesystem::exists(file));

  sqlite_exec(file, "SELECT 1");  // an empty file, as `touch` or a provisioning tool leaves
  auto first = migrate("sqlite:" + file.string());
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto [from, to] = reported(first.out);
  EXPECT_EQ(from, 0);
  EXPECT_GT(to, 1);
  EXPECT_EQ(sqlite_user_version(file), to) << "what it said is what the file holds";

  auto again = migrate(file.string());  // a bare path is SQLite too
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(reported(again.out), std::make_pair(to, to));

  // The tables it made are the ones serve uses: serve starts on the file and takes a task.
  {
    OrchestratorProcess serve(dir.path(), fast_orchestrator_flags());
    json spec = {{"type", "command"}, {"steps", {{{"name", "n"}, {"run", "true"}}}}};
    EXPECT_FALSE(serve.submit(spec, "after-migrate").empty());
    auto r = serve.stop();
    EXPECT_EQ(r.err.find("schema version"), std::string::npos) << "nothing left to migrate";
  }

  sqlite_exec(file, "PRAGMA user_version = " + std::to_string(to + 1));
  auto newer = migrate("sqlite:" + file.string());
  EXPECT_EQ(newer.exit_code, 2);
  EXPECT_NE(newer.err.find("newer than this orchestrator"), std::string::npos) << newer.err;
  EXPECT_EQ(sqlite_user_version(file), to + 1) << "left as the newer version made it";
}

TEST(MigrateCommand, PostgresFromNothingThenCurrentThenRefusesANewerOne) {
  testing::PostgresCluster cluster;
  const auto db = cluster.create_database("migrate");
  const auto url = cluster.conninfo(db);

  auto first = migrate(url);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto [from, to] = reported(first.out);
  EXPECT_EQ(from, 0);
  EXPECT_GT(to, 1);
  auto rows = cluster.execute(db, "SELECT max(version)::text FROM tamma_schema");
  ASSERT_EQ(rows.size(), 1U);
  EXPECT_EQ(rows[0][0], std::to_string(to));

  // Several at once, as replicas of a rolling upgrade start together: the advisory lock lets
  // one migrate and the others find it done.
  std::vector<std::unique_ptr<testing::ChildProcess>> together;
  for (int i = 0; i < 3; ++i) {
    together.push_back(std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{kOrchestratorBinary, "migrate", "--db", url}));
  }
  for (auto& child : together) {
    auto r = child->wait();
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(reported(r.out), std::make_pair(to, to));
  }

  // The connection string's password never reaches the output.
  auto with_password = migrate(url + " password=s3cret-do-not-print");
  EXPECT_EQ(with_password.exit_code, 0) << with_password.err;
  EXPECT_EQ(with_password.out.find("s3cret"), std::string::npos) << with_password.out;
  EXPECT_EQ(with_password.err.find("s3cret"), std::string::npos) << with_password.err;

  cluster.execute(db, "UPDATE tamma_schema SET version = version + 1");
  auto newer = migrate(url);
  EXPECT_EQ(newer.exit_code, 2);
  EXPECT_NE(newer.err.find("newer than this orchestrator"), std::string::npos) << newer.err;
}

}  // namespace
}  // namespace tamma::e2e
