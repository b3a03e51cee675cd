#pragma once
// The durable queue behind the orchestrator. SQLite implements it today (sqlite_store.cc); the
// interface keeps PostgreSQL possible: every operation is one transaction, every time comes
// from the database clock, and fenced writes are single conditional UPDATEs.
//
// A Store is used from one thread only (the orchestrator's core thread): it is the one writer.

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "orchestrator/store/storage_watch.h"
#include "protocol/wire.h"

namespace tamma::orchestrator {

namespace wire = tamma::protocol::wire;

struct NewTask {
  std::string id;
  std::string type;
  nlohmann::json spec;  // with "id" already set
  int priority = 0;
  int max_retries = 3;
  std::map<std::string, std::string> labels;
  std::optional<std::string> idempotency_key;
  std::string request_hash;  // tells a replay of the same submit from a reused key
};

// A task handed to a worker.
struct Claim {
  wire::Assignment assignment;
  std::string type;
  std::int64_t pickup_latency_ms = 0;  // from queued (or back from retry) to handed out
};

struct SubmitOutcome {
  wire::TaskView task;
  bool created = false;        // false: the idempotency key named an existing task
  bool key_reused = false;     // the key names a task submitted with a different request
  std::optional<Claim> claim;  // for the waiting worker named in submit(), when it got one
};

// The worker as the matcher sees it.
struct WorkerInfo {
  std::string id;
  wire::Capabilities capabilities;
  bool draining = false;         // said by the worker
  bool drain_requested = false;  // asked by an admin
  bool gone = false;             // unregistered
  int leased = 0;                // tasks it holds a lease on now
};

struct RetryPolicy {
  std::chrono::milliseconds base{1000};
  std::chrono::milliseconds max{60000};
  // A task that failed because of a worker's host is not handed back to that worker for this
  // long (other workers take it meanwhile; after it, the worker may have recovered).
  std::chrono::milliseconds avoid_failed_host{30000};
};

// Why a fenced write was refused.
enum class FenceStatus {
  kOk,
  kNotFound,   // no such task
  kForbidden,  // the task was never leased to this worker with this attempt
  kLeaseLost,  // it was, but that attempt/lease is no longer the running one
};

struct FenceOutcome {
  FenceStatus status = FenceStatus::kOk;
  wire::TaskState state = wire::TaskState::kQueued;  // the task's state after the call
  int attempt = 0;                                   // the task's current attempt
  std::optional<Claim> next;                         // complete/fail with a NextClaim: its claim
};

// A report (complete or fail) that asks for the reporting worker's next task: claimed in the
// report's own transaction, so the slot the report frees is filled with one commit, not two.
struct NextClaim {
  WorkerInfo worker;  // as read before the report (capabilities; the slot count is re-checked)
  std::string lease_id;
  std::chrono::milliseconds lease_ttl{0};
};

struct LogAppendOutcome {
  FenceOutcome fence;
  enum class Kind { kAppended, kDuplicate, kGap, kMismatch, kTooLarge } kind = Kind::kAppended;
  std::uint64_t length = 0;  // the attempt's log length after the call
};

struct LogRead {
  std::string data;
  std::uint64_t length = 0;  // the whole log of that attempt
  int attempt = 0;
  bool open = false;  // the attempt may still append (task running this attempt)
};

// A task that left "running" without a worker's word: lease expiry or unregistration.
struct Requeued {
  std::string task_id;
  int attempt = 0;
  wire::TaskState state = wire::TaskState::kQueued;
};

struct HeartbeatOutcome {
  wire::HeartbeatResponse response;
  bool known = false;  // false: the worker is gone
};

struct TaskCounts {
  std::map<std::string, std::int64_t> by_state;
};

// A figure of the store's own for /metrics (Prometheus text): `name` without the tamma_
// prefix, `type` "counter" or "gauge".
struct StoreMetric {
  std::string name;
  std::string type;
  std::string help;
  double value = 0;
};

// An artifact's bytes read piece by piece, off the store's thread: the store of several
// replicas keeps them in the database (docs/adr/0027-artifacts-in-postgresql-and-retention.md).
class ArtifactStream {
 public:
  // `piece` is at most one stored chunk; empty means the end. `error` set: nothing more comes
  // (an Error "artifact_damaged" when the stored bytes do not match the record, before any
  // byte was given when the first call finds it; the artifact replaced or pruned meanwhile).
  using Done = std::function<void(std::string piece, std::exception_ptr error)>;
  virtual ~ArtifactStream() = default;
  // Asks for the next piece; `done` runs once, on another thread than the caller's. One call
  // at a time: the next only after `done` ran.
  virtual void next(Done done) = 0;
};

// Where an artifact's bytes are, as open_artifact() found them: exactly one of `file` (SQLite:
// a file under its artifact directory, already checked to have the recorded size) and `stream`.
struct ArtifactBytes {
  wire::ArtifactInfo info;
  std::optional<std::filesystem::path> file;
  std::shared_ptr<ArtifactStream> stream;
};

// The schema version a store found when it opened its database, and the one it left there
// (they differ when it applied migrations): `tamma-orchestrator migrate` prints them.
struct SchemaVersions {
  int found = 0;  // 0: a new database
  int now = 0;
};

// What a retention sweep removed (prune_finished).
struct PruneOutcome {
  std::int64_t tasks = 0;    // finished tasks, with their attempts, logs, artifacts and keys
  std::int64_t workers = 0;  // workers gone or silent for longer than the retention
  bool more = false;         // a batch came back full: call again for the rest
};

// Who the operations a Store records in its audit trail are done for
// (docs/adr/0026-audit-trail.md).
struct Actor {
  wire::ActorKind kind = wire::ActorKind::kOrchestrator;
  std::string id;       // the worker's id, for kWorker; empty otherwise
  std::string address;  // the client's address as its socket showed it; empty for the orchestrator

