#pragma once
// A thin RAII layer over the SQLite C API: one connection, cached prepared statements, and
// transactions that roll back unless committed. Every failure is a tamma::Error naming the SQL.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "orchestrator/store/storage_watch.h"

struct sqlite3;
struct sqlite3_stmt;

namespace tamma::orchestrator {

class SqliteDb;

// A prepared statement borrowed from the connection's cache; reset and unbound on destruction so
// the next user starts clean.
class Statement {
 public:
  Statement(SqliteDb& db, sqlite3_stmt* stmt);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Binds by 1-based index.
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<std::int64_t>(value)); }
  Statement& bind(int index, double value);
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Statement& bind(int index, const std::string& text) {
    return bind(index, std::string_view(text));
  }
  Statement& bind(int index, const std::optional<std::string>& text);
  Statement& bind_blob(int index, std::string_view bytes);
  Statement& bind_null(int index);

  // Advances to the next row; false when done.
  bool step();
  // Runs to completion; returns sqlite3_changes().
  int run();

  [[nodiscard]] bool is_null(int column) const;
  [[nodiscard]] std::int64_t int64(int column) const;
  [[nodiscard]] int integer(int column) const { return static_cast<int>(int64(column)); }
  [[nodiscard]] double real(int column) const;
  [[nodiscard]] std::string text(int column) const;
  [[nodiscard]] std::optional<std::string> opt_text(int column) const;
  [[nodiscard]] std::optional<std::int64_t> opt_int64(int column) const;
  [[nodiscard]] std::string blob(int column) const;

 private:
  SqliteDb& db_;
  sqlite3_stmt* stmt_;
};

class SqliteDb {
 public:
  // Opens (creating) the file. Not thread-safe: one connection belongs to one thread.
  explicit SqliteDb(const std::filesystem::path& file);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs one or more statements without results (schema, pragmas).
  void exec(const std::string& sql);
  // A cached prepared statement; the SQL text is the cache key.
  Statement prepare(const std::string& sql);
  // A PRAGMA's single value, as text.
  std::string pragma(const std::string& name);

  [[nodiscard]] int changes() const;
  [[nodiscard]] const std::filesystem::path& file() const { return file_; }
  sqlite3* handle() { return db_; }
  StorageWatch& watch() { return watch_; }

  // Throws Error(kInfrastructure) with the message SQLite gives for `rc`, never the file's
  // path (answers quote it). A fault of the storage itself (full, I/O error, read-only, locked)
  // is "storage_unavailable" and retryable (503) and is recorded in watch(); anything else is
  // "database_error" (500).
  [[noreturn]] void fail(int rc, std::string_view what);

 private:
  std::filesystem::path file_;
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
  StorageWatch watch_;
};

// BEGIN IMMEDIATE takes the write lock up front: a claim never discovers half-way that another
// writer got there first. Rolls back on destruction unless commit() ran.
class Transaction {
 public:
  explicit Transaction(SqliteDb& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  SqliteDb& db_;
  bool done_ = false;
};

}  // namespace tamma::orchestrator
