#include "orchestrator/store/sqlite.h"

#include <sqlite3.h>

#include <spdlog/spdlog.h>

#include "common/error.h"

namespace tamma::orchestrator {

Statement::Statement(SqliteDb& db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}

Statement::~Statement() {
  ::sqlite3_reset(stmt_);
  ::sqlite3_clear_bindings(stmt_);
}

Statement& Statement::bind(int index, std::int64_t value) {
  int rc = ::sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind(int index, double value) {
  int rc = ::sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  int rc =
      ::sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::string>& text) {
  return text ? bind(index, std::string_view(*text)) : bind_null(index);
}

Statement& Statement::bind_blob(int index, std::string_view bytes) {
  int rc = ::sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

Statement& Statement::bind_null(int index) {
  int rc = ::sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

bool Statement::step() {
  int rc = ::sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE) db_.fail(rc, ::sqlite3_sql(stmt_));
  return false;
}

int Statement::run() {
  while (step()) {
  }
  return db_.changes();
}

bool Statement::is_null(int column) const {
  return ::sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::int64_t Statement::int64(int column) const { return ::sqlite3_column_int64(stmt_, column); }

double Statement::real(int column) const { return ::sqlite3_column_double(stmt_, column); }

std::string Statement::text(int column) const {
  const auto* p = ::sqlite3_column_text(stmt_, column);
  if (p == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(p),
                     static_cast<std::size_t>(::sqlite3_column_bytes(stmt_, column)));
}

std::optional<std::string> Statement::opt_text(int column) const {
  if (is_null(column)) return std::nullopt;
  return text(column);
}

std::optional<std::int64_t> Statement::opt_int64(int column) const {
  if (is_null(column)) return std::nullopt;
  return int64(column);
}

std::string Statement::blob(int column) const {
  const void* p = ::sqlite3_column_blob(stmt_, column);
  if (p == nullptr) return {};
  return std::string(static_cast<const char*>(p),
                     static_cast<std::size_t>(::sqlite3_column_bytes(stmt_, column)));
}

SqliteDb::SqliteDb(const std::filesystem::path& file) : file_(file) {
  // NOMUTEX: the connection is confined to one thread by design, so SQLite's own locking
  // would only cost time.
  int rc =
      ::sqlite3_open_v2(file.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db_ ? ::sqlite3_errmsg(db_) : ::sqlite3_errstr(rc);
    ::sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error(ErrorKind::kInfrastructure, "database_error",
                "cannot open database " + file.string() + ": " + message);
  }
  ::sqlite3_extended_result_codes(db_, 1);
}

SqliteDb::~SqliteDb() {
  for (auto& [sql, stmt] : cache_) ::sqlite3_finalize(stmt);
  int rc = ::sqlite3_close_v2(db_);
  if (rc != SQLITE_OK)
    spdlog::error("closing database {}: {}", file_.string(), ::sqlite3_errstr(rc));
}

namespace {

// The disk or the lock, not the request: the same write may well work later.
bool storage_fault(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
    case SQLITE_NOMEM:
      return true;
    default:
      return false;
  }
}

}  // namespace

void SqliteDb::fail(int rc, std::string_view what) {
  const std::string message = ::sqlite3_errmsg(db_);
  const std::string where = std::string(what.substr(0, 200));
  if (storage_fault(rc)) {
    watch_.write_failed(message);
    throw Error(ErrorKind::kInfrastructure, "storage_unavailable",
                "the database cannot be written now: " + message + " (in " + where + ")",
                /*retryable=*/true);
  }
  throw Error(ErrorKind::kInfrastructure, "database_error",
              "database: " + message + " (in " + where + ")", /*retryable=*/false);
}

void SqliteDb::exec(const std::string& sql) {
  char* error = nullptr;
  int rc = ::sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    ::sqlite3_free(error);  // sqlite3_errmsg() still holds the same message
    fail(rc, sql);
  }
}

Statement SqliteDb::prepare(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    int rc = ::sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                  SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) fail(rc, sql);
    it = cache_.emplace(sql, stmt).first;
  }
  return Statement(*this, it->second);
}

std::string SqliteDb::pragma(const std::string& name) {
  auto stmt = prepare("PRAGMA " + name);
  if (!stmt.step()) return {};
  return stmt.text(0);
}

int SqliteDb::changes() const { return ::sqlite3_changes(db_); }

Transaction::Transaction(SqliteDb& db) : db_(db) {
  db_.watch().write_began();
  try {
    db_.exec("BEGIN IMMEDIATE");
  } catch (...) {
    db_.watch().write_abandoned();
    throw;
  }
}

Transaction::~Transaction() {
  if (done_) return;
  db_.watch().write_abandoned();
  // A failed COMMIT (disk full, I/O error) may have rolled back already; a second ROLLBACK
  // would only add a misleading error to the log.
  if (::sqlite3_get_autocommit(db_.handle()) != 0) return;
  char* error = nullptr;
  if (::sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, &error) != SQLITE_OK) {
    // Reached while unwinding from another error, which is the one worth reporting; a failed
    // rollback leaves SQLite to roll back on the next statement.
    spdlog::error("database rollback failed: {}", error ? error : "unknown error");
  }
  ::sqlite3_free(error);
}

void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
  db_.watch().write_succeeded();
}

}  // namespace tamma::orchestrator
