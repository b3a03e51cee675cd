// Artifact bytes in PostgreSQL (docs/adr/0027-artifacts-in-postgresql-and-retention.md): any
// replica serves any download, and no artifact is ever whole in an orchestrator's memory.
//
// Upload: the staged file is copied into artifact_chunks one chunk at a time, inside the
// transaction of the fenced artifact row, on the store's connection. A refused fence or any
// failure rolls it all back: no row, no chunk. A re-upload writes a new blob and removes the
// old one's chunks in the same transaction.
//
// Download: open_artifact() reads the row on the store's (core) thread; the bytes are read by
// one thread with its own connection (PgArtifactReads), one chunk per request, so the core
// thread never waits for them and a download holds at most the chunk being sent and the one
// being read. The first request checks every chunk against its digest and the total against
// the recorded size, on the server, before a byte is sent: a mismatch is 500 artifact_damaged.

#include <condition_variable>
#include <deque>
#include <fstream>
#include <mutex>
#include <thread>

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include "common/error.h"
#include "orchestrator/auth.h"
#include "orchestrator/store/audit_row.h"
#include "orchestrator/store/postgres.h"
#include "orchestrator/store/postgres_sql.h"
#include "orchestrator/store/postgres_store.h"
#include "orchestrator/store/task_row.h"

namespace tamma::orchestrator {

namespace {

// Bytes per row: large enough that a 64 MiB artifact is 128 round trips, small enough that a
// download holds little and one INSERT or SELECT stays well within the statement timeout.
constexpr std::size_t kArtifactChunk = 512 * 1024;
constexpr std::string_view kBlobPrefix = "postgres:";

std::string raw_sha256(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (::EVP_Digest(data.data(), data.size(), digest, &size, ::EVP_sha256(), nullptr) != 1) {
    throw Error(ErrorKind::kInfrastructure, "hash_failed", "SHA-256 failed");
  }
  return {reinterpret_cast<const char*>(digest), size};
}

Error damaged(const std::string& task_id, const std::string& name) {
  return Error(
      ErrorKind::kInfrastructure, "artifact_damaged",
      "task " + task_id + " artifact " + name + ": the stored bytes do not match its record");
}

// Why a fenced write matched no row: as postgres_store.cc's own diagnosis, read-only.
FenceOutcome diagnose_fence(PgConnection& db, const std::string& task_id,
                            const std::string& worker_id, int attempt) {
  FenceOutcome out;
  auto s = db.exec("SELECT state, attempt FROM tasks WHERE id = $1", {task_id});
  if (s.rows() == 0) {
    out.status = FenceStatus::kNotFound;
    return out;
  }
  out.state = state_of(s.text(0, 0));
  out.attempt = s.integer(0, 1);
  auto held = db.exec(
      "SELECT 1 FROM attempts WHERE task_id = $1 AND attempt = $2::integer AND worker_id = $3",
      {task_id, attempt, worker_id});
  out.status = held.rows() > 0 ? FenceStatus::kLeaseLost : FenceStatus::kForbidden;
  return out;
}

// Work for the reader thread: `run` with its connection, or `fail` with why it could not.
struct ReadJob {
  std::function<void(PgConnection&)> run;
  std::function<void(std::exception_ptr)> fail;
};

// The reader thread's queue; streams keep it alive after the store went, and are then refused.
struct ReadQueue {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<ReadJob> jobs;
  bool stopped = false;

  void submit(ReadJob job) {
    {
      std::lock_guard lock(mutex);
      if (!stopped) {
        jobs.push_back(std::move(job));
        wake.notify_one();
        return;
      }
    }
    job.fail(std::make_exception_ptr(Error(ErrorKind::kInfrastructure, "storage_unavailable",
                                           "the orchestrator is stopping", true)));
  }
};

}  // namespace

// One thread and one connection serving every download of this store, a chunk at a time: the
// downloads in progress take turns, and a slow client holds no connection.
class PgArtifactReads {
 public:
  explicit PgArtifactReads(std::string conninfo)
      : queue_(std::make_shared<ReadQueue>()),
        thread_([queue = queue_, conninfo = std::move(conninfo)] { serve(*queue, conninfo); }) {}
  ~PgArtifactReads() {
    {
      std::lock_guard lock(queue_->mutex);
      queue_->stopped = true;
    }
    queue_->wake.notify_all();
    thread_.join();
  }
  PgArtifactReads(const PgArtifactReads&) = delete;
  PgArtifactReads& operator=(const PgArtifactReads&) = delete;

  [[nodiscard]] const std::shared_ptr<ReadQueue>& queue() const { return queue_; }

