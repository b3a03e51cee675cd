#include "orchestrator/store/postgres_store.h"

#include <set>
#include <tuple>

#include <fmt/format.h>

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "orchestrator/store/audit_row.h"
#include "orchestrator/store/postgres.h"
#include "orchestrator/store/postgres_signal.h"
#include "orchestrator/store/task_row.h"

namespace tamma::orchestrator {
namespace {

using nlohmann::json;
using wire::TaskState;

// Milliseconds since the epoch from the database server's clock: every replica agrees on lease
// deadlines whatever its own clock says. clock_timestamp(), not now(): now() is frozen at the
// start of the transaction, and a transaction that waited on a lock must not write a deadline
// already in the past.
#define TAMMA_NOW "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

#define TAMMA_LEASED "state IN ('running','cancel_requested')"
#define TAMMA_ACK "acked_at = COALESCE(acked_at, " TAMMA_NOW ")"
// Every fenced write carries this: $1 task, $2 attempt, $3 lease id, $4 worker.
#define TAMMA_FENCE \
  "id = $1 AND attempt = $2::integer AND lease_id = $3 AND worker_id = $4 AND " TAMMA_LEASED

#define TAMMA_TASK_COLUMNS                                                         \
  "id, type, state, attempt, max_retries, priority, labels::text, worker_id, "     \
  "idempotency_key, progress, result, error, CASE WHEN state = 'retry_wait' THEN " \
  "GREATEST(available_at - " TAMMA_NOW                                             \
  ", 0) END, log_length, created_at, updated_at, started_at, finished_at, spec, "  \
  "log_missing_bytes"

// Host failures of one task that do not count against its maxRetries (as in the SQLite store).
constexpr int kExcusedHostFailures = 5;
// Logs are stored in pieces no larger than this, so a read from an offset looks back at most
// one piece.
constexpr std::uint64_t kLogChunk = 64 * 1024;

// Taken for the whole migration: replicas starting together migrate one after the other, and
// the later ones find nothing left to do. The number is "tamma" in ASCII.
constexpr std::int64_t kMigrationLock = 0x74616d6d61;

struct Migration {
  int version;
  const char* sql;
};

// Version 1 is the schema the SQLite store reached at its version 3, in PostgreSQL's types.
// Times are milliseconds since the epoch (bigint) from TAMMA_NOW, as in SQLite, so both stores
// share their arithmetic. Labels are jsonb (a claim matches them with @>); everything else
// JSON stays text, exactly as submitted.
const Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE settings (
  key   text PRIMARY KEY,
  value text NOT NULL
);

CREATE TABLE workers (
  id              text PRIMARY KEY,
  token_hash      text NOT NULL UNIQUE,
  capabilities    text NOT NULL,
  draining        boolean NOT NULL DEFAULT false,
  drain_requested boolean NOT NULL DEFAULT false,
  registered_at   bigint NOT NULL,
  last_seen_at    bigint NOT NULL,
  gone_at         bigint,
  unhealthy       text
);

CREATE TABLE tasks (
  seq               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id                text NOT NULL UNIQUE,
  type              text NOT NULL,
  spec              text NOT NULL,
  state             text NOT NULL,
  priority          integer NOT NULL,
  max_retries       integer NOT NULL,
  labels            jsonb NOT NULL,
  idempotency_key   text UNIQUE,
  request_hash      text,
  attempt           integer NOT NULL DEFAULT 0,
  worker_id         text,
  lease_id          text,
  lease_expires_at  bigint,
  available_at      bigint NOT NULL,
  progress          text,
  result            text,
  error             text,
  log_length        bigint NOT NULL DEFAULT 0,
  created_at        bigint NOT NULL,
  updated_at        bigint NOT NULL,
  started_at        bigint,
  finished_at       bigint,
  claimed_at        bigint,
  acked_at          bigint,
  host_failures     integer NOT NULL DEFAULT 0,
  avoid_worker      text,
  avoid_until       bigint,
  log_missing_bytes bigint NOT NULL DEFAULT 0
);
CREATE INDEX tasks_claim ON tasks (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX tasks_state ON tasks (state, seq);
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE state IN ('running','cancel_requested');
CREATE INDEX tasks_retry ON tasks (available_at) WHERE state = 'retry_wait';
CREATE INDEX tasks_worker ON tasks (worker_id) WHERE state IN ('running','cancel_requested');
CREATE INDEX tasks_unacked ON tasks (claimed_at) WHERE state = 'running' AND acked_at IS NULL;

CREATE TABLE attempts (
  task_id    text NOT NULL,
  attempt    integer NOT NULL,
  worker_id  text NOT NULL,
  lease_id   text NOT NULL,
  claimed_at bigint NOT NULL,
  ended_at   bigint,
  outcome    text,
  PRIMARY KEY (task_id, attempt)
);

CREATE TABLE log_chunks (
  task_id text NOT NULL,
  attempt integer NOT NULL,
  pos     bigint NOT NULL,
  data    bytea NOT NULL,
  PRIMARY KEY (task_id, attempt, pos)
);

CREATE TABLE artifacts (
  task_id    text NOT NULL,
  attempt    integer NOT NULL,
  name       text NOT NULL,
  size       bigint NOT NULL,
  sha256     text NOT NULL,
  path       text NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (task_id, attempt, name)
);
)sql"},
    // The audit trail (docs/adr/0026-audit-trail.md): one row per operation that changed state,
    // written in that operation's transaction, times from TAMMA_NOW like every other. The
    // triggers refuse any change or removal, so a record, once committed, says what happened
    // for good.
    {2, R"sql(
CREATE TABLE audit (
  seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at         bigint NOT NULL,
  actor_kind text NOT NULL,
  actor_id   text,
  address    text,
  action     text NOT NULL,
  task_id    text,
  attempt    integer,
  worker_id  text,
  detail     text NOT NULL
);
CREATE INDEX audit_task ON audit (task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX audit_at ON audit (at);
CREATE FUNCTION tamma_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the audit trail is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION tamma_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION tamma_audit_append_only();
)sql"},
    // Artifact bytes in the database, so any replica serves any download
    // (docs/adr/0027-artifacts-in-postgresql-and-retention.md, postgres_artifacts.cc): one row
    // per chunk of one upload (`blob`, named by artifacts.path as "postgres:BLOB"), with the
    // chunk's SHA-256 to tell damage. Stored out of line and uncompressed: artifacts are mostly
    // compressed already.
    {3, R"sql(
CREATE TABLE artifact_chunks (
  task_id text NOT NULL,
  blob    text NOT NULL,
  seq     integer NOT NULL,
  digest  bytea NOT NULL,
  data    bytea NOT NULL,
  PRIMARY KEY (task_id, blob, seq)
);
ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
)sql"},
    // Retention (postgres_retention.cc): finished tasks are found oldest first by when they
    // ended, and a worker is pruned only when no attempt names it.
    {4, R"sql(
CREATE INDEX tasks_finished ON tasks (finished_at)
  WHERE state IN ('succeeded','failed','dead','cancelled');
CREATE INDEX attempts_worker ON attempts (worker_id);
)sql"},
};
constexpr int kSchemaVersion = 4;

// Adapts one row of a result to what task_view() reads.
struct Row {
  const PgResult& r;
  int row;
  [[nodiscard]] std::string text(int c) const { return r.text(row, c); }
  [[nodiscard]] std::optional<std::string> opt_text(int c) const { return r.opt_text(row, c); }
  [[nodiscard]] int integer(int c) const { return r.integer(row, c); }
  [[nodiscard]] std::int64_t int64(int c) const { return r.int64(row, c); }
  [[nodiscard]] std::optional<std::int64_t> opt_int64(int c) const { return r.opt_int64(row, c); }
};

// Reads (id, attempt, state) rows; with `workers`, also the worker in a fourth column.
std::vector<Requeued> requeued_rows(const PgResult& r,
                                    std::vector<std::string>* workers = nullptr) {
  std::vector<Requeued> out;
  for (int i = 0; i < r.rows(); ++i) {
    out.push_back({r.text(i, 0), r.integer(i, 1), state_of(r.text(i, 2))});
    if (workers != nullptr) workers->push_back(r.opt_text(i, 3).value_or(""));
  }
  return out;
}

std::int64_t ms(std::chrono::milliseconds d) { return static_cast<std::int64_t>(d.count()); }
std::int64_t i64(std::uint64_t n) { return static_cast<std::int64_t>(n); }

void end_attempt(PgConnection& db, const std::string& task_id, int attempt,
                 const std::string& outcome) {
  db.exec("UPDATE attempts SET ended_at = " TAMMA_NOW
          ", outcome = $3 WHERE task_id = $1 AND attempt = $2::integer",
          {task_id, attempt, outcome});
}

FenceOutcome diagnose(PgConnection& db, const std::string& task_id, const std::string& worker_id,
                      int attempt) {
  FenceOutcome out;
  auto s = db.exec("SELECT state, attempt FROM tasks WHERE id = $1", {task_id});
  if (s.rows() == 0) {
    out.status = FenceStatus::kNotFound;
    return out;
  }
  out.state = state_of(s.text(0, 0));
  out.attempt = s.integer(0, 1);
  // A worker that once held this attempt has lost it (409); one that never did is reaching
  // for someone else's task (403).
  auto held = db.exec(
      "SELECT 1 FROM attempts WHERE task_id = $1 AND attempt = $2::integer AND worker_id = $3",
      {task_id, attempt, worker_id});
  out.status = held.rows() > 0 ? FenceStatus::kLeaseLost : FenceStatus::kForbidden;
  return out;
}

FenceOutcome fenced(const PgResult& r) {
  return {FenceStatus::kOk, state_of(r.text(0, 0)), r.integer(0, 1)};
}

std::string read_log_range(PgConnection& db, const std::string& task_id, int attempt,
                           std::uint64_t from, std::uint64_t to) {
  std::string out;
  if (from >= to) return out;
  auto s = db.exec(
      "SELECT pos, data FROM log_chunks WHERE task_id = $1 AND attempt = $2::integer "
      "AND pos >= $3::bigint AND pos < $4::bigint AND pos + octet_length(data) > $5::bigint "
      "ORDER BY pos",
      {task_id, attempt, static_cast<std::int64_t>(from) - static_cast<std::int64_t>(kLogChunk),
       i64(to), i64(from)});
  for (int i = 0; i < s.rows(); ++i) {
    auto offset = static_cast<std::uint64_t>(s.int64(i, 0));
    std::string data = s.bytes(i, 1);
    std::uint64_t begin = from > offset ? from - offset : 0;
    std::uint64_t end = std::min<std::uint64_t>(data.size(), to - offset);
    out.append(data, begin, end - begin);
  }
  return out;
}

// The audit record of a one-statement write, as a CTE named `aud` that reads the rows the
// statement changed from `source` (columns id, attempt, worker_id, state). Its five parameters
// follow the statement's own `count`: actor kind, actor id, address, action, detail (see
// append_audit()). With `state_from_row` the detail's "state" is the state the row went to,
// which only the statement knows.
std::string audit_cte(std::size_t count, const char* source, bool state_from_row) {
  // fmt, not `"$" + std::to_string(...)`: that trips GCC 12's -Wrestrict at -O3.
  const auto p = [count](std::size_t i) { return fmt::format("${}", count + i); };
  const std::string detail =
      state_from_row
          ? fmt::format("jsonb_set({}::jsonb, '{{state}}', to_jsonb({}.state))::text", p(5), source)
          : p(5);
  return fmt::format(
      "aud AS (INSERT INTO audit (at, actor_kind, actor_id, address, action, task_id, attempt, "
      "worker_id, detail) SELECT " TAMMA_NOW
      ", {1}, {2}, {3}, {4}, {0}.id, NULLIF({0}.attempt, 0), {0}.worker_id, {5} FROM {0})",
      source, p(1), p(2), p(3), p(4), detail);
}

// The parameters audit_cte() reads, for the actor in force.
void append_audit(std::vector<PgParam>& params, const Actor& who, wire::AuditAction action,
                  const json& detail) {
  params.emplace_back(std::string(wire::to_string(who.kind)));
  params.emplace_back(audit_text(who.id));
  params.emplace_back(audit_text(who.address));
  params.emplace_back(std::string(wire::to_string(action)));
  params.emplace_back(detail.dump());
}

}  // namespace

PostgresStore::PostgresStore(const std::string& conninfo)
    : conninfo_(conninfo), db_(std::make_unique<PgConnection>(conninfo)) {
  schema_ = migrate(*db_);
}

PostgresStore::~PostgresStore() {
  signal_.reset();  // its thread stops before the rest goes
}

SchemaVersions PostgresStore::migrate(PgConnection& db) {
  PgTransaction tx(db);
  db.exec("SELECT pg_advisory_xact_lock($1::bigint)", {kMigrationLock});
  db.exec_script("CREATE TABLE IF NOT EXISTS tamma_schema (version integer NOT NULL)");
  auto v = db.exec("SELECT max(version) FROM tamma_schema");
  int version = v.rows() > 0 && !v.is_null(0, 0) ? v.integer(0, 0) : 0;
  const int found = version;
  if (version > kSchemaVersion) {
    throw Error(ErrorKind::kConfig, "database_too_new",
                fmt::format("database {} has schema version {}, newer than this orchestrator's {}",
                            db.display_name(), version, kSchemaVersion));
  }
  for (const auto& m : kMigrations) {
    if (m.version <= version) continue;
    db.exec_script(m.sql);
    version = m.version;
  }
  db.exec("DELETE FROM tamma_schema");
  db.exec("INSERT INTO tamma_schema (version) VALUES ($1::integer)", {version});
  tx.commit();
  if (found != version) {
    spdlog::info("database {}: schema version {} -> {}", db.display_name(), found, version);
  }
  return {found, version};
}

StorageWatch& PostgresStore::watch() { return db_->watch(); }

std::optional<std::string> PostgresStore::setting(const std::string& key) {
  auto s = db_->exec("SELECT value FROM settings WHERE key = $1", {key});
  if (s.rows() == 0) return std::nullopt;
  return s.text(0, 0);
}

void PostgresStore::put_setting(const std::string& key, const std::string& value) {
  PgTransaction tx(*db_);
  db_->exec(
      "INSERT INTO settings (key, value) VALUES ($1, $2) "
      "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      {key, value});
  tx.commit();
}

void PostgresStore::probe() {
  PgTransaction tx(*db_);
  db_->exec("INSERT INTO settings (key, value) VALUES ('probe', " TAMMA_NOW
            "::text) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  tx.commit();
}

// ---- workers ----------------------------------------------------------------------------------

void PostgresStore::register_worker(const std::string& id, const std::string& token_hash,
                                    const wire::Capabilities& capabilities) {
  PgTransaction tx(*db_);
  db_->exec(
      "INSERT INTO workers (id, token_hash, capabilities, registered_at, last_seen_at) "
      "VALUES ($1, $2, $3, " TAMMA_NOW ", " TAMMA_NOW ")",
      {id, token_hash, wire::to_json(capabilities).dump()});
  record(register_entry(id, capabilities));
  tx.commit();
}

std::optional<std::string> PostgresStore::worker_by_token_hash(const std::string& token_hash) {
  auto s =
      db_->exec("SELECT id FROM workers WHERE token_hash = $1 AND gone_at IS NULL", {token_hash});
  if (s.rows() == 0) return std::nullopt;
  return s.text(0, 0);
}

std::optional<WorkerInfo> PostgresStore::worker(const std::string& id) {
  auto s = db_->exec(
      "SELECT capabilities, draining, drain_requested, gone_at IS NOT NULL, "
      "  (SELECT count(*) FROM tasks WHERE worker_id = $1 AND " TAMMA_LEASED
      ") FROM workers WHERE id = $1",
      {id});
  if (s.rows() == 0) return std::nullopt;
  WorkerInfo w;
  w.id = id;
  w.capabilities = wire::capabilities_from_json(json::parse(s.text(0, 0)));
  w.draining = s.boolean(0, 1);
  w.drain_requested = s.boolean(0, 2);
  w.gone = s.boolean(0, 3);
  w.leased = s.integer(0, 4);
  return w;
}

std::vector<Requeued> PostgresStore::unregister_worker(const std::string& id) {
  PgTransaction tx(*db_);
  // The worker first, so its record comes before those of the leases it loses (and its row is
  // locked before its tasks', in the order a claim locks them).
  auto gone = db_->exec(
      "UPDATE workers SET gone_at = " TAMMA_NOW " WHERE id = $1 AND gone_at IS NULL", {id});
  if (gone.affected() > 0) record({wire::AuditAction::kUnregister, {}, 0, id});
  auto s = db_->exec(
      "UPDATE tasks SET "
      "  state = CASE WHEN state = 'cancel_requested' THEN 'cancelled' "
      "               WHEN attempt - host_failures > max_retries THEN 'dead' ELSE 'queued' END, "
      "  finished_at = CASE WHEN state = 'cancel_requested' OR "
      "    attempt - host_failures > max_retries THEN " TAMMA_NOW
      " END, "
      "  available_at = " TAMMA_NOW ", lease_expires_at = NULL, updated_at = " TAMMA_NOW
      ", "
      "  error = json_build_object('code', 'worker_unregistered', 'message', "
      "    'the worker unregistered while running it', 'retryable', true)::text "
      "WHERE worker_id = $1 AND " TAMMA_LEASED " RETURNING id, attempt, state",
      {id});
  auto requeued = requeued_rows(s);
  for (const auto& r : requeued) {
    end_attempt(*db_, r.task_id, r.attempt, "worker_unregistered");
    record({wire::AuditAction::kLeaseRevoked, r.task_id, r.attempt, id, state_detail(r.state)});
  }
  tx.commit();
  return requeued;
}

HeartbeatOutcome PostgresStore::heartbeat(const std::string& worker_id,
                                          const wire::HeartbeatRequest& request,
                                          std::chrono::milliseconds lease_ttl) {
  // One statement: the worker's row, then every lease it names that it still holds (the fence
  // of each, as in TAMMA_FENCE), renewed. A worker gone meanwhile renews nothing.
  static const std::string sql =
      "WITH w AS (UPDATE workers SET last_seen_at = " TAMMA_NOW
      ", draining = $2::boolean, unhealthy = $3 WHERE id = $1 AND gone_at IS NULL "
      "  RETURNING drain_requested), "
      "l AS (UPDATE tasks SET lease_expires_at = " TAMMA_NOW " + $5::bigint, " TAMMA_ACK
      "  FROM jsonb_to_recordset($4::jsonb) AS h(task_id text, attempt integer, lease_id text) "
      "  WHERE EXISTS (SELECT 1 FROM w) AND tasks.id = h.task_id AND tasks.attempt = h.attempt "
      "  AND tasks.lease_id = h.lease_id AND tasks.worker_id = $1 "
      "  AND tasks.state IN ('running','cancel_requested') "
      "  RETURNING tasks.id, tasks.attempt, tasks.lease_id, tasks.state) "
      "SELECT 'w', NULL, NULL, NULL, drain_requested FROM w "
      "UNION ALL SELECT 'l', id, attempt, lease_id, state = 'cancel_requested' FROM l";
  json leases = json::array();
  for (const auto& lease : request.leases) {
    leases.push_back(
        {{"task_id", lease.task_id}, {"attempt", lease.attempt}, {"lease_id", lease.lease_id}});
  }
  auto s = db_->write(
      sql, {worker_id, request.draining, request.unhealthy, leases.dump(), ms(lease_ttl)});
  HeartbeatOutcome out;
  std::set<std::tuple<std::string, int, std::string>> held;
  std::set<std::pair<std::string, int>> cancel;
  for (int i = 0; i < s.rows(); ++i) {
    if (s.text(i, 0) == "w") {
      out.known = true;
      out.response.drain = s.boolean(i, 4);
      continue;
    }
    held.emplace(s.text(i, 1), s.integer(i, 2), s.text(i, 3));
    if (s.boolean(i, 4)) cancel.emplace(s.text(i, 1), s.integer(i, 2));
  }
  if (!out.known) return out;
  for (const auto& lease : request.leases) {
    if (held.count({lease.task_id, lease.attempt, lease.lease_id}) == 0) {
      out.response.lost_leases.push_back({lease.task_id, lease.attempt});
    } else if (cancel.count({lease.task_id, lease.attempt}) > 0) {
      out.response.cancel.push_back({lease.task_id, lease.attempt});
    }
  }
  out.response.lease_ttl_ms = lease_ttl.count();
  return out;
}

bool PostgresStore::request_drain(const std::string& worker_id) {
  PgTransaction tx(*db_);
  auto r = db_->exec("UPDATE workers SET drain_requested = true WHERE id = $1 AND gone_at IS NULL",
                     {worker_id});
  if (r.affected() > 0) record({wire::AuditAction::kDrain, {}, 0, worker_id});
  tx.commit();
  return r.affected() > 0;
}

std::vector<wire::WorkerView> PostgresStore::list_workers(std::chrono::milliseconds offline_after,
                                                          bool include_gone) {
  std::vector<wire::WorkerView> out;
  auto s = db_->exec(
      "SELECT id, capabilities, draining OR drain_requested, gone_at IS NOT NULL, "
      "registered_at, last_seen_at, GREATEST(" TAMMA_NOW
      " - last_seen_at, 0), unhealthy FROM workers "
      "WHERE $1::boolean OR gone_at IS NULL ORDER BY registered_at, id",
      {include_gone});
  for (int i = 0; i < s.rows(); ++i) {
    wire::WorkerView w;
    w.id = s.text(i, 0);
    w.capabilities = wire::capabilities_from_json(json::parse(s.text(i, 1)));
    w.registered_at = rfc3339(s.int64(i, 4));
    w.last_seen_at = rfc3339(s.int64(i, 5));
    w.last_seen_ago_ms = s.int64(i, 6);
    const bool gone = s.boolean(i, 3);
    if (!gone) w.unhealthy = s.opt_text(i, 7);
    if (gone) {
      w.state = wire::WorkerState::kGone;
    } else if (w.last_seen_ago_ms > offline_after.count()) {
      w.state = wire::WorkerState::kOffline;
    } else if (s.boolean(i, 2)) {
      w.state = wire::WorkerState::kDraining;
    } else {
      w.state = wire::WorkerState::kOnline;
    }
    out.push_back(std::move(w));
  }
  for (auto& w : out) {
    auto l =
        db_->exec("SELECT id, attempt, lease_id FROM tasks WHERE worker_id = $1 AND " TAMMA_LEASED
                  " ORDER BY seq",
                  {w.id});
    for (int i = 0; i < l.rows(); ++i) {
      w.leases.push_back({l.text(i, 0), l.integer(i, 1), l.text(i, 2)});
    }
  }
  return out;
}

// ---- tasks ------------------------------------------------------------------------------------

SubmitOutcome PostgresStore::submit(const NewTask& task, const WorkerInfo* hand_to,
                                    const std::string& lease_id,
                                    std::chrono::milliseconds lease_ttl) {
  // The insert, its audit record and the view the answer shows are one statement. A task
  // handed to a parked poll at once is claimed in the same transaction, in the same round trip
  // (a pipeline): insert, lock the worker's row, claim.
  // ON CONFLICT: two replicas given the same key at once both reach here; the second waits
  // for the first's commit and then inserts nothing.
  static const std::string sql =
      "WITH ins AS (INSERT INTO tasks (id, type, spec, state, priority, max_retries, labels, "
      "  idempotency_key, request_hash, available_at, created_at, updated_at) "
      "  VALUES ($1, $2, $3, 'queued', $4::integer, $5::integer, $6::jsonb, $7, $8, " TAMMA_NOW
      ", " TAMMA_NOW ", " TAMMA_NOW ") ON CONFLICT (idempotency_key) DO NOTHING RETURNING *), " +
      audit_cte(8, "ins", false) + " SELECT " TAMMA_TASK_COLUMNS " FROM ins";
  std::vector<PgParam> params{task.id,
                              task.type,
                              task.spec.dump(),
                              task.priority,
                              task.max_retries,
                              labels_json(task.labels).dump(),
                              task.idempotency_key,
                              task.request_hash};
  append_audit(params, actor(), wire::AuditAction::kSubmit,
               submit_entry(task.id, task.type, task.priority, task.max_retries).detail);
  SubmitOutcome out;
  PgResult inserted;
  if (hand_to == nullptr) {
    inserted = db_->write(sql, params);
  } else {
    std::vector<PgStatement> statements;
    statements.push_back({sql, std::move(params)});
    for (auto& st : claim_statements(*hand_to, lease_id, lease_ttl, &task.id)) {
      statements.push_back(std::move(st));
    }
    auto results = db_->pipeline(statements);
    inserted = std::move(results.front());
    out.claim = claim_from(results.back(), lease_id, lease_ttl);
  }
  if (inserted.rows() == 0) {
    auto s = db_->exec("SELECT id, request_hash FROM tasks WHERE idempotency_key = $1",
                       {task.idempotency_key});
    if (s.rows() == 0) {
      throw Error(ErrorKind::kInfrastructure, "database_error",
                  "an idempotency key conflicted with a task that is not there");
    }
    out.key_reused = s.text(0, 1) != task.request_hash;
    out.task = *this->task(s.text(0, 0));
    return out;
  }
  out.created = true;
  out.task = task_view(Row{inserted, 0});  // a new task has no artifacts yet
  return out;
}

std::optional<Claim> PostgresStore::claim(const WorkerInfo& worker, const std::string& lease_id,
                                          std::chrono::milliseconds lease_ttl) {
  auto results = db_->pipeline(claim_statements(worker, lease_id, lease_ttl, nullptr));
  return claim_from(results.back(), lease_id, lease_ttl);
}

std::vector<PgStatement> PostgresStore::claim_statements(const WorkerInfo& worker,
                                                         const std::string& lease_id,
                                                         std::chrono::milliseconds lease_ttl,
                                                         const std::string* new_task_id) {
  // The worker's row is locked first, in a statement of its own: two replicas serving polls of
  // one worker at once count its free slots one after the other, and the count below (a new
  // statement, so a new snapshot) sees the claim the other one committed while this one
  // waited. A worker that is draining or gone gets nothing, checked here and not only by the
  // poll handler: a drain or an unregister through another replica may have landed since the
  // handler looked. Both go in one pipeline (one round trip), so the pick repeats the check
  // rather than being skipped when the lock found no such worker.
  static const std::string lock =
      "SELECT 1 FROM workers WHERE id = $1 AND gone_at IS NULL AND NOT draining "
      "AND NOT drain_requested FOR UPDATE";

  // The pick is a CTE with LIMIT 1 and SKIP LOCKED: the planner cannot turn it into a join
  // that updates more rows than asked, and a row another replica is claiming right now is
  // passed over instead of waited for. The worker must have a free slot, handle the task's
  // type and offer every label the task requires with the same value (jsonb containment).
  // The attempt's row and the audit record come in the same statement. $7, when set, is a
  // task that submit just inserted: a submit replayed by its idempotency key inserted none,
  // and then nothing is claimed for it.
  static const std::string pick =
      "WITH pick AS ("
      "  SELECT seq FROM tasks t WHERE t.state = 'queued' "
      "    AND EXISTS (SELECT 1 FROM workers w WHERE w.id = $1 AND w.gone_at IS NULL "
      "      AND NOT w.draining AND NOT w.drain_requested) "
      "    AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM tasks n WHERE n.id = $7)) "
      "    AND (SELECT count(*) FROM tasks b WHERE b.worker_id = $1 AND "
      "      b.state IN ('running','cancel_requested')) < $6::integer "
      "    AND (t.avoid_worker IS NULL OR t.avoid_worker <> $1 OR t.avoid_until <= " TAMMA_NOW
      ") "
      "    AND t.type IN (SELECT jsonb_array_elements_text($4::jsonb)) "
      "    AND $5::jsonb @> t.labels "
      "  ORDER BY t.priority DESC, t.seq LIMIT 1 FOR UPDATE SKIP LOCKED), "
      "u AS (UPDATE tasks SET state = 'running', attempt = attempt + 1, worker_id = $1, "
      "  lease_id = $2, lease_expires_at = " TAMMA_NOW
      " + $3::bigint, log_length = 0, progress = NULL, "
      "  started_at = NULL, claimed_at = " TAMMA_NOW ", acked_at = NULL, updated_at = " TAMMA_NOW
      "  FROM pick WHERE tasks.seq = pick.seq "
      "  RETURNING tasks.id, tasks.attempt, tasks.spec, tasks.type, tasks.worker_id, tasks.state, "
      "  GREATEST(" TAMMA_NOW
      " - tasks.available_at, 0) AS waited), "
      "att AS (INSERT INTO attempts (task_id, attempt, worker_id, lease_id, claimed_at) "
      "  SELECT id, attempt, worker_id, $2, " TAMMA_NOW
      " FROM u ON CONFLICT (task_id, attempt) DO UPDATE SET worker_id = excluded.worker_id, "
      "  lease_id = excluded.lease_id, claimed_at = excluded.claimed_at, ended_at = NULL, "
      "  outcome = NULL), " +
      audit_cte(7, "u", true) + " SELECT id, attempt, spec, type, waited FROM u";
  std::vector<PgParam> params{worker.id,
                              lease_id,
                              ms(lease_ttl),
                              json(worker.capabilities.task_types).dump(),
                              labels_json(worker.capabilities.labels).dump(),
                              worker.capabilities.slots,
                              new_task_id != nullptr ? PgParam(*new_task_id) : PgParam(nullptr)};
  append_audit(params, actor(), wire::AuditAction::kClaim, json::object());
  std::vector<PgStatement> out;
  out.push_back({lock, {worker.id}});
  out.push_back({pick, std::move(params)});
  return out;
}

std::optional<Claim> PostgresStore::claim_from(const PgResult& s, const std::string& lease_id,
                                               std::chrono::milliseconds lease_ttl) {
  if (s.rows() == 0) return std::nullopt;
  Claim c;
  c.assignment.task_id = s.text(0, 0);
  c.assignment.attempt = s.integer(0, 1);
  c.assignment.task = json::parse(s.text(0, 2));
  c.assignment.lease_id = lease_id;
  c.assignment.lease_ttl_ms = lease_ttl.count();
  c.type = s.text(0, 3);
  c.pickup_latency_ms = s.int64(0, 4);
  return c;
}

bool PostgresStore::release(const std::string& task_id, int attempt, const std::string& lease_id) {
  PgTransaction tx(*db_);
  // The worker never saw this attempt, so it does not count: the next claim reuses its number
  // under a new lease id, which keeps any stray copy of the old answer fenced out.
  auto r = db_->exec(
      "UPDATE tasks SET state = 'queued', attempt = attempt - 1, lease_id = NULL, "
      "worker_id = NULL, lease_expires_at = NULL, updated_at = " TAMMA_NOW
      " WHERE id = $1 AND attempt = $2::integer AND lease_id = $3 AND state = 'running'",
      {task_id, attempt, lease_id});
  if (r.affected() > 0) {
    auto gone = db_->exec(
        "DELETE FROM attempts WHERE task_id = $1 AND attempt = $2::integer RETURNING worker_id",
        {task_id, attempt});
    record({wire::AuditAction::kClaimReleased, task_id, attempt,
            gone.rows() > 0 ? gone.text(0, 0) : std::string(), state_detail(TaskState::kQueued)});
  }
  tx.commit();
  return r.affected() > 0;
}

std::vector<Requeued> PostgresStore::requeue_unacknowledged(std::chrono::milliseconds ack_timeout) {
  PgTransaction tx(*db_);
  auto s = db_->exec(
      "UPDATE tasks SET state = 'queued', attempt = attempt - 1, lease_id = NULL, "
      "worker_id = NULL, lease_expires_at = NULL, claimed_at = NULL, updated_at = " TAMMA_NOW
      " WHERE state = 'running' AND acked_at IS NULL AND claimed_at <= " TAMMA_NOW
      " - $1::bigint RETURNING id, attempt + 1, state",
      {ms(ack_timeout)});
  auto requeued = requeued_rows(s);
  for (const auto& r : requeued) {
    auto gone = db_->exec(
        "DELETE FROM attempts WHERE task_id = $1 AND attempt = $2::integer RETURNING worker_id",
        {r.task_id, r.attempt});
    record({wire::AuditAction::kClaimUnacknowledged, r.task_id, r.attempt,
            gone.rows() > 0 ? gone.text(0, 0) : std::string(), state_detail(r.state)});
  }
  tx.commit();
  return requeued;
}

std::vector<Requeued> PostgresStore::expire_leases(const RetryPolicy& policy) {
  PgTransaction tx(*db_);
  // One conditional UPDATE decides every expired lease; a renewal committed meanwhile (through
  // any replica) makes the row no longer match when read committed re-checks it, and a second
  // replica running the same sweep finds nothing left.
  auto s = db_->exec(
      "UPDATE tasks SET "
      "  state = CASE WHEN state = 'cancel_requested' THEN 'cancelled' "
      "               WHEN attempt - host_failures > max_retries THEN 'dead' "
      "               ELSE 'retry_wait' END, "
      "  available_at = CASE WHEN state <> 'cancel_requested' AND "
      "    attempt - host_failures <= max_retries THEN " TAMMA_NOW
      " + LEAST($1::bigint * (1::bigint << LEAST(attempt - 1, 30)), $2::bigint) "
      "    ELSE available_at END, "
      "  finished_at = CASE WHEN state = 'cancel_requested' OR "
      "    attempt - host_failures > max_retries THEN " TAMMA_NOW
      " END, "
      "  error = json_build_object('code', 'lease_expired', 'message', "
      "    'the worker stopped renewing its lease', 'retryable', true)::text, "
      "  lease_expires_at = NULL, updated_at = " TAMMA_NOW " WHERE " TAMMA_LEASED
      " AND lease_expires_at <= " TAMMA_NOW " RETURNING id, attempt, state, worker_id",
      {ms(policy.base), ms(policy.max)});
  std::vector<std::string> workers;
  auto expired = requeued_rows(s, &workers);
  for (std::size_t i = 0; i < expired.size(); ++i) {
    const auto& r = expired[i];
    end_attempt(*db_, r.task_id, r.attempt, "lease_expired");
    record({wire::AuditAction::kLeaseExpired, r.task_id, r.attempt, workers[i],
            state_detail(r.state)});
  }
  tx.commit();
  return expired;
}

int PostgresStore::extend_leases(std::chrono::milliseconds lease_ttl) {
  PgTransaction tx(*db_);
  auto r = db_->exec("UPDATE tasks SET lease_expires_at = GREATEST(lease_expires_at, " TAMMA_NOW
                     " + $1::bigint) WHERE " TAMMA_LEASED,
                     {ms(lease_ttl)});
  db_->exec("UPDATE tasks SET claimed_at = GREATEST(claimed_at, " TAMMA_NOW
            ") WHERE state = 'running' AND acked_at IS NULL");
  const int held = static_cast<int>(r.affected());
  if (held > 0) record({wire::AuditAction::kLeaseGrace, {}, 0, {}, {{"leases", held}}});
  tx.commit();
  return held;
}

std::vector<Requeued> PostgresStore::promote_retries() {
  PgTransaction tx(*db_);
  auto s = db_->exec("UPDATE tasks SET state = 'queued', updated_at = " TAMMA_NOW
                     " WHERE state = 'retry_wait' AND available_at <= " TAMMA_NOW
                     " RETURNING id, attempt, state");
  auto promoted = requeued_rows(s);
  for (const auto& p : promoted) {
    record({wire::AuditAction::kRetryPromoted, p.task_id, p.attempt, {}, state_detail(p.state)});
  }
  tx.commit();
  return promoted;
}

std::optional<std::int64_t> PostgresStore::next_deadline_ms(std::chrono::milliseconds ack_timeout) {
  auto s = db_->exec(
      "SELECT min(t) - " TAMMA_NOW
      " FROM ("
      "  SELECT min(lease_expires_at) AS t FROM tasks WHERE " TAMMA_LEASED
      "  UNION ALL SELECT min(available_at) FROM tasks WHERE state = 'retry_wait'"
      "  UNION ALL SELECT min(claimed_at) + $1::bigint FROM tasks WHERE state = 'running' AND "
      "    acked_at IS NULL) d",
      {ms(ack_timeout)});
  if (s.rows() == 0 || s.is_null(0, 0)) return std::nullopt;
  return s.int64(0, 0);
}

FenceOutcome PostgresStore::started(const std::string& task_id, const std::string& worker_id,
                                    const wire::Fence& fence) {
  static const std::string sql =
      "WITH u AS (UPDATE tasks SET started_at = COALESCE(started_at, " TAMMA_NOW "), " TAMMA_ACK
      ", updated_at = " TAMMA_NOW " WHERE " TAMMA_FENCE
      " RETURNING id, attempt, worker_id, state), " +
      audit_cte(4, "u", true) + " SELECT state, attempt FROM u";
  std::vector<PgParam> params{task_id, fence.attempt, fence.lease_id, worker_id};
  append_audit(params, actor(), wire::AuditAction::kStarted, json::object());
  auto s = db_->write(sql, params);
  if (s.rows() == 0) return diagnose(*db_, task_id, worker_id, fence.attempt);
  return fenced(s);
}

FenceOutcome PostgresStore::progress(const std::string& task_id, const std::string& worker_id,
                                     const wire::ProgressRequest& request) {
  auto s = db_->write(
      "UPDATE tasks SET progress = $5, " TAMMA_ACK ", updated_at = " TAMMA_NOW " WHERE " TAMMA_FENCE
      " RETURNING state, attempt",
      {task_id, request.fence.attempt, request.fence.lease_id, worker_id,
       wire::to_json(wire::Progress{request.percent, request.step, request.message}).dump()});
  if (s.rows() == 0) return diagnose(*db_, task_id, worker_id, request.fence.attempt);
  return fenced(s);
}

LogAppendOutcome PostgresStore::append_log(const std::string& task_id, const std::string& worker_id,
                                           const wire::Fence& fence, std::uint64_t offset,
                                           std::string_view data, std::uint64_t max_bytes) {
  using Kind = LogAppendOutcome::Kind;
  LogAppendOutcome out;
  PgTransaction tx(*db_);
  // The row stays locked to the end: a resend of the same piece through another replica waits
  // and then sees the length this one wrote.
  auto s =
      db_->exec("SELECT log_length, state, attempt FROM tasks WHERE " TAMMA_FENCE " FOR UPDATE",
                {task_id, fence.attempt, fence.lease_id, worker_id});
  if (s.rows() == 0) {
    out.fence = diagnose(*db_, task_id, worker_id, fence.attempt);
    return out;
  }
  auto length = static_cast<std::uint64_t>(s.int64(0, 0));
  out.fence = {FenceStatus::kOk, state_of(s.text(0, 1)), s.integer(0, 2)};
  out.length = length;
  if (offset > length) {
    out.kind = Kind::kGap;
    return out;
  }
  std::uint64_t overlap = std::min<std::uint64_t>(length - offset, data.size());
  if (overlap > 0 && read_log_range(*db_, task_id, fence.attempt, offset, offset + overlap) !=
                         data.substr(0, overlap)) {
    out.kind = Kind::kMismatch;
    return out;
  }
  std::string_view fresh = data.substr(overlap);
  if (fresh.empty()) {
    out.kind = Kind::kDuplicate;
    return out;
  }
  if (length + fresh.size() > max_bytes) {
    out.kind = Kind::kTooLarge;
    return out;
  }
  db_->exec("UPDATE tasks SET log_length = $5::bigint, " TAMMA_ACK ", updated_at = " TAMMA_NOW
            " WHERE " TAMMA_FENCE,
            {task_id, fence.attempt, fence.lease_id, worker_id, i64(length + fresh.size())});
  for (std::uint64_t done = 0; done < fresh.size(); done += kLogChunk) {
    db_->exec(
        "INSERT INTO log_chunks (task_id, attempt, pos, data) VALUES ($1, $2::integer, "
        "$3::bigint, $4::bytea)",
        {task_id, fence.attempt, i64(length + done),
         PgParam::bytes(fresh.substr(done, kLogChunk))});
  }
  tx.commit();
  out.kind = Kind::kAppended;
  out.length = length + fresh.size();
  return out;
}

FenceOutcome PostgresStore::complete(const std::string& task_id, const std::string& worker_id,
                                     const wire::CompleteRequest& request, const NextClaim* next) {
  std::string status = request.result.value("status", "");
  std::string state = status == "succeeded"   ? "succeeded"
                      : status == "cancelled" ? "cancelled"
                                              : "failed";
  std::optional<std::string> error;
  if (request.result.contains("error") && request.result["error"].is_object()) {
    error = request.result["error"].dump();
  }
  // The task, its attempt's end and the audit record: one statement, one round trip.
  static const std::string sql =
      "WITH u AS (UPDATE tasks SET state = $5, result = $6, error = $7, lease_expires_at = NULL, "
      "  log_missing_bytes = $8::bigint, started_at = COALESCE(started_at, claimed_at), "
      "  progress = COALESCE($9, progress), finished_at = " TAMMA_NOW ", updated_at = " TAMMA_NOW
      "  WHERE " TAMMA_FENCE
      " RETURNING id, attempt, worker_id, state), "
      "a AS (UPDATE attempts SET ended_at = " TAMMA_NOW
      ", outcome = u.state FROM u "
      "  WHERE attempts.task_id = u.id AND attempts.attempt = u.attempt), " +
      audit_cte(9, "u", false) + " SELECT state, attempt FROM u";
  std::vector<PgParam> params{task_id,
                              request.fence.attempt,
                              request.fence.lease_id,
                              worker_id,
                              state,
                              request.result.dump(),
                              error,
                              i64(request.log.missing_bytes),
                              progress_text(request.progress)};
  append_audit(
      params, actor(), wire::AuditAction::kComplete,
      complete_entry(task_id, request.fence.attempt, worker_id, state_of(state), status).detail);
  auto s = db_->write(sql, params);
  if (s.rows() == 0) return diagnose(*db_, task_id, worker_id, request.fence.attempt);
  return with_next_claim(fenced(s), next);
}

// The report is committed on its own; the claim follows as its own pipeline (one more round
// trip, not one more request from the worker).
FenceOutcome PostgresStore::with_next_claim(FenceOutcome out, const NextClaim* next) {
  if (next) out.next = claim(next->worker, next->lease_id, next->lease_ttl);
  return out;
}

FenceOutcome PostgresStore::fail(const std::string& task_id, const std::string& worker_id,
                                 const wire::FailRequest& request, const RetryPolicy& policy,
                                 const NextClaim* next) {
  // A host failure ($10) is excused from maxRetries up to kExcusedHostFailures ($11): EXCUSED
  // is the count after this one. Every expression reads the row as it was. The attempt's end
  // ($14) and the audit record come in the same statement.
#define EXCUSED \
  "(host_failures + CASE WHEN $10::boolean AND host_failures < $11::integer THEN 1 ELSE 0 END)"
  static const std::string sql =
      "WITH u AS (UPDATE tasks SET "
      "  state = CASE WHEN state = 'cancel_requested' THEN 'cancelled' "
      "               WHEN NOT $5::boolean THEN 'failed' "
      "               WHEN attempt - " EXCUSED
      " > max_retries THEN 'dead' ELSE 'retry_wait' END, "
      "  available_at = CASE WHEN state <> 'cancel_requested' AND $5::boolean AND "
      "    attempt - " EXCUSED " <= max_retries THEN " TAMMA_NOW
      " + LEAST($8::bigint * (1::bigint << LEAST(attempt - 1, 30)), $9::bigint) "
      "    ELSE available_at END, "
      "  finished_at = CASE WHEN state = 'cancel_requested' OR NOT $5::boolean OR "
      "    attempt - " EXCUSED " > max_retries THEN " TAMMA_NOW
      " END, "
      "  host_failures = " EXCUSED
      ", "
      "  avoid_worker = CASE WHEN $10::boolean THEN worker_id ELSE avoid_worker END, "
      "  avoid_until = CASE WHEN $10::boolean THEN " TAMMA_NOW
      " + $13::bigint ELSE avoid_until END, "
      "  log_missing_bytes = $12::bigint, started_at = COALESCE(started_at, claimed_at), "
      "  progress = COALESCE($15, progress), "
      "  error = $6, result = $7, lease_expires_at = NULL, updated_at = " TAMMA_NOW
      " WHERE " TAMMA_FENCE
      " RETURNING id, attempt, worker_id, state), "
      "a AS (UPDATE attempts SET ended_at = " TAMMA_NOW
      ", outcome = $14 FROM u "
      "  WHERE attempts.task_id = u.id AND attempts.attempt = u.attempt), " +
      audit_cte(15, "u", true) + " SELECT state, attempt FROM u";
#undef EXCUSED
  std::vector<PgParam> params{
      task_id,
      request.fence.attempt,
      request.fence.lease_id,
      worker_id,
      request.error.retryable,
      wire::to_json(request.error).dump(),
      request.result ? std::optional<std::string>(request.result->dump()) : std::nullopt,
      ms(policy.base),
      ms(policy.max),
      request.error.retryable && request.error.code == "host_failure",
      kExcusedHostFailures,
      i64(request.log.missing_bytes),
      ms(policy.avoid_failed_host),
      "failed: " + request.error.code,
      progress_text(request.progress)};
  append_audit(params, actor(), wire::AuditAction::kFail,
               fail_detail(TaskState::kFailed, request.error));
  auto s = db_->write(sql, params);
  if (s.rows() == 0) return diagnose(*db_, task_id, worker_id, request.fence.attempt);
  return with_next_claim(fenced(s), next);
}

FenceOutcome PostgresStore::add_artifact(const std::string& task_id, const std::string& worker_id,
                                         const wire::Fence& fence, const wire::ArtifactInfo& info,
                                         const std::string& stored_path) {
  PgTransaction tx(*db_);
  auto s = db_->exec("UPDATE tasks SET " TAMMA_ACK ", updated_at = " TAMMA_NOW " WHERE " TAMMA_FENCE
                     " RETURNING state, attempt",
                     {task_id, fence.attempt, fence.lease_id, worker_id});
  if (s.rows() == 0) return diagnose(*db_, task_id, worker_id, fence.attempt);
  auto out = fenced(s);
  db_->exec(
      "INSERT INTO artifacts (task_id, attempt, name, size, sha256, path, created_at) "
      "VALUES ($1, $2::integer, $3, $4::bigint, $5, $6, " TAMMA_NOW
      ") ON CONFLICT (task_id, attempt, name) DO UPDATE SET size = excluded.size, "
      "sha256 = excluded.sha256, path = excluded.path, created_at = excluded.created_at",
      {task_id, fence.attempt, info.name, i64(info.size), info.sha256, stored_path});
  // The name, size and digest the worker can check; never the path it is stored under.
  record(artifact_entry(task_id, out.attempt, worker_id, info));
  tx.commit();
  return out;
}

std::optional<wire::TaskView> PostgresStore::cancel(const std::string& task_id) {
  PgTransaction tx(*db_);
  auto changed = db_->exec(
      "UPDATE tasks SET "
      "  state = CASE WHEN state = 'running' THEN 'cancel_requested' ELSE 'cancelled' END, "
      "  finished_at = CASE WHEN state = 'running' THEN finished_at ELSE " TAMMA_NOW
      " END, "
      "  updated_at = " TAMMA_NOW " WHERE id = $1 AND state IN ('queued', 'retry_wait', 'running')",
      {task_id});
  auto view = task(task_id);
  // A cancel of a task already cancelled or ended changed nothing: no record.
  if (changed.affected() > 0 && view) record(cancel_entry(*view));
  tx.commit();
  return view;
}

std::optional<wire::TaskView> PostgresStore::task(const std::string& task_id) {
  auto s = db_->exec("SELECT " TAMMA_TASK_COLUMNS " FROM tasks WHERE id = $1", {task_id});
  if (s.rows() == 0) return std::nullopt;
  auto view = task_view(Row{s, 0});
  auto a = db_->exec(
      "SELECT name, attempt, size, sha256 FROM artifacts WHERE task_id = $1 "
      "ORDER BY attempt, name",
      {task_id});
  for (int i = 0; i < a.rows(); ++i) {
    view.artifacts.push_back(
        {a.text(i, 0), a.integer(i, 1), static_cast<std::uint64_t>(a.int64(i, 2)), a.text(i, 3)});
  }
  return view;
}

std::vector<wire::TaskView> PostgresStore::list_tasks(std::optional<wire::TaskState> state,
                                                      int limit) {
  std::vector<wire::TaskView> out;
  auto s = db_->exec(
      "SELECT " TAMMA_TASK_COLUMNS
      " FROM tasks WHERE $1::text IS NULL OR state = $1 "
      "ORDER BY seq DESC LIMIT $2::integer",
      {state ? std::optional<std::string>(wire::to_string(*state)) : std::nullopt, limit});
  for (int i = 0; i < s.rows(); ++i) out.push_back(task_view(Row{s, i}));
  return out;
}

std::optional<LogRead> PostgresStore::read_log(const std::string& task_id,
                                               std::optional<int> attempt, std::uint64_t offset,
                                               std::uint64_t max) {
  LogRead out;
  auto s =
      db_->exec("SELECT attempt, log_length, " TAMMA_LEASED " FROM tasks WHERE id = $1", {task_id});
  if (s.rows() == 0) return std::nullopt;
  const int current = s.integer(0, 0);
  out.attempt = attempt.value_or(current);
  if (out.attempt == current) {
    out.length = static_cast<std::uint64_t>(s.int64(0, 1));
    out.open = s.boolean(0, 2);
  }
  if (!out.open) {
    auto n = db_->exec(
        "SELECT COALESCE(max(pos + octet_length(data)), 0) FROM log_chunks "
        "WHERE task_id = $1 AND attempt = $2::integer",
        {task_id, out.attempt});
    out.length = static_cast<std::uint64_t>(n.int64(0, 0));
  }
  if (offset < out.length) {
    out.data =
        read_log_range(*db_, task_id, out.attempt, offset, std::min(out.length, offset + max));
  }
  return out;
}

std::optional<std::string> PostgresStore::artifact_path(const std::string& task_id, int attempt,
                                                        const std::string& name) {
  auto s = db_->exec(
      "SELECT path FROM artifacts WHERE task_id = $1 AND attempt = $2::integer AND name = $3",
      {task_id, attempt, name});
  if (s.rows() == 0) return std::nullopt;
  return s.text(0, 0);
}

TaskCounts PostgresStore::count_tasks() {
  TaskCounts counts;
  auto s = db_->exec("SELECT state, count(*) FROM tasks GROUP BY state");
  for (int i = 0; i < s.rows(); ++i) counts.by_state[s.text(i, 0)] = s.int64(i, 1);
  return counts;
}

std::vector<std::string> PostgresStore::queued_task_ids(int limit) {
  std::vector<std::string> ids;
  auto s = db_->exec(
      "SELECT id FROM tasks WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT $1::integer",
      {limit});
  for (int i = 0; i < s.rows(); ++i) ids.push_back(s.text(i, 0));
  return ids;
}

std::optional<Store::Queued> PostgresStore::queued_task(const std::string& task_id) {
  auto s = db_->exec("SELECT type, labels::text FROM tasks WHERE id = $1 AND state = 'queued'",
                     {task_id});
  if (s.rows() == 0) return std::nullopt;
  return Queued{s.text(0, 0), labels_of(s.text(0, 1))};
}

void PostgresStore::listen_for_queue(QueueListener listener) {
  signal_ = std::make_unique<PgQueueSignal>(conninfo_, std::move(listener));
}

void PostgresStore::announce_queued(const std::string& task_id, const Queued* queued) {
  if (signal_) signal_->announce(task_id, queued);
}

std::optional<Store::SignalCounts> PostgresStore::signal_counts() const {
  if (!signal_) return SignalCounts{};
  return SignalCounts{signal_->sent(), signal_->received(), signal_->skipped()};
}

void PostgresStore::record(const AuditEntry& entry) {
  const Actor& who = actor();
  db_->exec(
      "INSERT INTO audit (at, actor_kind, actor_id, address, action, task_id, attempt, "
      "worker_id, detail) VALUES (" TAMMA_NOW ", $1, $2, $3, $4, $5, $6::integer, $7, $8)",
      {std::string(wire::to_string(who.kind)), audit_text(who.id), audit_text(who.address),
       std::string(wire::to_string(entry.action)), audit_text(entry.task_id),
       entry.attempt > 0 ? std::optional<std::string>(std::to_string(entry.attempt)) : std::nullopt,
       audit_text(entry.worker_id), entry.detail.dump()});
}

std::vector<wire::AuditRecord> PostgresStore::audit(const AuditQuery& query) {
  std::vector<wire::AuditRecord> out;
  auto s = db_->exec(
      "SELECT " TAMMA_AUDIT_COLUMNS
      " FROM audit WHERE ($1::text IS NULL OR task_id = $1) AND "
      "($2::bigint IS NULL OR at >= $2::bigint) AND seq > $3::bigint ORDER BY seq "
      "LIMIT $4::integer",
      {query.task_id,
       query.since_ms ? std::optional<std::string>(std::to_string(*query.since_ms)) : std::nullopt,
       query.after_seq, query.limit});
  for (int i = 0; i < s.rows(); ++i) out.push_back(audit_record(Row{s, i}));
  return out;
}

}  // namespace tamma::orchestrator
