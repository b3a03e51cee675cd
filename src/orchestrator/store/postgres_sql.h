#pragma once
// SQL fragments of the PostgreSQL store's artifact and retention code (postgres_artifacts.cc,
// postgres_retention.cc), spelled exactly as postgres_store.cc spells its own: the database
// clock in milliseconds, and the fence every worker write carries.

// clock_timestamp(), not now(): a transaction that waited on a lock must not compare against
// the time it began.
#define TAMMA_PG_NOW "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
#define TAMMA_PG_LEASED "state IN ('running','cancel_requested')"
#define TAMMA_PG_ACK "acked_at = COALESCE(acked_at, " TAMMA_PG_NOW ")"
// $1 task, $2 attempt, $3 lease id, $4 worker.
#define TAMMA_PG_FENCE \
  "id = $1 AND attempt = $2::integer AND lease_id = $3 AND worker_id = $4 AND " TAMMA_PG_LEASED
#define TAMMA_PG_FINISHED "state IN ('succeeded','failed','dead','cancelled')"
