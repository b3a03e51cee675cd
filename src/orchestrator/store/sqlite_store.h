#pragma once
// The Store on one SQLite file: WAL, one writer connection confined to the core thread,
// BEGIN IMMEDIATE for every write. docs/adr/0012-sqlite-settings.md says why.

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>

#include "orchestrator/store/audit_row.h"
#include "orchestrator/store/sqlite.h"
#include "orchestrator/store/sqlite_checkpointer.h"
#include "orchestrator/store/store.h"

namespace tamma::orchestrator {

enum class SyncMode { kFull, kNormal };

// "full" or "normal"; throws Error(kConfig) otherwise.
SyncMode sync_mode_from_string(const std::string& text);

class SqliteStore : public Store {
 public:
  // SQLite's own threshold for a checkpoint, kept: the WAL's size asking for one, in pages.
  static constexpr int kCheckpointPages = 1000;

  // Artifacts are files under `artifact_dir` (default: tamma-data/artifacts next to `file`).
  // Checkpoints run on a thread of the store's own once the WAL holds `checkpoint_pages`
  // (sqlite_checkpointer.h); 0 leaves them to SQLite, inside the commit that passes 1000.
  SqliteStore(const std::filesystem::path& file, SyncMode sync,
              std::filesystem::path artifact_dir = {}, int checkpoint_pages = kCheckpointPages);

  std::optional<std::string> setting(const std::string& key) override;
  void put_setting(const std::string& key, const std::string& value) override;
  void probe() override;
  StorageWatch& watch() override { return db_.watch(); }

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

  FenceOutcome put_artifact(const std::string& task_id, const std::string& worker_id,
                            const wire::Fence& fence, const wire::ArtifactInfo& info,
                            const std::filesystem::path& staged) override;
  std::optional<ArtifactBytes> open_artifact(const std::string& task_id, int attempt,
                                             const std::string& name) override;
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

  std::vector<StoreMetric> metrics() override;

  [[nodiscard]] const SchemaVersions& schema() const { return schema_; }
  // Nullopt when checkpoints are SQLite's automatic ones (the second connection failed).
  [[nodiscard]] std::optional<SqliteCheckpointer::Stats> checkpoint_stats() const;

 private:
  void migrate();
  SchemaVersions schema_;
  // The claim itself, inside the caller's transaction.
  std::optional<Claim> claim_in_transaction(const WorkerInfo& worker, const std::string& lease_id,
                                            std::chrono::milliseconds lease_ttl);
  FenceOutcome diagnose(const std::string& task_id, const std::string& worker_id, int attempt);
  std::string read_log_range(const std::string& task_id, int attempt, std::uint64_t from,
                             std::uint64_t to);
  void insert_log_chunks(const std::string& task_id, int attempt, std::uint64_t offset,
                         std::string_view data);
  void end_attempt(const std::string& task_id, int attempt, std::string_view outcome);
  // Appends one audit record for the actor in force, inside the caller's transaction.
  void record(const AuditEntry& entry);

  // One transaction of prune_finished(): at most `batch` tasks, ended more than
  // `older_than_ms` ago; collects their stored files and ids, to remove after the commit.
  std::int64_t prune_batch(std::int64_t older_than_ms, int batch, std::vector<std::string>* files,
                           std::vector<std::string>* task_ids);

  SqliteDb db_;
  std::filesystem::path artifact_dir_;
  std::pair<ino_t, dev_t> inode_;  // of the file as opened, to notice it being replaced
  // After db_: stopped, and its connection closed, before the writer's close.
  std::unique_ptr<SqliteCheckpointer> checkpointer_;
};

}  // namespace tamma::orchestrator