 private:
  static void serve(ReadQueue& queue, const std::string& conninfo) {
    std::unique_ptr<PgConnection> db;
    for (;;) {
      ReadJob job;
      {
        std::unique_lock lock(queue.mutex);
        queue.wake.wait(lock, [&] { return queue.stopped || !queue.jobs.empty(); });
        if (queue.jobs.empty()) return;  // stopped, nothing left
        job = std::move(queue.jobs.front());
        queue.jobs.pop_front();
        if (queue.stopped) {
          lock.unlock();
          job.fail(std::make_exception_ptr(Error(ErrorKind::kInfrastructure, "storage_unavailable",
                                                 "the orchestrator is stopping", true)));
          continue;
        }
      }
      try {
        // Made at the first download, and again after the server dropped it (PgConnection
        // reconnects on the next use by itself).
        if (!db) db = std::make_unique<PgConnection>(conninfo);
        job.run(*db);
      } catch (...) {
        job.fail(std::current_exception());
      }
    }
  }

  std::shared_ptr<ReadQueue> queue_;
  std::thread thread_;
};

namespace {

// One download: chunk after chunk of one blob, checked first, digested as it goes.
class PgArtifactStream : public ArtifactStream,
                         public std::enable_shared_from_this<PgArtifactStream> {
 public:
  PgArtifactStream(std::shared_ptr<ReadQueue> queue, std::string task_id, std::string blob,
                   wire::ArtifactInfo info)
      : queue_(std::move(queue)),
        task_id_(std::move(task_id)),
        blob_(std::move(blob)),
        info_(std::move(info)),
        digest_(::EVP_MD_CTX_new(), ::EVP_MD_CTX_free) {
    ::EVP_DigestInit_ex(digest_.get(), ::EVP_sha256(), nullptr);
  }

  void next(Done done) override {
    auto shared_done = std::make_shared<Done>(std::move(done));
    queue_->submit({[self = shared_from_this(), shared_done](PgConnection& db) {
                      std::string piece = self->read(db);
                      (*shared_done)(std::move(piece), nullptr);
                    },
                    [shared_done](std::exception_ptr error) { (*shared_done)({}, error); }});
  }

 private:
  // On the reader thread.
  std::string read(PgConnection& db) {
    if (!checked_) {
      check(db);
      checked_ = true;
    }
    if (sent_ == info_.size) return {};
    auto r = db.exec_binary(
        "SELECT data FROM artifact_chunks WHERE task_id = $1 AND blob = $2 AND seq = $3::integer",
        {task_id_, blob_, seq_});
    if (r.rows() == 0) {
      // Replaced by a re-upload or pruned since the check: the client gets a cut answer, never
      // bytes of two uploads.
      throw Error(ErrorKind::kInfrastructure, "artifact_gone",
                  "task " + task_id_ + " artifact " + info_.name +
                      " was replaced or removed while it was being sent");
    }
    std::string piece = r.text(0, 0);
    if (piece.empty() || sent_ + piece.size() > info_.size) throw damaged(task_id_, info_.name);
    ::EVP_DigestUpdate(digest_.get(), piece.data(), piece.size());
    sent_ += piece.size();
    ++seq_;
    if (sent_ == info_.size) {
      // The last piece goes only when the whole matches the record's digest.
      unsigned char digest[EVP_MAX_MD_SIZE];
      unsigned int length = 0;
      ::EVP_DigestFinal_ex(digest_.get(), digest, &length);
      static constexpr char kDigits[] = "0123456789abcdef";
      std::string hex;
      for (unsigned int i = 0; i < length; ++i) {
        hex.push_back(kDigits[digest[i] >> 4]);
        hex.push_back(kDigits[digest[i] & 0xf]);
      }
      if (hex != info_.sha256) throw damaged(task_id_, info_.name);
    }
    return piece;
  }

  // Every chunk against its own digest, their count and total against the record: on the
  // server, without sending the bytes here.
  void check(PgConnection& db) {
    auto s = db.exec(
        "SELECT count(*), COALESCE(sum(octet_length(data)), 0)::bigint, "
        "COALESCE(max(seq), -1), COALESCE(bool_and(digest = sha256(data)), true) "
        "FROM artifact_chunks WHERE task_id = $1 AND blob = $2",
        {task_id_, blob_});
    const std::int64_t chunks = s.int64(0, 0);
    const auto total = static_cast<std::uint64_t>(s.int64(0, 1));
    const std::int64_t last = s.int64(0, 2);
    const bool digests = s.boolean(0, 3);
    if (total != info_.size || last + 1 != chunks || !digests) {
      spdlog::error(
          "task {} attempt {}: artifact {} is damaged in the database ({} of {} bytes in {} "
          "chunk(s), digests {})",
          task_id_, info_.attempt, info_.name, total, info_.size, chunks,
          digests ? "match" : "differ");
      throw damaged(task_id_, info_.name);
    }
  }

  std::shared_ptr<ReadQueue> queue_;
  std::string task_id_;
  std::string blob_;
  wire::ArtifactInfo info_;
  std::unique_ptr<EVP_MD_CTX, decltype(&::EVP_MD_CTX_free)> digest_;
  bool checked_ = false;
  std::uint64_t sent_ = 0;
  int seq_ = 0;
};

}  // namespace

FenceOutcome PostgresStore::put_artifact(const std::string& task_id, const std::string& worker_id,
                                         const wire::Fence& fence, const wire::ArtifactInfo& info,
                                         const std::filesystem::path& staged) {
  std::ifstream in(staged, std::ios::binary);
  if (!in) {
    throw Error(ErrorKind::kInfrastructure, "storage_unavailable",
                "cannot read the staged upload of artifact " + info.name, true);
  }
  PgTransaction tx(*db_);
  // The fence first: it locks the task's row, so two uploads of one task through two replicas
  // go one after the other, and a refused one has written nothing.
  auto s = db_->exec("UPDATE tasks SET " TAMMA_PG_ACK ", updated_at = " TAMMA_PG_NOW
                     " WHERE " TAMMA_PG_FENCE " RETURNING state, attempt",
                     {task_id, fence.attempt, fence.lease_id, worker_id});
  if (s.rows() == 0) return diagnose_fence(*db_, task_id, worker_id, fence.attempt);
  FenceOutcome out{FenceStatus::kOk, state_of(s.text(0, 0)), s.integer(0, 1)};
  const std::string blob = random_hex(12);
  std::string buffer(kArtifactChunk, '\0');
  std::uint64_t stored = 0;
  for (int seq = 0;; ++seq) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    if (got == 0) break;
    const std::string_view piece(buffer.data(), got);
    db_->exec(
        "INSERT INTO artifact_chunks (task_id, blob, seq, digest, data) "
        "VALUES ($1, $2, $3::integer, $4::bytea, $5::bytea)",
        {task_id, blob, seq, PgParam::bytes(raw_sha256(piece)), PgParam::bytes(piece)});
    stored += got;
  }
  if (in.bad() || stored != info.size) {
    throw Error(ErrorKind::kInfrastructure, "storage_unavailable",
                "the staged upload of artifact " + info.name + " could not be read whole", true);
  }
  auto previous = db_->exec(
      "SELECT path FROM artifacts WHERE task_id = $1 AND attempt = $2::integer AND name = $3",
      {task_id, fence.attempt, info.name});
  db_->exec(
      "INSERT INTO artifacts (task_id, attempt, name, size, sha256, path, created_at) "
      "VALUES ($1, $2::integer, $3, $4::bigint, $5, $6, " TAMMA_PG_NOW
      ") ON CONFLICT (task_id, attempt, name) DO UPDATE SET size = excluded.size, "
      "sha256 = excluded.sha256, path = excluded.path, created_at = excluded.created_at",
      {task_id, fence.attempt, info.name, static_cast<std::int64_t>(info.size), info.sha256,
       std::string(kBlobPrefix) + blob});
  if (previous.rows() > 0) {
    const std::string old = previous.text(0, 0);
    if (old.rfind(kBlobPrefix, 0) == 0) {
      db_->exec("DELETE FROM artifact_chunks WHERE task_id = $1 AND blob = $2",
                {task_id, old.substr(kBlobPrefix.size())});
    }
  }
  record(artifact_entry(task_id, out.attempt, worker_id, info));
  tx.commit();
  return out;
}

std::optional<ArtifactBytes> PostgresStore::open_artifact(const std::string& task_id, int attempt,
                                                          const std::string& name) {
  auto s = db_->exec(
      "SELECT size, sha256, path FROM artifacts WHERE task_id = $1 AND attempt = $2::integer "
      "AND name = $3",
      {task_id, attempt, name});
  if (s.rows() == 0) return std::nullopt;
  ArtifactBytes out;
  out.info = {name, attempt, static_cast<std::uint64_t>(s.int64(0, 0)), s.text(0, 1)};
  const std::string path = s.text(0, 2);
  if (path.rfind(kBlobPrefix, 0) != 0) {
    // Uploaded before the bytes moved into the database: a file under a data directory.
    std::error_code ec;
    const auto on_disk = std::filesystem::file_size(path, ec);
    if (ec || on_disk != out.info.size) throw damaged(task_id, name);
    out.file = path;
    return out;
  }
  if (!artifact_reads_) artifact_reads_ = std::make_shared<PgArtifactReads>(conninfo_);
  out.stream = std::make_shared<PgArtifactStream>(artifact_reads_->queue(), task_id,
                                                  path.substr(kBlobPrefix.size()), out.info);
  return out;
}

}  // namespace tamma::orchestrator
