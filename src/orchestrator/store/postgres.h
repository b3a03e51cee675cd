#pragma once
// A thin RAII layer over libpq for the PostgreSQL store: one connection, statements prepared
// once per connection, text parameters, transactions that roll back unless committed. Every
// failure is a tamma::Error; a fault of the database server or the link to it (connection
// lost, server shutting down, disk full, read-only, lock or statement timeout) is
// "storage_unavailable" (503, retry with backoff) and recorded in watch(). A dropped connection
// is made again on the next use.

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "orchestrator/store/storage_watch.h"

struct pg_conn;
struct pg_result;

namespace tamma::orchestrator {

// One statement parameter: text, or NULL; bytea travels as binary.
class PgParam {
 public:
  PgParam(std::nullptr_t) {}                          // NOLINT(google-explicit-constructor): NULL
  PgParam(const char* text) : value_(text) {}         // NOLINT(google-explicit-constructor)
  PgParam(std::string_view text) : value_(text) {}    // NOLINT(google-explicit-constructor)
  PgParam(const std::string& text) : value_(text) {}  // NOLINT(google-explicit-constructor)
  PgParam(const std::optional<std::string>& text) : value_(text) {}  // NOLINT
  PgParam(std::int64_t n) : value_(std::to_string(n)) {}  // NOLINT(google-explicit-constructor)
  PgParam(int n) : value_(std::to_string(n)) {}           // NOLINT(google-explicit-constructor)
  PgParam(bool b) : value_(b ? "t" : "f") {}              // NOLINT(google-explicit-constructor)
  static PgParam bytes(std::string_view data) {
    PgParam p{data};
    p.binary_ = true;
    return p;
  }
  [[nodiscard]] const std::optional<std::string>& value() const { return value_; }
  [[nodiscard]] bool binary() const { return binary_; }

 private:
  std::optional<std::string> value_;
  bool binary_ = false;
};

// The parts of a libpq connection string that say where (host, port, database, user), never
// its password: for logs and messages. Throws Error(kConfig, "invalid_database_url") for a
// string libpq cannot parse.
std::string conninfo_display(const std::string& conninfo);

class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(pg_result* result);
  ~PgResult();
  PgResult(PgResult&& other) noexcept : result_(other.result_) { other.result_ = nullptr; }
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;

  [[nodiscard]] int rows() const;
  // Rows an UPDATE, INSERT or DELETE touched.
  [[nodiscard]] std::int64_t affected() const;
  [[nodiscard]] bool is_null(int row, int column) const;
  [[nodiscard]] std::string text(int row, int column) const;
  [[nodiscard]] std::optional<std::string> opt_text(int row, int column) const;
  [[nodiscard]] std::int64_t int64(int row, int column) const;
  [[nodiscard]] int integer(int row, int column) const {
    return static_cast<int>(int64(row, column));
  }
  [[nodiscard]] std::optional<std::int64_t> opt_int64(int row, int column) const;
  [[nodiscard]] bool boolean(int row, int column) const;
  // A bytea column (text result format: \x and hex digits).
  [[nodiscard]] std::string bytes(int row, int column) const;

 private:
  pg_result* result_ = nullptr;
};

// One statement of a pipeline (PgConnection::pipeline).
struct PgStatement {
  const std::string& sql;
  std::vector<PgParam> params;
};

class PgConnection {
 public:
  // Connects at once; throws Error(kConfig, "invalid_database_url") for a string libpq cannot
  // parse, storage_unavailable when the server cannot be reached.
  explicit PgConnection(std::string conninfo);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs one statement (prepared on first use on this connection) with text parameters.
  PgResult exec(const std::string& sql, std::initializer_list<PgParam> params = {});
  // The same, with every column of the result in binary form: a bytea column's text() is its
  // raw bytes (half the transfer of the hex text form, and no decoding).
  PgResult exec_binary(const std::string& sql, std::initializer_list<PgParam> params = {});
  PgResult exec(const std::string& sql, const std::vector<PgParam>& params);
  // One statement that changes state on its own, outside any transaction: atomic by itself
  // (its CTEs included), and one round trip where BEGIN, the statement and COMMIT are three.
  // Recorded in watch() as a write transaction. Inside a transaction it is a plain exec().
  PgResult write(const std::string& sql, const std::vector<PgParam>& params);
  // Runs `statements` in order as one transaction in one round trip (libpq's pipeline mode:
  // every statement sent, then one Sync, which commits them together). Each statement still
  // gets a snapshot of its own, taken when it starts (read committed), so a statement that
  // follows a lock sees what the lock waited for. Any failure rolls back all of them (the
  // server skips the rest up to the Sync) and throws as exec() does. Recorded in watch() as a
  // write transaction. Inside a PgTransaction the statements run one after the other in it.
  std::vector<PgResult> pipeline(const std::vector<PgStatement>& statements);
  // Runs SQL text that may hold several statements and takes no parameters (schema).
  void exec_script(const std::string& sql);

  StorageWatch& watch() { return watch_; }
  // The conninfo without its password, for messages.
  [[nodiscard]] const std::string& display_name() const { return display_; }

 private:
  friend class PgTransaction;
  void ensure_connected();
  // The server-side name of `sql`, prepared on this connection at its first use.
  const std::string& prepared(const std::string& sql);
  PgResult run(const std::string& sql, std::initializer_list<PgParam> params, int result_format);
  // `result_format` 1: every result column in binary form (exec_binary).
  PgResult exec_params(const std::string& sql, const PgParam* params, std::size_t count,
                       int result_format = 0);
  [[noreturn]] void fail(pg_result* result, std::string_view what);

  std::string conninfo_;
  std::string display_;
  pg_conn* conn_ = nullptr;
  std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
  bool in_transaction_ = false;
  StorageWatch watch_;
};

// BEGIN; rolls back on destruction unless commit() ran. Read committed: every write the store
// makes is a conditional UPDATE (or locks its row first), which read committed re-checks
// against the newest row version when it had to wait for another replica's transaction.
class PgTransaction {
 public:
  explicit PgTransaction(PgConnection& db);
  ~PgTransaction();
  PgTransaction(const PgTransaction&) = delete;
  PgTransaction& operator=(const PgTransaction&) = delete;
  void commit();

 private:
  PgConnection& db_;
  bool done_ = false;
};

}  // namespace tamma::orchestrator
