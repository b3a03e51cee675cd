#include "orchestrator/store/postgres.h"

#include <libpq-fe.h>

#include <cstdlib>
#include <memory>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/error.h"

namespace tamma::orchestrator {
namespace {

// Faults of the server or the link to it, by SQLSTATE: the request is worth retrying later
// (503), and /ready says writes fail. Anything else is a fault in the orchestrator (500).
bool is_storage_fault(std::string_view state) {
  if (state.empty()) return true;  // no answer at all: the connection is gone
  const std::string_view klass = state.substr(0, 2);
  return klass == "08"        // connection exception
         || klass == "53"     // insufficient resources: disk full, out of memory, connections
         || klass == "58"     // system error: I/O
         || state == "57P01"  // admin shutdown
         || state == "57P02"  // crash shutdown
         || state == "57P03"  // cannot connect now (starting up, recovering)
         || state == "57014"  // statement timeout
         || state == "55P03"  // lock timeout
         || state == "25006"  // read-only transaction (a standby, or default_transaction_read_only)
         || state == "40001"  // serialization failure
         || state == "40P01";  // deadlock detected
}

std::string describe(std::string_view state) {
  const std::string_view klass = state.substr(0, std::min<std::size_t>(2, state.size()));
  if (state.empty() || klass == "08") return "the connection to the database was lost";
  if (state == "53100") return "the database server's disk is full";
  if (state == "53200") return "the database server is out of memory";
  if (state == "53300") return "the database server has no free connection";
  if (klass == "58") return "the database server had an I/O error";
  if (klass == "57") return "the database server is shutting down, starting or timed out";
  if (state == "55P03") return "a database lock was not granted in time";
  if (state == "25006") return "the database is read-only";
  return "the database refused a transaction under contention";
}

std::string hex_decode_bytea(const char* text, std::size_t length) {
  // Text format of bytea: "\x" then two hex digits per byte (bytea_output = hex, the default
  // since 9.0; the session sets it).
  if (length < 2 || text[0] != '\\' || text[1] != 'x') {
    throw Error(ErrorKind::kInfrastructure, "database_error", "a bytea value is not in hex form");
  }
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve((length - 2) / 2);
  for (std::size_t i = 2; i + 1 < length; i += 2) {
    const int hi = nibble(text[i]);
    const int lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) {
      throw Error(ErrorKind::kInfrastructure, "database_error", "a bytea value has a bad digit");
    }
    out.push_back(static_cast<char>((hi << 4) | lo));
  }
  return out;
}

struct ConninfoDeleter {
  void operator()(PQconninfoOption* options) const { ::PQconninfoFree(options); }
};

}  // namespace

// ---- PgResult ----

PgResult::PgResult(pg_result* result) : result_(result) {}
PgResult::~PgResult() {
  if (result_ != nullptr) ::PQclear(result_);
}
PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    if (result_ != nullptr) ::PQclear(result_);
    result_ = other.result_;
    other.result_ = nullptr;
  }
  return *this;
}
int PgResult::rows() const { return result_ != nullptr ? ::PQntuples(result_) : 0; }
std::int64_t PgResult::affected() const {
  const char* n = result_ != nullptr ? ::PQcmdTuples(result_) : "";
  return *n != '\0' ? std::strtoll(n, nullptr, 10) : 0;
}
bool PgResult::is_null(int row, int column) const {
  return ::PQgetisnull(result_, row, column) != 0;
}
std::string PgResult::text(int row, int column) const {
  return {::PQgetvalue(result_, row, column),
          static_cast<std::size_t>(::PQgetlength(result_, row, column))};
}
std::optional<std::string> PgResult::opt_text(int row, int column) const {
  if (is_null(row, column)) return std::nullopt;
  return text(row, column);
}
std::int64_t PgResult::int64(int row, int column) const {
  if (is_null(row, column)) return 0;
  return std::strtoll(::PQgetvalue(result_, row, column), nullptr, 10);
}
std::optional<std::int64_t> PgResult::opt_int64(int row, int column) const {
  if (is_null(row, column)) return std::nullopt;
  return int64(row, column);
}
bool PgResult::boolean(int row, int column) const {
  return !is_null(row, column) && ::PQgetvalue(result_, row, column)[0] == 't';
}
std::string PgResult::bytes(int row, int column) const {
  return hex_decode_bytea(::PQgetvalue(result_, row, column),
                          static_cast<std::size_t>(::PQgetlength(result_, row, column)));
}

// ---- PgConnection ----

std::string conninfo_display(const std::string& conninfo) {
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoDeleter> options(
      ::PQconninfoParse(conninfo.c_str(), &error));
  if (!options) {
    // libpq's message quotes no part of the string, so no password either.
    std::string why = error != nullptr ? error : "out of memory";
    ::PQfreemem(error);
    while (!why.empty() && why.back() == '\n') why.pop_back();
    throw Error(ErrorKind::kConfig, "invalid_database_url", "--db: " + why);
  }
  std::string display;
  for (PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0') continue;
    const std::string key = o->keyword;
    if (key == "host" || key == "hostaddr" || key == "port" || key == "dbname" || key == "user") {
      display += (display.empty() ? "" : " ") + key + "=" + o->val;
    }
  }
  return display.empty() ? "(libpq defaults)" : display;
}