  static Actor orchestrator() { return {}; }
  static Actor admin(std::string address) {
    return {wire::ActorKind::kAdmin, {}, std::move(address)};
  }
  static Actor registration(std::string address) {
    return {wire::ActorKind::kRegistration, {}, std::move(address)};
  }
  static Actor worker(std::string id, std::string address) {
    return {wire::ActorKind::kWorker, std::move(id), std::move(address)};
  }
};

// A page of the audit trail, oldest first.
struct AuditQuery {
  std::optional<std::string> task_id;    // only records about this task
  std::optional<std::int64_t> since_ms;  // only records written at or after this (database clock)
  std::int64_t after_seq = 0;            // only records after this one (the previous page's next)
  int limit = 100;                       // 1 to kMaxAuditLimit
};
inline constexpr int kMaxAuditLimit = 1000;

class Store {
 public:
  virtual ~Store() = default;

  // Names the actor of every operation made while it lives; the one before it is back when it
  // goes. Every operation that changes state writes an audit record naming the actor in force,
  // in its own transaction. With no scope in force the actor is the orchestrator itself: work
  // no request asked for (lease expiry, retries, an answer that could not be written). The
  // store belongs to one thread, so a scope covers exactly the calls its owner makes meanwhile.
  class ActorScope {
   public:
    ActorScope(Store& store, Actor actor)
        : store_(store), previous_(std::exchange(store.actor_, std::move(actor))) {}
    ~ActorScope() { store_.actor_ = std::move(previous_); }
    ActorScope(const ActorScope&) = delete;
    ActorScope& operator=(const ActorScope&) = delete;

   private:
    Store& store_;
    Actor previous_;
  };
  [[nodiscard]] const Actor& actor() const { return actor_; }

  // ---- settings: persisted token hashes and similar ----
  virtual std::optional<std::string> setting(const std::string& key) = 0;
  virtual void put_setting(const std::string& key, const std::string& value) = 0;
  // Readiness: one small write commits and the file is still the one opened. Throws when not;
  // either way watch() has the outcome.
  virtual void probe() = 0;
  // How the writes went, for /ready and the lease reaper; safe to read from any thread.
  virtual StorageWatch& watch() = 0;

