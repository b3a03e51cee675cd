#pragma once
// The Store on PostgreSQL, for several orchestrator replicas on one database (issue 10,
// docs/adr/0025-postgresql-store.md). Same states and semantics as the SQLite store: every
// operation one transaction, every time from the database clock (clock_timestamp()), fenced
// writes single conditional UPDATEs, claims FOR UPDATE SKIP LOCKED in a CTE. Any number of
// replicas may run these against one database at once.
//
// One connection, confined to the core thread like the SQLite store's; it is made again after
// the server or the network dropped it.

#include <memory>
#include <string>
#include <vector>

#include "orchestrator/store/audit_row.h"
#include "orchestrator/store/store.h"

namespace tamma::orchestrator {

class PgConnection;
class PgResult;
struct PgStatement;
class PgQueueSignal;
class PgArtifactReads;

class PostgresStore : public Store {
 public:
  // `conninfo`: any libpq connection string, "postgres://user@host:port/db" or "host=... ".
  // Connects, and applies the schema migrations under an advisory lock (replicas starting
  // together migrate once). Throws Error(kConfig) for a bad string, kInfrastructure when the
  // server cannot be reached.
  explicit PostgresStore(const std::string& conninfo);
  ~PostgresStore() override;

  std::optional<std::string> setting(const std::string& key) override;
  void put_setting(const std::string& key, const std::string& value) override;
  void probe() override;
  StorageWatch& watch() override;

  void register_worker(const std::string& id, const std::string& token_hash,
                       const wire::Capabilities& capabilities) override;
  std::optional<std::string> worker_by_token_hash(const std::string& token_hash) override;
  std::optional<WorkerInfo> worker(const std::string& id) override;
  std::vector<Requeued> unregister_worker(const std::string& id) override;
  HeartbeatOutcome heartbeat(const std::string& worker_id, const wire::HeartbeatRequest& request,
                             std::chrono::milliseconds lease_ttl) override;
  bool request_drain(const std::string& worker_id) override;
  std::vector<wire::WorkerView> list_workers(std::chrono::milliseconds offline_after,
                                             bool include_gone) override;

  SubmitOutcome submit(const NewTask& task, const WorkerInfo* hand_to, const std::string& lease_id,
                       std::chrono::milliseconds lease_ttl) override;
  std::optional<Claim> claim(const WorkerInfo& worker, const std::string& lease_id,
                             std::chrono::milliseconds lease_ttl) override;
  bool release(const std::string& task_id, int attempt, const std::string& lease_id) override;
  std::vector<Requeued> expire_leases(const RetryPolicy& policy) override;
  int extend_leases(std::chrono::milliseconds lease_ttl) override;
  std::vector<Requeued> promote_retries() override;
  std::vector<Requeued> requeue_unacknowledged(std::chrono::milliseconds ack_timeout) override;
  std::optional<std::int64_t> next_deadline_ms(std::chrono::milliseconds ack_timeout) override;

  FenceOutcome started(const std::string& task_id, const std::string& worker_id,
                       const wire::Fence& fence) override;
  FenceOutcome progress(const std::string& task_id, const std::string& worker_id,
                        const wire::ProgressRequest& request) override;
  LogAppendOutcome append_log(const std::string& task_id, const std::string& worker_id,
                              const wire::Fence& fence, std::uint64_t offset, std::string_view data,
                              std::uint64_t max_bytes) override;
  FenceOutcome complete(const std::string& task_id, const std::string& worker_id,
                        const wire::CompleteRequest& request,
                        const NextClaim* next = nullptr) override;
  FenceOutcome fail(const std::string& task_id, const std::string& worker_id,
                    const wire::FailRequest& request, const RetryPolicy& policy,
                    const NextClaim* next = nullptr) override;
  FenceOutcome add_artifact(const std::string& task_id, const std::string& worker_id,
                            const wire::Fence& fence, const wire::ArtifactInfo& info,
                            const std::string& stored_path) override;

  // Artifact bytes live in the database (postgres_artifacts.cc); downloads read them on a
  // thread and connection of their own, never the store's.
  FenceOutcome put_artifact(const std::string& task_id, const std::string& worker_id,
                            const wire::Fence& fence, const wire::ArtifactInfo& info,
                            const std::filesystem::path& staged) override;
  std::optional<ArtifactBytes> open_artifact(const std::string& task_id, int attempt,
                                             const std::string& name) override;
  // Retention without a leader (postgres_retention.cc).
  PruneOutcome prune_finished(std::chrono::milliseconds older_than, int batch,
                              int max_batches) override;

  std::optional<wire::TaskView> cancel(const std::string& task_id) override;
  std::optional<wire::TaskView> task(const std::string& task_id) override;
  std::vector<wire::TaskView> list_tasks(std::optional<wire::TaskState> state, int limit) override;
  std::optional<LogRead> read_log(const std::string& task_id, std::optional<int> attempt,
                                  std::uint64_t offset, std::uint64_t max) override;
  std::optional<std::string> artifact_path(const std::string& task_id, int attempt,
                                           const std::string& name) override;
  TaskCounts count_tasks() override;
  std::vector<wire::AuditRecord> audit(const AuditQuery& query) override;
  std::vector<std::string> queued_task_ids(int limit) override;
  std::optional<Queued> queued_task(const std::string& task_id) override;
  void listen_for_queue(QueueListener listener) override;
  void announce_queued(const std::string& task_id, const Queued* queued) override;
  [[nodiscard]] std::optional<SignalCounts> signal_counts() const override;

  [[nodiscard]] const SchemaVersions& schema() const { return schema_; }

 private:
  static SchemaVersions migrate(PgConnection& db);
  SchemaVersions schema_;
  // A claim for `worker` as statements for one pipeline: lock the worker's row, then pick,
  // update, record the attempt and audit it. With `new_task_id`, nothing is claimed unless
  // that task exists (submit's replay by idempotency key inserts none).
  std::vector<PgStatement> claim_statements(const WorkerInfo& worker, const std::string& lease_id,
                                            std::chrono::milliseconds lease_ttl,
                                            const std::string* new_task_id);
  // `out` with the next claim a report asked for, when one was asked for.
  FenceOutcome with_next_claim(FenceOutcome out, const NextClaim* next);
  // The claim the last statement of claim_statements() returned, if any.
  static std::optional<Claim> claim_from(const PgResult& result, const std::string& lease_id,
                                         std::chrono::milliseconds lease_ttl);
  // Appends one audit record for the actor in force, inside the caller's transaction.
  void record(const AuditEntry& entry);

  std::string conninfo_;
  std::unique_ptr<PgConnection> db_;
  // Made by the first open_artifact() of bytes kept here; stops its thread when it goes.
  std::shared_ptr<PgArtifactReads> artifact_reads_;
  // Made by listen_for_queue(); destroyed first, since its thread calls into the listener.
  std::unique_ptr<PgQueueSignal> signal_;
};

}  // namespace tamma::orchestrator