PgConnection::PgConnection(std::string conninfo)
    : conninfo_(std::move(conninfo)), display_(conninfo_display(conninfo_)) {
  try {
    ensure_connected();
  } catch (...) {
    if (conn_ != nullptr) ::PQfinish(conn_);
    conn_ = nullptr;
    throw;
  }
}

PgConnection::~PgConnection() {
  if (conn_ != nullptr) ::PQfinish(conn_);
}

void PgConnection::ensure_connected() {
  if (conn_ != nullptr && ::PQstatus(conn_) == CONNECTION_OK) return;
  prepared_.clear();
  if (conn_ == nullptr) {
    // A default connect timeout: the core thread must not hang on a host that does not answer.
    // Keywords given in the string win over these (they come after in expansion order).
    const char* keys[] = {"connect_timeout", "fallback_application_name", "dbname", nullptr};
    const char* values[] = {"5", "tamma-orchestrator", conninfo_.c_str(), nullptr};
    conn_ = ::PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  } else {
    ::PQreset(conn_);
  }
  if (conn_ == nullptr || ::PQstatus(conn_) != CONNECTION_OK) {
    std::string why = conn_ != nullptr ? ::PQerrorMessage(conn_) : "out of memory";
    while (!why.empty() && why.back() == '\n') why.pop_back();
    spdlog::warn("database {}: cannot connect: {}", display_, why);
    const std::string message = "cannot connect to the database";
    watch_.write_failed(message);
    throw Error(ErrorKind::kInfrastructure, "storage_unavailable", message, /*retryable=*/true);
  }
  // The store's statements wait at most this long on a lock or for an answer: the core thread
  // serves every request, and /ready reports a stall meanwhile.
  PGresult* r = ::PQexec(conn_,
                         "SET statement_timeout = '15s'; SET lock_timeout = '5s'; "
                         "SET bytea_output = 'hex'; SET TIME ZONE 'UTC'");
  const bool ok = ::PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) fail(r, "session settings");
  ::PQclear(r);
}

PgResult PgConnection::exec(const std::string& sql, std::initializer_list<PgParam> params) {
  return run(sql, params, 0);
}

PgResult PgConnection::exec_binary(const std::string& sql, std::initializer_list<PgParam> params) {
  return run(sql, params, 1);
}

PgResult PgConnection::run(const std::string& sql, std::initializer_list<PgParam> params,
                           int result_format) {
  return exec_params(sql, params.begin(), params.size(), result_format);
}

PgResult PgConnection::exec(const std::string& sql, const std::vector<PgParam>& params) {
  return exec_params(sql, params.data(), params.size());
}

PgResult PgConnection::write(const std::string& sql, const std::vector<PgParam>& params) {
  if (in_transaction_) return exec(sql, params);
  watch_.write_began();
  try {
    auto result = exec(sql, params);
    watch_.write_succeeded();
    return result;
  } catch (...) {
    watch_.write_abandoned();  // a storage fault was recorded as such by fail()
    throw;
  }
}

PgResult PgConnection::exec_params(const std::string& sql, const PgParam* params, std::size_t count,
                                   int result_format) {
  if (in_transaction_ && (conn_ == nullptr || ::PQstatus(conn_) != CONNECTION_OK)) {
    fail(nullptr, sql);  // the transaction died with the connection
  }
  ensure_connected();
  const std::string& name = prepared(sql);
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  for (const PgParam* p = params; p != params + count; ++p) {
    values.push_back(p->value() ? p->value()->data() : nullptr);
    lengths.push_back(p->value() ? static_cast<int>(p->value()->size()) : 0);
    formats.push_back(p->binary() ? 1 : 0);
  }
  PGresult* r = ::PQexecPrepared(conn_, name.c_str(), static_cast<int>(values.size()),
                                 values.data(), lengths.data(), formats.data(), result_format);
  const auto status = ::PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(r, sql);
  return PgResult(r);
}

const std::string& PgConnection::prepared(const std::string& sql) {
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "s" + std::to_string(prepared_.size() + 1);
    PGresult* r = ::PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
    if (::PQresultStatus(r) != PGRES_COMMAND_OK) fail(r, sql);
    ::PQclear(r);
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  return it->second;
}

