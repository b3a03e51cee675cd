#pragma once
// The orchestrator's settings: defaults here, then `tamma-orchestrator serve` flags and the
// TAMMA_* environment (main.cc).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "orchestrator/http_types.h"
#include "orchestrator/store/sqlite_store.h"

namespace tamma::orchestrator {

using namespace std::chrono_literals;

struct ServerConfig {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;  // 0: any free port (tests)
  std::filesystem::path db_path;     // SQLite; empty when postgres_conninfo is set
  // A libpq connection string (postgres://... or key=value): the PostgreSQL store, on which
  // several orchestrators may run at once (docs/scale-out.md).
  std::string postgres_conninfo;
  // Artifacts and upload staging; next to the SQLite file by default. With PostgreSQL the
  // artifacts are in the database and this only stages uploads: a private temporary
  // directory when empty.
  std::filesystem::path data_dir;
  // Both set: HTTPS only (TLS 1.2 or later). PEM files; the certificate file may hold a chain.
  std::filesystem::path tls_cert;
  std::filesystem::path tls_key;
  SyncMode sync = SyncMode::kFull;
  // The WAL size (pages) at which the SQLite store's own thread checkpoints; 0: the commit
  // that passes SQLite's 1000 does it, as SQLite does by default (ADR 0040).
  int sqlite_checkpoint_pages = SqliteStore::kCheckpointPages;

  std::chrono::milliseconds lease_ttl = 30s;
  // A claim the worker has not acknowledged (its `started`, any fenced write, or a heartbeat
  // naming the lease) within this is re-queued under the same attempt. At or above lease_ttl
  // it never fires first: the lease expires instead.
  std::chrono::milliseconds ack_timeout = 10s;
  std::chrono::milliseconds poll_timeout = 25s;  // below common 60 s proxy idle timeouts
  std::chrono::milliseconds heartbeat_interval = 10s;
  int offline_after_heartbeats = 3;           // a worker is shown offline after this many
  std::chrono::milliseconds retry_base = 1s;  // backoff min(base * 2^n, max), n = retries so far
  std::chrono::milliseconds retry_max = 60s;
  // After a host_failure, the task is kept from that worker this long (RetryPolicy).
  std::chrono::milliseconds avoid_failed_host = 30s;
  std::chrono::milliseconds idle_timeout = 75s;  // an idle keep-alive connection is closed
  // A connection that has not yet shown a valid token must send each request head within this.
  std::chrono::milliseconds header_timeout = 10s;
  std::int64_t max_connections = 0;  // 0: derived from the descriptor limit
  // Tasks that ended longer ago than this are pruned with their attempts, logs and artifacts
  // (the audit trail stays), and so are workers gone or silent that long; 0 keeps everything.
  std::chrono::milliseconds retain_finished = std::chrono::hours(24 * 30);

  std::uint64_t max_json_body = 1ULL << 20;       // 1 MiB
  std::uint64_t max_artifact_body = 64ULL << 20;  // 64 MiB
  std::uint64_t max_log_bytes = 64ULL << 20;      // per attempt
  // HTTP I/O threads beside the core thread. 0: the core thread does the HTTP I/O too, so a
  // request is never handed between threads (ADR 0039); for small hosts where a thread switch
  // costs more than the parsing it would move off the core.
  int io_threads = 2;

  std::optional<std::string> admin_token;         // TAMMA_ADMIN_TOKEN
  std::optional<std::string> registration_token;  // TAMMA_REGISTRATION_TOKEN

  // Sees every answer as it is sent (tests check them against docs/openapi.yaml).
  AnswerObserver observe_answer;
};

}  // namespace tamma::orchestrator