  // ---- workers ----
  virtual void register_worker(const std::string& id, const std::string& token_hash,
                               const wire::Capabilities& capabilities) = 0;
  // Looks a worker up by the SHA-256 of its token; nullopt when unknown or gone.
  virtual std::optional<std::string> worker_by_token_hash(const std::string& token_hash) = 0;
  virtual std::optional<WorkerInfo> worker(const std::string& id) = 0;
  // Marks the worker gone and puts its running tasks back at once.
  virtual std::vector<Requeued> unregister_worker(const std::string& id) = 0;
  virtual HeartbeatOutcome heartbeat(const std::string& worker_id,
                                     const wire::HeartbeatRequest& request,
                                     std::chrono::milliseconds lease_ttl) = 0;
  virtual bool request_drain(const std::string& worker_id) = 0;
  virtual std::vector<wire::WorkerView> list_workers(std::chrono::milliseconds offline_after,
                                                     bool include_gone) = 0;

  // ---- tasks ----
  // Inserts the task. With `hand_to`, a parked worker that can run it, the claim for that worker
  // happens in the same transaction: one commit (one fsync) from submit to assignment.
  virtual SubmitOutcome submit(const NewTask& task, const WorkerInfo* hand_to,
                               const std::string& lease_id,
                               std::chrono::milliseconds lease_ttl) = 0;
  // Hands the best matching queued task to the worker (priority, then FIFO), or nullopt when
  // none matches or the worker has no free slot.
  virtual std::optional<Claim> claim(const WorkerInfo& worker, const std::string& lease_id,
                                     std::chrono::milliseconds lease_ttl) = 0;
  // Undoes a claim whose answer never reached the worker.
  virtual bool release(const std::string& task_id, int attempt, const std::string& lease_id) = 0;
  // Running tasks whose lease ran out: re-queued with backoff, dead, or cancelled; ONE
  // conditional UPDATE.
  virtual std::vector<Requeued> expire_leases(const RetryPolicy& policy) = 0;
  // At startup: every lease runs at least `lease_ttl` from now, so the time the orchestrator
  // was down does not count against workers that could not reach it. Returns how many.
  virtual int extend_leases(std::chrono::milliseconds lease_ttl) = 0;
  // retry_wait tasks whose backoff is over become queued.
  virtual std::vector<Requeued> promote_retries() = 0;
  // Running tasks whose worker has not acknowledged the claim (no fenced write, no heartbeat
  // naming the lease) within `ack_timeout`: the answer never reached it. Re-queued at once
  // under the same attempt number (a new lease id fences out a late copy of the old one).
  virtual std::vector<Requeued> requeue_unacknowledged(std::chrono::milliseconds ack_timeout) = 0;
  // Milliseconds until the next lease expiry, retry promotion or acknowledgement deadline.
  virtual std::optional<std::int64_t> next_deadline_ms(std::chrono::milliseconds ack_timeout) = 0;

  virtual FenceOutcome started(const std::string& task_id, const std::string& worker_id,
                               const wire::Fence& fence) = 0;
  virtual FenceOutcome progress(const std::string& task_id, const std::string& worker_id,
                                const wire::ProgressRequest& request) = 0;
  virtual LogAppendOutcome append_log(const std::string& task_id, const std::string& worker_id,
                                      const wire::Fence& fence, std::uint64_t offset,
                                      std::string_view data, std::uint64_t max_bytes) = 0;
  // `next` (may be null): claim the worker's next task in the same transaction, once the
  // report was accepted.
  virtual FenceOutcome complete(const std::string& task_id, const std::string& worker_id,
                                const wire::CompleteRequest& request,
                                const NextClaim* next = nullptr) = 0;
  virtual FenceOutcome fail(const std::string& task_id, const std::string& worker_id,
                            const wire::FailRequest& request, const RetryPolicy& policy,
                            const NextClaim* next = nullptr) = 0;
  // Checks the fence, then records the artifact (its bytes are already on disk).
  virtual FenceOutcome add_artifact(const std::string& task_id, const std::string& worker_id,
                                    const wire::Fence& fence, const wire::ArtifactInfo& info,
                                    const std::string& stored_path) = 0;

  // Checks the fence, then stores the bytes of the staged upload `staged` and records the
  // artifact, replacing the bytes of one of the same name and attempt. All or nothing: a
  // refused fence or a failure leaves neither a record nor bytes. SQLite moves the file under
  // its artifact directory (made durable before the record commits); PostgreSQL copies it in
  // chunks inside the fenced transaction. `staged` may be gone after the call.
  virtual FenceOutcome put_artifact(const std::string& task_id, const std::string& worker_id,
                                    const wire::Fence& fence, const wire::ArtifactInfo& info,
                                    const std::filesystem::path& staged) = 0;
  // The artifact's record and a way to its bytes; nullopt when there is no such artifact.
  // Throws Error "artifact_damaged" when the bytes are known not to match the record.
  virtual std::optional<ArtifactBytes> open_artifact(const std::string& task_id, int attempt,
                                                     const std::string& name) = 0;