std::vector<PgResult> PgConnection::pipeline(const std::vector<PgStatement>& statements) {
  std::vector<PgResult> results;
  if (in_transaction_) {
    for (const auto& st : statements) results.push_back(exec(st.sql, st.params));
    return results;
  }
  ensure_connected();
  for (const auto& st : statements) prepared(st.sql);  // before: a Parse has its own round trip
  watch_.write_began();
  PGresult* error = nullptr;  // the first statement that failed, owned here
  std::string_view failed_sql = "pipeline";
  bool broken = false;  // the connection failed under the pipeline
  if (::PQenterPipelineMode(conn_) != 1) {
    watch_.write_abandoned();
    fail(nullptr, "pipeline mode");
  }
  for (const auto& st : statements) {
    std::vector<const char*> values;
    std::vector<int> lengths;
    std::vector<int> formats;
    for (const auto& p : st.params) {
      values.push_back(p.value() ? p.value()->data() : nullptr);
      lengths.push_back(p.value() ? static_cast<int>(p.value()->size()) : 0);
      formats.push_back(p.binary() ? 1 : 0);
    }
    if (::PQsendQueryPrepared(conn_, prepared_.at(st.sql).c_str(), static_cast<int>(values.size()),
                              values.data(), lengths.data(), formats.data(), 0) != 1) {
      broken = true;
      break;
    }
  }
  if (!broken && ::PQpipelineSync(conn_) != 1) broken = true;
  // One result (then a null) per statement sent, then the Sync's. A statement after a failed
  // one comes back PGRES_PIPELINE_ABORTED: the server skipped it.
  for (std::size_t i = 0; !broken && i <= statements.size(); ++i) {
    PGresult* r = ::PQgetResult(conn_);
    if (r == nullptr) {
      broken = true;
      break;
    }
    const auto status = ::PQresultStatus(r);
    if (i == statements.size()) {
      if (status != PGRES_PIPELINE_SYNC) broken = true;
      ::PQclear(r);
      break;
    }
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
      results.emplace_back(r);
    } else {
      if (error == nullptr && status != PGRES_PIPELINE_ABORTED) {
        error = r;
        failed_sql = statements[i].sql;
      } else {
        ::PQclear(r);
      }
      results.emplace_back();
    }
    while (PGresult* rest = ::PQgetResult(conn_)) ::PQclear(rest);  // the null that ends it
  }
  if (broken || ::PQexitPipelineMode(conn_) != 1) {
    // The link broke under the pipeline (or left it in a state nobody can tell): this
    // connection is of no further use, and the server rolled back what it had not committed.
    ::PQfinish(conn_);
    conn_ = nullptr;
    prepared_.clear();
    if (error != nullptr) ::PQclear(error);
    watch_.write_abandoned();
    const std::string message = "the connection to the database was lost";
    watch_.write_failed(message);
    spdlog::error("database {}: connection lost during a pipeline", display_);
    throw Error(ErrorKind::kInfrastructure, "storage_unavailable", message, /*retryable=*/true);
  }
  if (error != nullptr) {
    watch_.write_abandoned();
    fail(error, failed_sql);
  }
  watch_.write_succeeded();
  return results;
}

void PgConnection::exec_script(const std::string& sql) {
  ensure_connected();
  PGresult* r = ::PQexec(conn_, sql.c_str());
  const auto status = ::PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail(r, "schema");
  ::PQclear(r);
}

void PgConnection::fail(pg_result* result, std::string_view what) {
  std::string state;
  std::string primary;
  if (result != nullptr) {
    if (const char* s = ::PQresultErrorField(result, PG_DIAG_SQLSTATE)) state = s;
    if (const char* m = ::PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)) primary = m;
    ::PQclear(result);
  }
  if (primary.empty() && conn_ != nullptr) {
    primary = ::PQerrorMessage(conn_);
    while (!primary.empty() && primary.back() == '\n') primary.pop_back();
  }
  // The server's own words go to the log; an answer gets no server paths (PostgreSQL names its
  // files in I/O and disk errors).
  spdlog::error("database {}: {} (SQLSTATE {}) in: {}", display_, primary,
                state.empty() ? "none" : state, what.substr(0, 200));
  if (is_storage_fault(state)) {
    const std::string message = describe(state);
    watch_.write_failed(message);
    throw Error(ErrorKind::kInfrastructure, "storage_unavailable", message, /*retryable=*/true);
  }
  if (state == "XX001" || state == "XX002") {
    throw Error(ErrorKind::kInfrastructure, "database_corrupt",
                "the database reports corrupted data (SQLSTATE " + state + ")");
  }
  const bool path_like = primary.find('/') != std::string::npos;
  throw Error(ErrorKind::kInfrastructure, "database_error",
              "database error (SQLSTATE " + state + ")" + (path_like ? "" : ": " + primary));
}

// ---- PgTransaction ----

PgTransaction::PgTransaction(PgConnection& db) : db_(db) {
  db_.watch().write_began();
  db_.exec("BEGIN");
  db_.in_transaction_ = true;
}

PgTransaction::~PgTransaction() {
  if (done_) return;
  db_.in_transaction_ = false;
  db_.watch().write_abandoned();
  if (db_.conn_ != nullptr && ::PQstatus(db_.conn_) == CONNECTION_OK) {
    PGresult* r = ::PQexec(db_.conn_, "ROLLBACK");
    ::PQclear(r);  // nothing to do if it fails: the server ends the transaction with the session
  }
}

void PgTransaction::commit() {
  db_.exec("COMMIT");
  db_.in_transaction_ = false;
  done_ = true;
  db_.watch().write_succeeded();
}

}  // namespace tamma::orchestrator
