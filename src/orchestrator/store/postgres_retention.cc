// Retention on PostgreSQL (docs/adr/0027-artifacts-in-postgresql-and-retention.md): finished
// tasks older than the retention go with everything hanging off them, in small transactions,
// run by every replica at once without a leader. Each batch locks the tasks it takes with
// FOR UPDATE SKIP LOCKED, so two replicas take different tasks, and every DELETE is
// conditional, so a task another replica already removed is simply not found. A task's
// artifact chunks and log pieces go a bounded number of rows per transaction before its
// rows do: a backlog of large artifacts never holds locks for long.

#include "common/error.h"
#include "orchestrator/store/postgres.h"
#include "orchestrator/store/postgres_sql.h"
#include "orchestrator/store/postgres_store.h"

namespace tamma::orchestrator {
namespace {

// Rows of bulk data removed per transaction: 64 artifact chunks are 32 MiB, 1024 log pieces
// at most 64 MiB.
constexpr int kArtifactChunksPerBatch = 64;
constexpr int kLogPiecesPerBatch = 1024;

// A text[] literal of `ids`: each element quoted, with " and \ escaped.
std::string text_array(const std::vector<std::string>& ids) {
  std::string out = "{";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : ids[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace

PruneOutcome PostgresStore::prune_finished(std::chrono::milliseconds older_than, int batch,
                                           int max_batches) {
  PruneOutcome out;
  const auto age = static_cast<std::int64_t>(older_than.count());
  for (int i = 0; i < max_batches; ++i) {
    PgTransaction tx(*db_);
    // The oldest finished tasks not being pruned by another replica right now. A finished task
    // is never written again (every worker write is fenced on a leased state, a cancel only
    // moves unfinished tasks), so the lock only keeps replicas apart.
    auto picked =
        db_->exec("SELECT id FROM tasks WHERE " TAMMA_PG_FINISHED " AND finished_at < " TAMMA_PG_NOW
                  " - $1::bigint ORDER BY finished_at LIMIT $2::integer "
                  "FOR UPDATE SKIP LOCKED",
                  {age, batch});
    if (picked.rows() == 0) {
      tx.commit();
      out.more = false;
      break;
    }
    std::vector<std::string> ids;
    for (int r = 0; r < picked.rows(); ++r) ids.push_back(picked.text(r, 0));
    const std::string array = text_array(ids);
    // Bulk data first, bounded; while some is left the tasks stay, and the next batch (here
    // or on another replica) takes them again, oldest first.
    auto chunks = db_->exec(
        "DELETE FROM artifact_chunks WHERE ctid = ANY(ARRAY(SELECT ctid FROM artifact_chunks "
        "WHERE task_id = ANY($1::text[]) LIMIT $2::integer))",
        {array, kArtifactChunksPerBatch});
    auto logs = db_->exec(
        "DELETE FROM log_chunks WHERE ctid = ANY(ARRAY(SELECT ctid FROM log_chunks "
        "WHERE task_id = ANY($1::text[]) LIMIT $2::integer))",
        {array, kLogPiecesPerBatch});
    if (chunks.affected() >= kArtifactChunksPerBatch || logs.affected() >= kLogPiecesPerBatch) {
      tx.commit();
      out.more = true;
      continue;
    }
    db_->exec("DELETE FROM artifacts WHERE task_id = ANY($1::text[])", {array});
    db_->exec("DELETE FROM attempts WHERE task_id = ANY($1::text[])", {array});
    // The idempotency key is a column of the task: it goes with it.
    auto gone =
        db_->exec("DELETE FROM tasks WHERE id = ANY($1::text[]) AND " TAMMA_PG_FINISHED, {array});
    out.tasks += gone.affected();
    tx.commit();
    out.more = picked.rows() >= batch;
    if (!out.more) break;
  }
  // Workers unregistered or silent for longer than the retention whose every task is gone.
  PgTransaction tx(*db_);
  auto workers = db_->exec(
      "DELETE FROM workers WHERE id IN (SELECT w.id FROM workers w WHERE w.last_seen_at "
      "< " TAMMA_PG_NOW " - $1::bigint AND (w.gone_at IS NULL OR w.gone_at < " TAMMA_PG_NOW
      " - $1::bigint) AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.worker_id = w.id) "
      "LIMIT $2::integer FOR UPDATE SKIP LOCKED)",
      {age, batch});
  out.workers = workers.affected();
  tx.commit();
  if (out.workers >= batch) out.more = true;
  return out;
}

}  // namespace tamma::orchestrator