  // ---- retention ----
  // Removes tasks that ended (succeeded, failed, dead, cancelled) more than `older_than` ago by
  // the database clock, with everything hanging off them (attempts, logs, artifacts and their
  // bytes, idempotency keys), oldest first, in transactions of at most `batch` tasks (and a
  // bounded amount of bulk data), at most `max_batches` of them; then workers unregistered or
  // unseen for that long that no attempt names. The audit trail stays. Every delete is
  // conditional and batches skip rows another store is pruning: any number of stores on one
  // database may run it at once, and each row goes once.
  virtual PruneOutcome prune_finished(std::chrono::milliseconds older_than, int batch,
                                      int max_batches) = 0;

  // Queued or retry_wait -> cancelled; running -> cancel_requested. nullopt: no such task.
  virtual std::optional<wire::TaskView> cancel(const std::string& task_id) = 0;
  virtual std::optional<wire::TaskView> task(const std::string& task_id) = 0;
  virtual std::vector<wire::TaskView> list_tasks(std::optional<wire::TaskState> state,
                                                 int limit) = 0;
  // Reads the log of `attempt` (the current one when nullopt) from `offset`, at most `max`.
  virtual std::optional<LogRead> read_log(const std::string& task_id, std::optional<int> attempt,
                                          std::uint64_t offset, std::uint64_t max) = 0;
  // The stored path of an artifact, when it exists.
  virtual std::optional<std::string> artifact_path(const std::string& task_id, int attempt,
                                                   const std::string& name) = 0;
  virtual TaskCounts count_tasks() = 0;
  // What the store alone knows about itself, for /metrics at scrape time.
  virtual std::vector<StoreMetric> metrics() { return {}; }
  // Queued tasks, best first (priority, then age), at most `limit`.
  virtual std::vector<std::string> queued_task_ids(int limit) = 0;
  // What a parked poll is matched on, for a task that is queued now; nullopt when it is not
  // (taken, cancelled, pruned). The whole task() is more than an offer needs to read.
  struct Queued {
    std::string type;
    std::map<std::string, std::string> labels;
  };
  virtual std::optional<Queued> queued_task(const std::string& task_id) {
    auto view = task(task_id);
    if (!view || view->state != wire::TaskState::kQueued) return std::nullopt;
    return Queued{view->type, view->labels};
  }

  // ---- several orchestrators on one database ----
  // A task another orchestrator made available; with what a parked poll is matched on when
  // the announcer knew it (a submit does), so that the hearer need not read it back.
  struct Announced {
    std::string task_id;
    std::optional<Queued> queued;
  };
  // Called on another thread when other orchestrators made tasks available: those tasks, or
  // none for "look at the whole queue" (notifications may have been lost). Nothing for a store
  // only one orchestrator can use.
  using QueueListener = std::function<void(std::vector<Announced> tasks)>;
  virtual void listen_for_queue(QueueListener /*listener*/) {}
  // After the commit: tells the other orchestrators that this task waits for a worker that
  // none of this one's parked polls could give it to. `queued`: its type and labels, if known.
  virtual void announce_queued(const std::string& /*task_id*/, const Queued* /*queued*/) {}
  // The wake-ups between orchestrators so far, for /metrics; nullopt for a store that one
  // orchestrator has to itself.
  struct SignalCounts {
    std::uint64_t sent = 0;      // notifications sent to the other orchestrators
    std::uint64_t received = 0;  // notifications heard from them
    std::uint64_t skipped = 0;   // announcements not sent: no other orchestrator listened
  };
  [[nodiscard]] virtual std::optional<SignalCounts> signal_counts() const { return std::nullopt; }

  // ---- audit trail ----
  // The records `query` asks for, ascending by sequence number.
  virtual std::vector<wire::AuditRecord> audit(const AuditQuery& query) = 0;

 private:
  Actor actor_;
};

}  // namespace tamma::orchestrator
