#include "orchestrator/store/sqlite_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/error.h"
#include "orchestrator/auth.h"
#include "orchestrator/store/audit_row.h"
#include "orchestrator/store/task_row.h"

namespace tamma::orchestrator {
namespace {

using nlohmann::json;
using wire::TaskState;

// Milliseconds since the epoch from the database clock: lease deadlines never depend on the
// clock of whichever process wrote them. julianday('now') is fixed for one statement, so every
// use inside a statement agrees.
#define TAMMA_NOW "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"

// A task a worker may still write to.
#define TAMMA_LEASED "state IN ('running','cancel_requested')"

// Every fenced write carries this: ?1 task, ?2 attempt, ?3 lease id, ?4 worker.
// A fenced write or a heartbeat naming the lease: the worker has its assignment.
#define TAMMA_ACK "acked_at = COALESCE(acked_at, " TAMMA_NOW ")"

#define TAMMA_FENCE \
  "id = ?1 AND attempt = ?2 AND lease_id = ?3 AND worker_id = ?4 AND " TAMMA_LEASED

constexpr int kSchemaVersion = 5;

// Each step takes the schema from version N-1 to N, in order, in the same transaction that
// writes the new user_version. Version 1 is kSchema below.
struct Migration {
  int version;
  const char* sql;
};
const Migration kMigrations[] = {
    // A claim is acknowledged by the worker's first fenced write or heartbeat of the lease;
    // one not acknowledged within the ack timeout never reached its worker (a poll whose
    // client hung up as the answer went out) and is re-queued under the same attempt.
    // Leases already held when this runs were handed out before acknowledgements existed.
    {2,
     "ALTER TABLE tasks ADD COLUMN claimed_at INTEGER;"
     "ALTER TABLE tasks ADD COLUMN acked_at INTEGER;"
     "UPDATE tasks SET acked_at = updated_at WHERE state IN ('running','cancel_requested');"
     "CREATE INDEX tasks_unacked ON tasks (claimed_at) WHERE state = 'running' AND "
     "acked_at IS NULL;"},
    // Faults (docs/protocol.md): a failure of the worker's host is retried on another worker
    // without using up the task's retries (host_failures of them are excused, up to a cap),
    // and the worker it failed on is passed over for a while (avoid_worker). A worker says
    // when its host is unfit (workers.unhealthy). Output a worker could not deliver is counted
    // on the task (log_missing_bytes).
    {3,
     "ALTER TABLE tasks ADD COLUMN host_failures INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE tasks ADD COLUMN avoid_worker TEXT;"
     "ALTER TABLE tasks ADD COLUMN avoid_until INTEGER;"
     "ALTER TABLE tasks ADD COLUMN log_missing_bytes INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE workers ADD COLUMN unhealthy TEXT;"},
    // The audit trail (docs/adr/0026-audit-trail.md): one row per operation that changed state,
    // written in that operation's transaction. Append-only: the triggers refuse any change or
    // removal, so a record, once committed, says what happened for good.
    {4,
     "CREATE TABLE audit ("
     "  seq        INTEGER PRIMARY KEY AUTOINCREMENT,"
     "  at         INTEGER NOT NULL,"
     "  actor_kind TEXT NOT NULL,"
     "  actor_id   TEXT,"
     "  address    TEXT,"
     "  action     TEXT NOT NULL,"
     "  task_id    TEXT,"
     "  attempt    INTEGER,"
     "  worker_id  TEXT,"
     "  detail     TEXT NOT NULL);"
     "CREATE INDEX audit_task ON audit (task_id, seq) WHERE task_id IS NOT NULL;"
     "CREATE INDEX audit_at ON audit (at);"
     "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
     "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"
     "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
     "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;"},
    // Retention (prune_finished): finished tasks are found oldest first by when they ended,
    // and a worker is pruned only when no attempt names it.
    {5,
     "CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state IN "
     "('succeeded','failed','dead','cancelled');"
     "CREATE INDEX attempts_worker ON attempts (worker_id);"},
};

// Host failures of one task that do not count against its maxRetries; later ones do, so a task
// that breaks every host it lands on still ends.
constexpr int kExcusedHostFailures = 5;

// Logs are stored in pieces no larger than this, so reading from an offset needs to look back
// at most one piece.
constexpr std::uint64_t kLogChunk = 64 * 1024;

const char* const kSchema = R"sql(
CREATE TABLE settings (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

CREATE TABLE workers (
  id              TEXT PRIMARY KEY,
  token_hash      TEXT NOT NULL UNIQUE,
  capabilities    TEXT NOT NULL,
  draining        INTEGER NOT NULL DEFAULT 0,
  drain_requested INTEGER NOT NULL DEFAULT 0,
  registered_at   INTEGER NOT NULL,
  last_seen_at    INTEGER NOT NULL,
  gone_at         INTEGER
);

CREATE TABLE tasks (
  seq              INTEGER PRIMARY KEY AUTOINCREMENT,
  id               TEXT NOT NULL UNIQUE,
  type             TEXT NOT NULL,
  spec             TEXT NOT NULL,
  state            TEXT NOT NULL,
  priority         INTEGER NOT NULL,
  max_retries      INTEGER NOT NULL,
  labels           TEXT NOT NULL,
  idempotency_key  TEXT UNIQUE,
  request_hash     TEXT,
  attempt          INTEGER NOT NULL DEFAULT 0,
  worker_id        TEXT,
  lease_id         TEXT,
  lease_expires_at INTEGER,
  available_at     INTEGER NOT NULL,
  progress         TEXT,
  result           TEXT,
  error            TEXT,
  log_length       INTEGER NOT NULL DEFAULT 0,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  started_at       INTEGER,
  finished_at      INTEGER
);
CREATE INDEX tasks_claim ON tasks (state, priority DESC, seq);
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE state IN ('running','cancel_requested');
CREATE INDEX tasks_retry ON tasks (available_at) WHERE state = 'retry_wait';
CREATE INDEX tasks_worker ON tasks (worker_id) WHERE state IN ('running','cancel_requested');

CREATE TABLE attempts (
  task_id    TEXT NOT NULL,
  attempt    INTEGER NOT NULL,
  worker_id  TEXT NOT NULL,
  lease_id   TEXT NOT NULL,
  claimed_at INTEGER NOT NULL,
  ended_at   INTEGER,
  outcome    TEXT,
  PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;

CREATE TABLE log_chunks (
  task_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  offset  INTEGER NOT NULL,
  data    BLOB NOT NULL,
  PRIMARY KEY (task_id, attempt, offset)
) WITHOUT ROWID;

CREATE TABLE artifacts (
  task_id    TEXT NOT NULL,
  attempt    INTEGER NOT NULL,
  name       TEXT NOT NULL,
  size       INTEGER NOT NULL,
  sha256     TEXT NOT NULL,
  path       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (task_id, attempt, name)
) WITHOUT ROWID;
)sql";

// The task columns every view reads, in the order task_view() expects.
#define TAMMA_TASK_COLUMNS                                                                     \
  "id, type, state, attempt, max_retries, priority, labels, worker_id, idempotency_key, "      \
  "progress, result, error, CASE WHEN state = 'retry_wait' THEN MAX(available_at - " TAMMA_NOW \
  ", 0) END, log_length, created_at, updated_at, started_at, finished_at, spec, "              \
  "log_missing_bytes"

// Reads (id, attempt, state) rows; with `workers`, also the worker in a fourth column.
std::vector<Requeued> requeued_rows(Statement& s, std::vector<std::string>* workers = nullptr) {
  std::vector<Requeued> out;
  while (s.step()) {
    out.push_back({s.text(0), s.integer(1), state_of(s.text(2))});
    if (workers != nullptr) workers->push_back(s.opt_text(3).value_or(""));
  }
  return out;
}

std::string error_json(const wire::TaskFailure& f) { return wire::to_json(f).dump(); }

}  // namespace

SyncMode sync_mode_from_string(const std::string& text) {
  if (text == "full" || text == "FULL") return SyncMode::kFull;
  if (text == "normal" || text == "NORMAL") return SyncMode::kNormal;
  throw Error(ErrorKind::kConfig, "invalid_sqlite_synchronous",
              "SQLite synchronous mode '" + text + "' is not one of full, normal");
}

SqliteStore::SqliteStore(const std::filesystem::path& file, SyncMode sync,
                         std::filesystem::path artifact_dir, int checkpoint_pages)
    : db_(file),
      artifact_dir_(artifact_dir.empty() ? file.parent_path() / "tamma-data" / "artifacts"
                                         : std::move(artifact_dir)) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) throw_errno("stat " + file.string());
  inode_ = {st.st_ino, st.st_dev};
  // Wait for a lock instead of failing at once: an admin's sqlite3 shell or a backup may hold
  // it for a moment.
  db_.exec("PRAGMA busy_timeout = 5000");
  std::string mode = db_.pragma("journal_mode = WAL");
  if (mode != "wal") {
    throw Error(ErrorKind::kInfrastructure, "database_error",
                "database " + file.string() + " cannot use WAL (journal_mode is " + mode + ")");
  }
  db_.exec(sync == SyncMode::kFull ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
  db_.exec("PRAGMA foreign_keys = ON");
  migrate();
  if (checkpoint_pages <= 0) return;  // SQLite's automatic checkpoint, inside the commits
  try {
    checkpointer_ = std::make_unique<SqliteCheckpointer>(db_.handle(), file,
                                                         sync == SyncMode::kFull, checkpoint_pages);
  } catch (const Error& e) {
    // Not fatal: the commits checkpoint themselves, as SQLite does by default.
    spdlog::warn("{}; checkpoints run inside commits instead", e.what());
  }
}

std::optional<SqliteCheckpointer::Stats> SqliteStore::checkpoint_stats() const {
  if (!checkpointer_) return std::nullopt;
  return checkpointer_->stats();
}

std::vector<StoreMetric> SqliteStore::metrics() {
  const auto stats = checkpoint_stats();
  if (!stats) return {};
  return {
      {"sqlite_checkpoints_total", "counter", "WAL checkpoint passes completed off the core thread",
       static_cast<double>(stats->checkpoints)},
      {"sqlite_checkpoint_catch_ups_total", "counter",
       "WAL checkpoints a commit ran itself, copying what the thread's passes left behind",
       static_cast<double>(stats->catch_ups)},
      {"sqlite_checkpoint_failures_total", "counter",
       "WAL checkpoints that ended with an error (the WAL keeps every commit)",
       static_cast<double>(stats->failures)},
      {"sqlite_wal_pages", "gauge", "Pages in the write-ahead log after the last commit",
       static_cast<double>(stats->wal_pages)}};
}

void SqliteStore::migrate() {
  Transaction tx(db_);
  int version = std::stoi(db_.pragma("user_version"));
  schema_.found = version;
  if (version > kSchemaVersion) {
    throw Error(ErrorKind::kConfig, "database_too_new",
                fmt::format("database {} has schema version {}, newer than this orchestrator's {}",
                            db_.file().string(), version, kSchemaVersion));
  }
  if (version == 0) {
    db_.exec(kSchema);
    version = 1;
  }
  for (const auto& m : kMigrations) {
    if (m.version <= version) continue;
    db_.exec(m.sql);
    version = m.version;
  }
  db_.exec(fmt::format("PRAGMA user_version = {}", kSchemaVersion));
  tx.commit();
  schema_.now = kSchemaVersion;
  if (schema_.found != schema_.now) {
    spdlog::info("database {}: schema version {} -> {}", db_.file().string(), schema_.found,
                 schema_.now);
  }
}

std::optional<std::string> SqliteStore::setting(const std::string& key) {
  auto s = db_.prepare("SELECT value FROM settings WHERE key = ?1");
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

void SqliteStore::put_setting(const std::string& key, const std::string& value) {
  Transaction tx(db_);
  db_.prepare(
         "INSERT INTO settings (key, value) VALUES (?1, ?2) "
         "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
      .bind(1, key)
      .bind(2, value)
      .run();
  tx.commit();
}

void SqliteStore::probe() {
  // A file moved or deleted under the open connection still takes writes, but everything
  // written from then on is lost at the next restart.
  struct stat now {};
  if (::stat(db_.file().c_str(), &now) != 0 || now.st_ino != inode_.first ||
      now.st_dev != inode_.second) {
    const std::string message = "the database file was moved or deleted while open";
    db_.watch().set_misplaced(message);
    throw Error(ErrorKind::kInfrastructure, "database_moved", message, /*retryable=*/false);
  }
  db_.watch().set_misplaced(std::nullopt);
  Transaction tx(db_);
  db_.prepare("INSERT INTO settings (key, value) VALUES ('probe', " TAMMA_NOW
              ") ON CONFLICT (key) DO UPDATE SET value = excluded.value")
      .run();
  tx.commit();
}

// ---- workers ----------------------------------------------------------------------------------

void SqliteStore::register_worker(const std::string& id, const std::string& token_hash,
                                  const wire::Capabilities& capabilities) {
  Transaction tx(db_);
  db_.prepare(
         "INSERT INTO workers (id, token_hash, capabilities, registered_at, last_seen_at) "
         "VALUES (?1, ?2, ?3, " TAMMA_NOW ", " TAMMA_NOW ")")
      .bind(1, id)
      .bind(2, token_hash)
      .bind(3, wire::to_json(capabilities).dump())
      .run();
  record(register_entry(id, capabilities));
  tx.commit();
}

std::optional<std::string> SqliteStore::worker_by_token_hash(const std::string& token_hash) {
  auto s = db_.prepare("SELECT id FROM workers WHERE token_hash = ?1 AND gone_at IS NULL");
  s.bind(1, token_hash);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

std::optional<WorkerInfo> SqliteStore::worker(const std::string& id) {
  auto s = db_.prepare(
      "SELECT capabilities, draining, drain_requested, gone_at IS NOT NULL, "
      "  (SELECT COUNT(*) FROM tasks WHERE worker_id = ?1 AND " TAMMA_LEASED
      ") "
      "FROM workers WHERE id = ?1");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  WorkerInfo w;
  w.id = id;
  w.capabilities = wire::capabilities_from_json(json::parse(s.text(0)));
  w.draining = s.int64(1) != 0;
  w.drain_requested = s.int64(2) != 0;
  w.gone = s.int64(3) != 0;
  w.leased = s.integer(4);
  return w;
}

std::vector<Requeued> SqliteStore::unregister_worker(const std::string& id) {
  Transaction tx(db_);
  // The worker first, so its record comes before those of the leases it loses.
  const bool was_registered =
      db_.prepare("UPDATE workers SET gone_at = " TAMMA_NOW " WHERE id = ?1 AND gone_at IS NULL")
          .bind(1, id)
          .run() > 0;
  if (was_registered) record({wire::AuditAction::kUnregister, {}, 0, id});
  auto s = db_.prepare(
      "UPDATE tasks SET "
      "  state = CASE WHEN state = 'cancel_requested' THEN 'cancelled' "
      "               WHEN attempt - host_failures > max_retries THEN 'dead' ELSE 'queued' END, "
      "  finished_at = CASE WHEN state = 'cancel_requested' OR attempt - host_failures > "
      "max_retries "
      "                     THEN " TAMMA_NOW
      " END, "
      "  available_at = " TAMMA_NOW ", lease_expires_at = NULL, updated_at = " TAMMA_NOW
      ", "
      "  error = json_object('code', 'worker_unregistered', 'message', "
      "                      'the worker unregistered while running it', 'retryable', "
      "json('true')) "
      "WHERE worker_id = ?1 AND " TAMMA_LEASED " RETURNING id, attempt, state");
  s.bind(1, id);
  auto requeued = requeued_rows(s);
  for (const auto& r : requeued) {
    end_attempt(r.task_id, r.attempt, "worker_unregistered");
    record({wire::AuditAction::kLeaseRevoked, r.task_id, r.attempt, id, state_detail(r.state)});
  }
  tx.commit();
  return requeued;
}

HeartbeatOutcome SqliteStore::heartbeat(const std::string& worker_id,
                                        const wire::HeartbeatRequest& request,
                                        std::chrono::milliseconds lease_ttl) {
  HeartbeatOutcome out;
  Transaction tx(db_);
  int seen = db_.prepare("UPDATE workers SET last_seen_at = " TAMMA_NOW
                         ", draining = ?2, unhealthy = ?3 "
                         "WHERE id = ?1 AND gone_at IS NULL")
                 .bind(1, worker_id)
                 .bind(2, request.draining ? 1 : 0)
                 .bind(3, request.unhealthy)
                 .run();
  if (seen == 0) return out;
  out.known = true;
  for (const auto& lease : request.leases) {
    auto s = db_.prepare("UPDATE tasks SET lease_expires_at = " TAMMA_NOW " + ?5, " TAMMA_ACK
                         " WHERE " TAMMA_FENCE " RETURNING state");
    s.bind(1, lease.task_id)
        .bind(2, lease.attempt)
        .bind(3, lease.lease_id)
        .bind(4, worker_id)
        .bind(5, static_cast<std::int64_t>(lease_ttl.count()));
    if (!s.step()) {
      out.response.lost_leases.push_back({lease.task_id, lease.attempt});
    } else if (s.text(0) == "cancel_requested") {
      out.response.cancel.push_back({lease.task_id, lease.attempt});
    }
  }
  auto drain = db_.prepare("SELECT drain_requested FROM workers WHERE id = ?1");
  drain.bind(1, worker_id);
  out.response.drain = drain.step() && drain.int64(0) != 0;
  out.response.lease_ttl_ms = lease_ttl.count();
  tx.commit();
  return out;
}

bool SqliteStore::request_drain(const std::string& worker_id) {
  Transaction tx(db_);
  int n = db_.prepare("UPDATE workers SET drain_requested = 1 WHERE id = ?1 AND gone_at IS NULL")
              .bind(1, worker_id)
              .run();
  if (n > 0) record({wire::AuditAction::kDrain, {}, 0, worker_id});
  tx.commit();
  return n > 0;
}

std::vector<wire::WorkerView> SqliteStore::list_workers(std::chrono::milliseconds offline_after,
                                                        bool include_gone) {
  std::vector<wire::WorkerView> out;
  {
    auto s = db_.prepare(
        "SELECT id, capabilities, draining OR drain_requested, gone_at IS NOT NULL, "
        "registered_at, last_seen_at, MAX(" TAMMA_NOW
        " - last_seen_at, 0), unhealthy FROM workers "
        "WHERE ?1 OR gone_at IS NULL ORDER BY registered_at, id");
    s.bind(1, include_gone ? 1 : 0);
    while (s.step()) {
      wire::WorkerView w;
      w.id = s.text(0);
      w.capabilities = wire::capabilities_from_json(json::parse(s.text(1)));
      w.registered_at = rfc3339(s.int64(4));
      w.last_seen_at = rfc3339(s.int64(5));
      w.last_seen_ago_ms = s.int64(6);
      if (s.int64(3) == 0) w.unhealthy = s.opt_text(7);
      if (s.int64(3) != 0) {
        w.state = wire::WorkerState::kGone;
      } else if (w.last_seen_ago_ms > offline_after.count()) {
        w.state = wire::WorkerState::kOffline;
      } else if (s.int64(2) != 0) {
        w.state = wire::WorkerState::kDraining;
      } else {
        w.state = wire::WorkerState::kOnline;
      }
      out.push_back(std::move(w));
    }
  }
  for (auto& w : out) {
    auto s =
        db_.prepare("SELECT id, attempt, lease_id FROM tasks WHERE worker_id = ?1 AND " TAMMA_LEASED
                    " ORDER BY seq");
    s.bind(1, w.id);
    while (s.step()) w.leases.push_back({s.text(0), s.integer(1), s.text(2)});
  }
  return out;
}

// ---- tasks ------------------------------------------------------------------------------------

SubmitOutcome SqliteStore::submit(const NewTask& task, const WorkerInfo* hand_to,
                                  const std::string& lease_id,
                                  std::chrono::milliseconds lease_ttl) {
  SubmitOutcome out;
  Transaction tx(db_);
  if (task.idempotency_key) {
    auto s = db_.prepare("SELECT id, request_hash FROM tasks WHERE idempotency_key = ?1");
    s.bind(1, *task.idempotency_key);
    if (s.step()) {
      std::string existing = s.text(0);
      out.key_reused = s.text(1) != task.request_hash;
      out.task = *this->task(existing);
      return out;
    }
  }
  db_.prepare(
         "INSERT INTO tasks (id, type, spec, state, priority, max_retries, labels, "
         "idempotency_key, request_hash, available_at, created_at, updated_at) "
         "VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, " TAMMA_NOW ", " TAMMA_NOW
         ", " TAMMA_NOW ")")
      .bind(1, task.id)
      .bind(2, task.type)
      .bind(3, task.spec.dump())
      .bind(4, task.priority)
      .bind(5, task.max_retries)
      .bind(6, labels_json(task.labels).dump())
      .bind(7, task.idempotency_key)
      .bind(8, task.request_hash)
      .run();
  out.created = true;
  out.task = *this->task(task.id);
  record(submit_entry(task.id, task.type, task.priority, task.max_retries));
  if (hand_to != nullptr) out.claim = claim_in_transaction(*hand_to, lease_id, lease_ttl);
  tx.commit();
  return out;
}

std::optional<Claim> SqliteStore::claim(const WorkerInfo& worker, const std::string& lease_id,
                                        std::chrono::milliseconds lease_ttl) {
  Transaction tx(db_);
  auto claim = claim_in_transaction(worker, lease_id, lease_ttl);
  if (claim) tx.commit();
  return claim;
}

std::optional<Claim> SqliteStore::claim_in_transaction(const WorkerInfo& worker,
                                                       const std::string& lease_id,
                                                       std::chrono::milliseconds lease_ttl) {
  // A worker that is draining or gone gets nothing, whatever the caller saw before this
  // transaction began.
  auto busy =
      db_.prepare("SELECT (SELECT COUNT(*) FROM tasks WHERE worker_id = ?1 AND " TAMMA_LEASED
                  ") FROM workers WHERE id = ?1 AND gone_at IS NULL AND NOT draining "
                  "AND NOT drain_requested");
  busy.bind(1, worker.id);
  if (!busy.step() || busy.int64(0) >= worker.capabilities.slots) return std::nullopt;

  json types = worker.capabilities.task_types;
  // Picks and takes the task in one statement: the best queued task whose type the worker
  // handles and whose every required label the worker offers with the same value.
  auto s = db_.prepare(
      "UPDATE tasks SET state = 'running', attempt = attempt + 1, worker_id = ?1, lease_id = ?2, "
      "  lease_expires_at = " TAMMA_NOW
      " + ?3, log_length = 0, progress = NULL, "
      "  started_at = NULL, claimed_at = " TAMMA_NOW ", acked_at = NULL, updated_at = " TAMMA_NOW
      " "
      "WHERE seq = (SELECT t.seq FROM tasks t WHERE t.state = 'queued' "
      "  AND (t.avoid_worker IS NULL OR t.avoid_worker <> ?1 OR t.avoid_until <= " TAMMA_NOW
      ") "
      "  AND t.type IN (SELECT value FROM json_each(?4)) "
      "  AND NOT EXISTS (SELECT 1 FROM json_each(t.labels) r WHERE NOT EXISTS ("
      "    SELECT 1 FROM json_each(?5) w WHERE w.key = r.key AND w.value = r.value)) "
      "  ORDER BY t.priority DESC, t.seq LIMIT 1) "
      "RETURNING id, attempt, spec, type, MAX(" TAMMA_NOW " - available_at, 0)");
  s.bind(1, worker.id)
      .bind(2, lease_id)
      .bind(3, static_cast<std::int64_t>(lease_ttl.count()))
      .bind(4, types.dump())
      .bind(5, labels_json(worker.capabilities.labels).dump());
  if (!s.step()) return std::nullopt;
  Claim c;
  c.assignment.task_id = s.text(0);
  c.assignment.attempt = s.integer(1);
  c.assignment.task = json::parse(s.text(2));
  c.assignment.lease_id = lease_id;
  c.assignment.lease_ttl_ms = lease_ttl.count();
  c.type = s.text(3);
  c.pickup_latency_ms = s.int64(4);
  while (s.step()) {
  }
  db_.prepare(
         "INSERT OR REPLACE INTO attempts (task_id, attempt, worker_id, lease_id, claimed_at) "
         "VALUES (?1, ?2, ?3, ?4, " TAMMA_NOW ")")
      .bind(1, c.assignment.task_id)
      .bind(2, c.assignment.attempt)
      .bind(3, worker.id)
      .bind(4, lease_id)
      .run();
  record({wire::AuditAction::kClaim, c.assignment.task_id, c.assignment.attempt, worker.id,
          state_detail(TaskState::kRunning)});
  return c;
}

bool SqliteStore::release(const std::string& task_id, int attempt, const std::string& lease_id) {
  Transaction tx(db_);
  // The worker never saw this attempt, so it does not count: the next claim reuses its number
  // under a new lease id, which keeps any stray copy of the old answer fenced out.
  int n = db_.prepare(
                 "UPDATE tasks SET state = 'queued', attempt = attempt - 1, lease_id = NULL, "
                 "worker_id = NULL, lease_expires_at = NULL, updated_at = " TAMMA_NOW
                 " WHERE id = ?1 AND attempt = ?2 AND lease_id = ?3 AND state = 'running'")
              .bind(1, task_id)
              .bind(2, attempt)
              .bind(3, lease_id)
              .run();
  if (n > 0) {
    auto gone =
        db_.prepare("DELETE FROM attempts WHERE task_id = ?1 AND attempt = ?2 RETURNING worker_id");
    gone.bind(1, task_id).bind(2, attempt);
    std::string worker = gone.step() ? gone.text(0) : std::string();
    while (gone.step()) {
    }
    record({wire::AuditAction::kClaimReleased, task_id, attempt, worker,
            state_detail(TaskState::kQueued)});
  }
  tx.commit();
  return n > 0;
}

std::vector<Requeued> SqliteStore::requeue_unacknowledged(std::chrono::milliseconds ack_timeout) {
  Transaction tx(db_);
  // As release(): the worker never showed it had the task, so the attempt does not count.
  auto s = db_.prepare(
      "UPDATE tasks SET state = 'queued', attempt = attempt - 1, lease_id = NULL, "
      "worker_id = NULL, lease_expires_at = NULL, claimed_at = NULL, updated_at = " TAMMA_NOW
      " WHERE state = 'running' AND acked_at IS NULL AND claimed_at <= " TAMMA_NOW
      " - ?1 RETURNING id, attempt + 1, state");
  s.bind(1, static_cast<std::int64_t>(ack_timeout.count()));
  auto requeued = requeued_rows(s);
  for (const auto& r : requeued) {
    auto gone =
        db_.prepare("DELETE FROM attempts WHERE task_id = ?1 AND attempt = ?2 RETURNING worker_id");
    gone.bind(1, r.task_id).bind(2, r.attempt);
    std::string worker = gone.step() ? gone.text(0) : std::string();
    while (gone.step()) {
    }
    record({wire::AuditAction::kClaimUnacknowledged, r.task_id, r.attempt, worker,
            state_detail(r.state)});
  }
  tx.commit();
  return requeued;
}

std::vector<Requeued> SqliteStore::expire_leases(const RetryPolicy& policy) {
  Transaction tx(db_);
  // One conditional UPDATE decides every expired lease: a heartbeat that renews a lease in the
  // meantime simply makes the row no longer match.
  auto s = db_.prepare(
      "UPDATE tasks SET "
      "  state = CASE WHEN state = 'cancel_requested' THEN 'cancelled' "
      "               WHEN attempt - host_failures > max_retries THEN 'dead' "
      "               ELSE 'retry_wait' END, "
      "  available_at = CASE WHEN state <> 'cancel_requested' AND "
      "    attempt - host_failures <= max_retries "
      "    THEN " TAMMA_NOW
      " + MIN(?1 * (1 << MIN(attempt - 1, 30)), ?2) ELSE available_at END, "
      "  finished_at = CASE WHEN state = 'cancel_requested' OR attempt - host_failures > "
      "max_retries "
      "                     THEN " TAMMA_NOW
      " END, "
      "  error = json_object('code', 'lease_expired', 'message', "
      "    'the worker stopped renewing its lease', 'retryable', json('true')), "
      "  lease_expires_at = NULL, updated_at = " TAMMA_NOW
      " "
      "WHERE " TAMMA_LEASED " AND lease_expires_at <= " TAMMA_NOW
      " RETURNING id, attempt, state, worker_id");
  s.bind(1, static_cast<std::int64_t>(policy.base.count()))
      .bind(2, static_cast<std::int64_t>(policy.max.count()));
  std::vector<std::string> workers;
  auto expired = requeued_rows(s, &workers);
  for (std::size_t i = 0; i < expired.size(); ++i) {
    const auto& r = expired[i];
    end_attempt(r.task_id, r.attempt, "lease_expired");
    record({wire::AuditAction::kLeaseExpired, r.task_id, r.attempt, workers[i],
            state_detail(r.state)});
  }
  tx.commit();
  return expired;
}

int SqliteStore::extend_leases(std::chrono::milliseconds lease_ttl) {
  Transaction tx(db_);
  int n = db_.prepare("UPDATE tasks SET lease_expires_at = MAX(lease_expires_at, " TAMMA_NOW
                      " + ?1) WHERE " TAMMA_LEASED)
              .bind(1, static_cast<std::int64_t>(lease_ttl.count()))
              .run();
  // Nor does it count against an acknowledgement that could not reach this process.
  db_.prepare("UPDATE tasks SET claimed_at = MAX(claimed_at, " TAMMA_NOW
              ") WHERE state = 'running' AND acked_at IS NULL")
      .run();
  if (n > 0) record({wire::AuditAction::kLeaseGrace, {}, 0, {}, {{"leases", n}}});
  tx.commit();
  return n;
}

std::vector<Requeued> SqliteStore::promote_retries() {
  Transaction tx(db_);
  auto s = db_.prepare("UPDATE tasks SET state = 'queued', updated_at = " TAMMA_NOW
                       " WHERE state = 'retry_wait' AND available_at <= " TAMMA_NOW
                       " RETURNING id, attempt, state");
  auto promoted = requeued_rows(s);
  for (const auto& p : promoted) {
    record({wire::AuditAction::kRetryPromoted, p.task_id, p.attempt, {}, state_detail(p.state)});
  }
  tx.commit();
  return promoted;
}

std::optional<std::int64_t> SqliteStore::next_deadline_ms(std::chrono::milliseconds ack_timeout) {
  auto s =
      db_.prepare("SELECT MIN(t) - " TAMMA_NOW
                  " FROM ("
                  "  SELECT MIN(lease_expires_at) AS t FROM tasks WHERE " TAMMA_LEASED
                  "  UNION ALL SELECT MIN(available_at) FROM tasks WHERE state = 'retry_wait'"
                  "  UNION ALL SELECT MIN(claimed_at) + ?1 FROM tasks WHERE state = 'running' AND "
                  "    acked_at IS NULL)");
  s.bind(1, static_cast<std::int64_t>(ack_timeout.count()));
  if (!s.step() || s.is_null(0)) return std::nullopt;
  return s.int64(0);
}

void SqliteStore::end_attempt(const std::string& task_id, int attempt, std::string_view outcome) {
  db_.prepare("UPDATE attempts SET ended_at = " TAMMA_NOW
              ", outcome = ?3 WHERE task_id = ?1 AND attempt = ?2")
      .bind(1, task_id)
      .bind(2, attempt)
      .bind(3, outcome)
      .run();
}

FenceOutcome SqliteStore::diagnose(const std::string& task_id, const std::string& worker_id,
                                   int attempt) {
  FenceOutcome out;
  auto s = db_.prepare("SELECT state, attempt FROM tasks WHERE id = ?1");
  s.bind(1, task_id);
  if (!s.step()) {
    out.status = FenceStatus::kNotFound;
    return out;
  }
  out.state = state_of(s.text(0));
  out.attempt = s.integer(1);
  // A worker that once held this attempt has lost it (409, stop working); one that never did
  // is reaching for someone else's task (403).
  auto held =
      db_.prepare("SELECT 1 FROM attempts WHERE task_id = ?1 AND attempt = ?2 AND worker_id = ?3");
  held.bind(1, task_id).bind(2, attempt).bind(3, worker_id);
  out.status = held.step() ? FenceStatus::kLeaseLost : FenceStatus::kForbidden;
  return out;
}

FenceOutcome SqliteStore::started(const std::string& task_id, const std::string& worker_id,
                                  const wire::Fence& fence) {
  Transaction tx(db_);
  auto s =
      db_.prepare("UPDATE tasks SET started_at = COALESCE(started_at, " TAMMA_NOW "), " TAMMA_ACK
                  ", updated_at = " TAMMA_NOW " WHERE " TAMMA_FENCE " RETURNING state, attempt");
  s.bind(1, task_id).bind(2, fence.attempt).bind(3, fence.lease_id).bind(4, worker_id);
  if (!s.step()) return diagnose(task_id, worker_id, fence.attempt);
  FenceOutcome out{FenceStatus::kOk, state_of(s.text(0)), s.integer(1)};
  while (s.step()) {
  }
  record({wire::AuditAction::kStarted, task_id, out.attempt, worker_id, state_detail(out.state)});
  tx.commit();
  return out;
}

FenceOutcome SqliteStore::progress(const std::string& task_id, const std::string& worker_id,
                                   const wire::ProgressRequest& request) {
  Transaction tx(db_);
  auto s = db_.prepare("UPDATE tasks SET progress = ?5, " TAMMA_ACK ", updated_at = " TAMMA_NOW
                       " WHERE " TAMMA_FENCE " RETURNING state, attempt");
  s.bind(1, task_id)
      .bind(2, request.fence.attempt)
      .bind(3, request.fence.lease_id)
      .bind(4, worker_id)
      .bind(5,
            wire::to_json(wire::Progress{request.percent, request.step, request.message}).dump());
  if (!s.step()) return diagnose(task_id, worker_id, request.fence.attempt);
  FenceOutcome out{FenceStatus::kOk, state_of(s.text(0)), s.integer(1)};
  while (s.step()) {
  }
  tx.commit();
  return out;
}

void SqliteStore::insert_log_chunks(const std::string& task_id, int attempt, std::uint64_t offset,
                                    std::string_view data) {
  for (std::uint64_t done = 0; done < data.size(); done += kLogChunk) {
    db_.prepare("INSERT INTO log_chunks (task_id, attempt, offset, data) VALUES (?1, ?2, ?3, ?4)")
        .bind(1, task_id)
        .bind(2, attempt)
        .bind(3, static_cast<std::int64_t>(offset + done))
        .bind_blob(4, data.substr(done, kLogChunk))
        .run();
  }
}

std::string SqliteStore::read_log_range(const std::string& task_id, int attempt, std::uint64_t from,
                                        std::uint64_t to) {
  std::string out;
  if (from >= to) return out;
  auto s = db_.prepare(
      "SELECT offset, data FROM log_chunks WHERE task_id = ?1 AND attempt = ?2 "
      "AND offset >= ?3 AND offset < ?4 AND offset + length(data) > ?5 ORDER BY offset");
  std::int64_t look_back = static_cast<std::int64_t>(from) - static_cast<std::int64_t>(kLogChunk);
  s.bind(1, task_id)
      .bind(2, attempt)
      .bind(3, look_back)
      .bind(4, static_cast<std::int64_t>(to))
      .bind(5, static_cast<std::int64_t>(from));
  while (s.step()) {
    auto offset = static_cast<std::uint64_t>(s.int64(0));
    std::string data = s.blob(1);
    std::uint64_t begin = from > offset ? from - offset : 0;
    std::uint64_t end = std::min<std::uint64_t>(data.size(), to - offset);
    out.append(data, begin, end - begin);
  }
  return out;
}

LogAppendOutcome SqliteStore::append_log(const std::string& task_id, const std::string& worker_id,
                                         const wire::Fence& fence, std::uint64_t offset,
                                         std::string_view data, std::uint64_t max_bytes) {
  using Kind = LogAppendOutcome::Kind;
  LogAppendOutcome out;
  Transaction tx(db_);
  auto s = db_.prepare("SELECT log_length, state, attempt FROM tasks WHERE " TAMMA_FENCE);
  s.bind(1, task_id).bind(2, fence.attempt).bind(3, fence.lease_id).bind(4, worker_id);
  if (!s.step()) {
    out.fence = diagnose(task_id, worker_id, fence.attempt);
    return out;
  }
  auto length = static_cast<std::uint64_t>(s.int64(0));
  out.fence = {FenceStatus::kOk, state_of(s.text(1)), s.integer(2)};
  out.length = length;
  while (s.step()) {
  }
  if (offset > length) {
    out.kind = Kind::kGap;
    return out;
  }
  // The part of `data` the orchestrator already holds must be byte-for-byte what it holds: a
  // resend after a lost answer is then harmless, and a diverging rewrite is refused.
  std::uint64_t overlap = std::min<std::uint64_t>(length - offset, data.size());
  if (overlap > 0 &&
      read_log_range(task_id, fence.attempt, offset, offset + overlap) != data.substr(0, overlap)) {
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
  // Conditional on the length read above, as every fenced write is on its fence.
  int n = db_.prepare("UPDATE tasks SET log_length = ?5, " TAMMA_ACK ", updated_at = " TAMMA_NOW
                      " WHERE " TAMMA_FENCE " AND log_length = ?6")
              .bind(1, task_id)
              .bind(2, fence.attempt)
              .bind(3, fence.lease_id)
              .bind(4, worker_id)
              .bind(5, static_cast<std::int64_t>(length + fresh.size()))
              .bind(6, static_cast<std::int64_t>(length))
              .run();
  if (n != 1) {
    throw Error(ErrorKind::kInfrastructure, "database_error",
                "log length of task " + task_id + " changed inside its own transaction");
  }
  insert_log_chunks(task_id, fence.attempt, length, fresh);
  tx.commit();
  out.kind = Kind::kAppended;
  out.length = length + fresh.size();
  return out;
}

FenceOutcome SqliteStore::complete(const std::string& task_id, const std::string& worker_id,
                                   const wire::CompleteRequest& request, const NextClaim* next) {
  std::string status = request.result.value("status", "");
  std::string state = status == "succeeded"   ? "succeeded"
                      : status == "cancelled" ? "cancelled"
                                              : "failed";
  Transaction tx(db_);
  json error;
  if (request.result.contains("error") && request.result["error"].is_object()) {
    error = request.result["error"];
  }
  auto s = db_.prepare(
      "UPDATE tasks SET state = ?5, result = ?6, error = ?7, lease_expires_at = NULL, "
      "log_missing_bytes = ?8, started_at = COALESCE(started_at, claimed_at), "
      "progress = COALESCE(?9, progress), "
      "finished_at = " TAMMA_NOW ", updated_at = " TAMMA_NOW " WHERE " TAMMA_FENCE
      " RETURNING state, attempt");
  s.bind(1, task_id)
      .bind(2, request.fence.attempt)
      .bind(3, request.fence.lease_id)
      .bind(4, worker_id)
      .bind(5, state)
      .bind(6, request.result.dump())
      .bind(8, static_cast<std::int64_t>(request.log.missing_bytes))
      .bind(9, progress_text(request.progress));
  if (error.is_object()) {
    s.bind(7, error.dump());
  } else {
    s.bind_null(7);
  }
  if (!s.step()) return diagnose(task_id, worker_id, request.fence.attempt);
  FenceOutcome out{FenceStatus::kOk, state_of(s.text(0)), s.integer(1)};
  while (s.step()) {
  }
  end_attempt(task_id, out.attempt, state);
  record(complete_entry(task_id, out.attempt, worker_id, out.state, status));
  if (next) out.next = claim_in_transaction(next->worker, next->lease_id, next->lease_ttl);
  tx.commit();
  return out;
}

FenceOutcome SqliteStore::fail(const std::string& task_id, const std::string& worker_id,
                               const wire::FailRequest& request, const RetryPolicy& policy,
                               const NextClaim* next) {
  Transaction tx(db_);
  // A host failure (?10) is excused from maxRetries up to kExcusedHostFailures (?11): EXCUSED
  // below is the count after this one. Every expression reads the row as it was.
#define EXCUSED "(host_failures + CASE WHEN ?10 AND host_failures < ?11 THEN 1 ELSE 0 END)"
  auto s = db_.prepare(
      "UPDATE tasks SET "
      "  state = CASE WHEN state = 'cancel_requested' THEN 'cancelled' "
      "               WHEN NOT ?5 THEN 'failed' "
      "               WHEN attempt - " EXCUSED
      " > max_retries THEN 'dead' ELSE 'retry_wait' END, "
      "  available_at = CASE WHEN state <> 'cancel_requested' AND ?5 AND "
      "    attempt - " EXCUSED
      " <= max_retries "
      "    THEN " TAMMA_NOW
      " + MIN(?8 * (1 << MIN(attempt - 1, 30)), ?9) ELSE available_at END, "
      "  finished_at = CASE WHEN state = 'cancel_requested' OR NOT ?5 OR "
      "    attempt - " EXCUSED " > max_retries THEN " TAMMA_NOW
      " END, "
      "  host_failures = " EXCUSED
      ", "
      "  avoid_worker = CASE WHEN ?10 THEN worker_id ELSE avoid_worker END, "
      "  avoid_until = CASE WHEN ?10 THEN " TAMMA_NOW
      " + ?13 ELSE avoid_until END, "
      "  log_missing_bytes = ?12, started_at = COALESCE(started_at, claimed_at), "
      "  progress = COALESCE(?14, progress), "
      "  error = ?6, result = ?7, lease_expires_at = NULL, updated_at = " TAMMA_NOW
      " "
      "WHERE " TAMMA_FENCE " RETURNING state, attempt");
#undef EXCUSED
  const bool host_failure = request.error.retryable && request.error.code == "host_failure";
  s.bind(1, task_id)
      .bind(2, request.fence.attempt)
      .bind(3, request.fence.lease_id)
      .bind(4, worker_id)
      .bind(5, request.error.retryable ? 1 : 0)
      .bind(6, error_json(request.error))
      .bind(8, static_cast<std::int64_t>(policy.base.count()))
      .bind(9, static_cast<std::int64_t>(policy.max.count()))
      .bind(10, host_failure ? 1 : 0)
      .bind(11, kExcusedHostFailures)
      .bind(12, static_cast<std::int64_t>(request.log.missing_bytes))
      .bind(13, static_cast<std::int64_t>(policy.avoid_failed_host.count()))
      .bind(14, progress_text(request.progress));
  if (request.result) {
    s.bind(7, request.result->dump());
  } else {
    s.bind_null(7);
  }
  if (!s.step()) return diagnose(task_id, worker_id, request.fence.attempt);
  FenceOutcome out{FenceStatus::kOk, state_of(s.text(0)), s.integer(1)};
  while (s.step()) {
  }
  end_attempt(task_id, out.attempt, "failed: " + request.error.code);
  record({wire::AuditAction::kFail, task_id, out.attempt, worker_id,
          fail_detail(out.state, request.error)});
  if (next) out.next = claim_in_transaction(next->worker, next->lease_id, next->lease_ttl);
  tx.commit();
  return out;
}

FenceOutcome SqliteStore::add_artifact(const std::string& task_id, const std::string& worker_id,
                                       const wire::Fence& fence, const wire::ArtifactInfo& info,
                                       const std::string& stored_path) {
  Transaction tx(db_);
  auto s = db_.prepare("UPDATE tasks SET " TAMMA_ACK ", updated_at = " TAMMA_NOW
                       " WHERE " TAMMA_FENCE " RETURNING state, attempt");
  s.bind(1, task_id).bind(2, fence.attempt).bind(3, fence.lease_id).bind(4, worker_id);
  if (!s.step()) return diagnose(task_id, worker_id, fence.attempt);
  FenceOutcome out{FenceStatus::kOk, state_of(s.text(0)), s.integer(1)};
  while (s.step()) {
  }
  db_.prepare(
         "INSERT OR REPLACE INTO artifacts (task_id, attempt, name, size, sha256, path, "
         "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, " TAMMA_NOW ")")
      .bind(1, task_id)
      .bind(2, fence.attempt)
      .bind(3, info.name)
      .bind(4, static_cast<std::int64_t>(info.size))
      .bind(5, info.sha256)
      .bind(6, stored_path)
      .run();
  // The name, size and digest the worker can check; never the path it is stored under.
  record(artifact_entry(task_id, out.attempt, worker_id, info));
  tx.commit();
  return out;
}

std::optional<wire::TaskView> SqliteStore::cancel(const std::string& task_id) {
  Transaction tx(db_);
  // A task nobody runs ends at once; a running one is asked to stop through its worker's next
  // heartbeat and ends when the worker reports.
  const int changed =
      db_.prepare(
             "UPDATE tasks SET "
             "  state = CASE WHEN state = 'running' THEN 'cancel_requested' ELSE 'cancelled' "
             "END, "
             "  finished_at = CASE WHEN state = 'running' THEN finished_at ELSE " TAMMA_NOW
             " END, "
             "  updated_at = " TAMMA_NOW
             " "
             "WHERE id = ?1 AND state IN ('queued', 'retry_wait', 'running')")
          .bind(1, task_id)
          .run();
  auto view = task(task_id);
  // A cancel of a task already cancelled or ended changed nothing: no record.
  if (changed > 0 && view) record(cancel_entry(*view));
  tx.commit();
  return view;
}

std::optional<wire::TaskView> SqliteStore::task(const std::string& task_id) {
  std::optional<wire::TaskView> view;
  {
    auto s = db_.prepare("SELECT " TAMMA_TASK_COLUMNS " FROM tasks WHERE id = ?1");
    s.bind(1, task_id);
    if (!s.step()) return std::nullopt;
    view = task_view(s);
  }
  auto a = db_.prepare(
      "SELECT name, attempt, size, sha256 FROM artifacts WHERE task_id = ?1 ORDER BY attempt, "
      "name");
  a.bind(1, task_id);
  while (a.step()) {
    view->artifacts.push_back(
        {a.text(0), a.integer(1), static_cast<std::uint64_t>(a.int64(2)), a.text(3)});
  }
  return view;
}

std::vector<wire::TaskView> SqliteStore::list_tasks(std::optional<wire::TaskState> state,
                                                    int limit) {
  std::vector<wire::TaskView> out;
  auto s = db_.prepare("SELECT " TAMMA_TASK_COLUMNS
                       " FROM tasks WHERE ?1 IS NULL OR state = ?1 ORDER BY seq DESC LIMIT ?2");
  if (state) {
    s.bind(1, wire::to_string(*state));
  } else {
    s.bind_null(1);
  }
  s.bind(2, limit);
  while (s.step()) out.push_back(task_view(s));
  return out;
}

std::optional<LogRead> SqliteStore::read_log(const std::string& task_id, std::optional<int> attempt,
                                             std::uint64_t offset, std::uint64_t max) {
  LogRead out;
  {
    auto s = db_.prepare("SELECT attempt, log_length, " TAMMA_LEASED " FROM tasks WHERE id = ?1");
    s.bind(1, task_id);
    if (!s.step()) return std::nullopt;
    int current = s.integer(0);
    out.attempt = attempt.value_or(current);
    if (out.attempt == current) {
      out.length = static_cast<std::uint64_t>(s.int64(1));
      out.open = s.int64(2) != 0;
    }
  }
  if (!out.open) {
    auto s = db_.prepare(
        "SELECT COALESCE(MAX(offset + length(data)), 0) FROM log_chunks "
        "WHERE task_id = ?1 AND attempt = ?2");
    s.bind(1, task_id).bind(2, out.attempt);
    s.step();
    out.length = static_cast<std::uint64_t>(s.int64(0));
  }
  if (offset < out.length) {
    out.data = read_log_range(task_id, out.attempt, offset, std::min(out.length, offset + max));
  }
  return out;
}

std::optional<std::string> SqliteStore::artifact_path(const std::string& task_id, int attempt,
                                                      const std::string& name) {
  auto s =
      db_.prepare("SELECT path FROM artifacts WHERE task_id = ?1 AND attempt = ?2 AND name = ?3");
  s.bind(1, task_id).bind(2, attempt).bind(3, name);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

TaskCounts SqliteStore::count_tasks() {
  TaskCounts counts;
  auto s = db_.prepare("SELECT state, COUNT(*) FROM tasks GROUP BY state");
  while (s.step()) counts.by_state[s.text(0)] = s.int64(1);
  return counts;
}

std::vector<std::string> SqliteStore::queued_task_ids(int limit) {
  std::vector<std::string> ids;
  auto s = db_.prepare(
      "SELECT id FROM tasks WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT ?1");
  s.bind(1, limit);
  while (s.step()) ids.push_back(s.text(0));
  return ids;
}

void SqliteStore::record(const AuditEntry& entry) {
  const Actor& who = actor();
  auto s = db_.prepare(
      "INSERT INTO audit (at, actor_kind, actor_id, address, action, task_id, attempt, "
      "worker_id, detail) VALUES (" TAMMA_NOW ", ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  s.bind(1, wire::to_string(who.kind))
      .bind(2, audit_text(who.id))
      .bind(3, audit_text(who.address))
      .bind(4, wire::to_string(entry.action))
      .bind(5, audit_text(entry.task_id))
      .bind(7, audit_text(entry.worker_id))
      .bind(8, entry.detail.dump());
  if (entry.attempt > 0) {
    s.bind(6, entry.attempt);
  } else {
    s.bind_null(6);
  }
  s.run();
}

std::vector<wire::AuditRecord> SqliteStore::audit(const AuditQuery& query) {
  std::vector<wire::AuditRecord> out;
  auto s = db_.prepare("SELECT " TAMMA_AUDIT_COLUMNS
                       " FROM audit WHERE (?1 IS NULL OR task_id = ?1) AND "
                       "(?2 IS NULL OR at >= ?2) AND seq > ?3 ORDER BY seq LIMIT ?4");
  s.bind(1, query.task_id);
  if (query.since_ms) {
    s.bind(2, *query.since_ms);
  } else {
    s.bind_null(2);
  }
  s.bind(3, query.after_seq).bind(4, query.limit);
  while (s.step()) out.push_back(audit_record(s));
  return out;
}

// ---- artifact files -----------------------------------------------------------------------------

namespace {

// Flushes a file, or a directory's entries, to stable storage.
void sync_path(const std::filesystem::path& path, bool directory, std::error_code& ec) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) {
    ec = std::error_code(errno, std::generic_category());
    return;
  }
  if (::fsync(fd) != 0) ec = std::error_code(errno, std::generic_category());
  ::close(fd);
}

// The directory of a task's artifacts: its id when that is a plain name, else a digest of it,
// so no id can name a place outside the artifact directory.
std::string task_directory(const std::string& task_id) {
  bool plain = !task_id.empty() && task_id.size() <= 128 && task_id != "." && task_id != "..";
  for (char c : task_id) {
    plain = plain && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.');
  }
  return plain ? task_id : "h-" + sha256_hex(task_id).substr(0, 32);
}

// Puts the staged bytes at `target`, durably: the row that points to them is committed only
// after this, so a crash can leave bytes without a row (removed with the task) but never a row
// without its bytes.
void place_file(const std::filesystem::path& staged, const std::filesystem::path& target,
                const std::string& name) {
  std::error_code ec;
  sync_path(staged, false, ec);
  if (!ec) std::filesystem::create_directories(target.parent_path(), ec);
  if (!ec) std::filesystem::rename(staged, target, ec);
  if (!ec) sync_path(target.parent_path(), true, ec);
  if (ec) {
    spdlog::error("cannot store artifact {} at {}: {}", name, target.string(), ec.message());
    std::error_code ignored;
    std::filesystem::remove(target, ignored);
    // Retryable: the worker uploads again, and a full disk may have room by then. The answer
    // names the artifact and the reason, never the server's paths.
    throw Error(ErrorKind::kInfrastructure, "storage_unavailable",
                "cannot store artifact " + name + ": " + ec.message(), true);
  }
}

void remove_quietly(const std::filesystem::path& path) {
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
}

}  // namespace

FenceOutcome SqliteStore::put_artifact(const std::string& task_id, const std::string& worker_id,
                                       const wire::Fence& fence, const wire::ArtifactInfo& info,
                                       const std::filesystem::path& staged) {
  // One flat file per upload, named by a hash of the artifact's name and a random suffix: fixed
  // length whatever the name (a 1024-character name fits no file system's 255-byte limit), and
  // a re-upload never overwrites the bytes an earlier row still points to.
  const auto target = artifact_dir_ / task_directory(task_id) / std::to_string(fence.attempt) /
                      (sha256_hex(info.name).substr(0, 32) + "-" + random_hex(8));
  place_file(staged, target, info.name);
  FenceOutcome outcome;
  std::optional<std::string> previous;
  try {
    previous = artifact_path(task_id, fence.attempt, info.name);
    outcome = add_artifact(task_id, worker_id, fence, info, target.string());
  } catch (...) {
    remove_quietly(target);
    throw;
  }
  if (outcome.status != FenceStatus::kOk) {
    remove_quietly(target);
  } else if (previous && *previous != target.string()) {
    // The same artifact uploaded again (a retried request): its row now points to the new copy.
    remove_quietly(*previous);
  }
  return outcome;
}

std::optional<ArtifactBytes> SqliteStore::open_artifact(const std::string& task_id, int attempt,
                                                        const std::string& name) {
  auto s = db_.prepare(
      "SELECT size, sha256, path FROM artifacts WHERE task_id = ?1 AND attempt = ?2 AND "
      "name = ?3");
  s.bind(1, task_id).bind(2, attempt).bind(3, name);
  if (!s.step()) return std::nullopt;
  ArtifactBytes out;
  out.info = {name, attempt, static_cast<std::uint64_t>(s.int64(0)), s.text(1)};
  out.file = s.text(2);
  // Bytes are made durable before their row, so a row without its bytes means the disk lost
  // them afterwards: say so rather than serve short bytes as if they were the artifact.
  std::error_code ec;
  const auto on_disk = std::filesystem::file_size(*out.file, ec);
  if (ec || on_disk != out.info.size) {
    spdlog::error("task {} attempt {}: artifact {} is damaged on disk ({} of {} bytes)", task_id,
                  attempt, name, ec ? 0 : on_disk, out.info.size);
    throw Error(
        ErrorKind::kInfrastructure, "artifact_damaged",
        "task " + task_id + " artifact " + name + ": the stored bytes do not match its record");
  }
  return out;
}

// ---- retention ----------------------------------------------------------------------------------

std::int64_t SqliteStore::prune_batch(std::int64_t older_than_ms, int batch,
                                      std::vector<std::string>* files,
                                      std::vector<std::string>* task_ids) {
  Transaction tx(db_);
  {
    auto s = db_.prepare(
        "SELECT id FROM tasks WHERE state IN ('succeeded','failed','dead','cancelled') AND "
        "finished_at < " TAMMA_NOW " - ?1 ORDER BY finished_at LIMIT ?2");
    s.bind(1, older_than_ms).bind(2, batch);
    while (s.step()) task_ids->push_back(s.text(0));
  }
  for (const auto& id : *task_ids) {
    {
      auto a = db_.prepare("SELECT path FROM artifacts WHERE task_id = ?1");
      a.bind(1, id);
      while (a.step()) files->push_back(a.text(0));
    }
    db_.prepare("DELETE FROM artifacts WHERE task_id = ?1").bind(1, id).run();
    db_.prepare("DELETE FROM log_chunks WHERE task_id = ?1").bind(1, id).run();
    db_.prepare("DELETE FROM attempts WHERE task_id = ?1").bind(1, id).run();
    db_.prepare("DELETE FROM tasks WHERE id = ?1").bind(1, id).run();
  }
  tx.commit();
  return static_cast<std::int64_t>(task_ids->size());
}

PruneOutcome SqliteStore::prune_finished(std::chrono::milliseconds older_than, int batch,
                                         int max_batches) {
  PruneOutcome out;
  const std::int64_t age = older_than.count();
  for (int i = 0; i < max_batches; ++i) {
    std::vector<std::string> files;
    std::vector<std::string> ids;
    const std::int64_t n = prune_batch(age, batch, &files, &ids);
    // After the commit: a crash in between leaves files no row names, which the next sweep of
    // the same task's directory (or an operator) removes; never a row without its bytes.
    for (const auto& f : files) remove_quietly(f);
    for (const auto& id : ids) {
      std::error_code ignored;
      std::filesystem::remove_all(artifact_dir_ / task_directory(id), ignored);
    }
    out.tasks += n;
    out.more = n >= batch;
    if (!out.more) break;
  }
  Transaction tx(db_);
  out.workers =
      db_.prepare(
             "DELETE FROM workers WHERE id IN (SELECT w.id FROM workers w WHERE "
             "w.last_seen_at < " TAMMA_NOW " - ?1 AND (w.gone_at IS NULL OR w.gone_at < " TAMMA_NOW
             " - ?1) AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.worker_id = "
             "w.id) LIMIT ?2)")
          .bind(1, age)
          .bind(2, batch)
          .run();
  tx.commit();
  if (out.workers >= batch) out.more = true;
  return out;
}

}  // namespace tamma::orchestrator
