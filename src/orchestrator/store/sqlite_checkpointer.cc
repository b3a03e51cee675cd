#include "orchestrator/store/sqlite_checkpointer.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <string>

namespace tamma::orchestrator {

// SQLite's own threshold for its automatic checkpoint, given back to the writer at the end.
constexpr int kSqliteDefaultAutocheckpoint = 1000;

SqliteCheckpointer::SqliteCheckpointer(sqlite3* writer, const std::filesystem::path& file,
                                       bool synchronous_full, int threshold_pages)
    : writer_(writer), own_(file), threshold_(threshold_pages < 1 ? 1 : threshold_pages) {
  // The checkpoint syncs the WAL before copying and the database file after, as the
  // connection that runs it is set: the writer's mode, so FULL stays FULL end to end.
  own_.exec(synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
  // Replaces (and so turns off) the automatic checkpoint of the writer's commits.
  ::sqlite3_wal_hook(writer_, &SqliteCheckpointer::on_commit, this);
  thread_ = std::thread([this] { loop(); });
}

SqliteCheckpointer::~SqliteCheckpointer() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
  // The writer outlives this object: its commits checkpoint themselves again, and its close
  // (the last connection once this one is gone) copies the WAL back and removes it.
  ::sqlite3_wal_hook(writer_, nullptr, nullptr);
  ::sqlite3_wal_autocheckpoint(writer_, kSqliteDefaultAutocheckpoint);
}

SqliteCheckpointer::Stats SqliteCheckpointer::stats() const {
  return {checkpoints_.load(std::memory_order_relaxed), catch_ups_.load(std::memory_order_relaxed),
          failures_.load(std::memory_order_relaxed), wal_pages_.load(std::memory_order_relaxed)};
}

SqliteCheckpointer::Action SqliteCheckpointer::after_commit(std::uint64_t before,
                                                            std::uint64_t pages) {
  const auto threshold = static_cast<std::uint64_t>(threshold_);
  if (pages < before) {
    // The WAL started over: what the passes copied was of the old one.
    ++restarts_;
    copied_ = 0;
    asked_at_ = 0;
    woken_at_ = 0;
  }
  const std::uint64_t uncopied = pages > copied_ ? pages - copied_ : 0;
  // asked_at_ moves when a catch-up succeeded (on_commit): a busy one is tried again at the
  // next commit.
  if (pages >= threshold * kHardCapFactor) {
    // No more passes: the one under way ends, and the next commit's catch-up is not busy.
    return pages >= asked_at_ + threshold ? Action::kCatchUp : Action::kNothing;
  }
  if (pages >= threshold * kCatchUpFactor && uncopied <= threshold / 2 && pages > asked_at_) {
    return Action::kCatchUp;
  }
  if (uncopied >= threshold && pages >= woken_at_ + threshold && !wanted_) {
    woken_at_ = pages;
    wanted_ = true;
    return Action::kWake;
  }
  return Action::kNothing;
}

// On the writer's thread, after each commit, with the WAL's size in pages: no I/O here but in
// a catch-up.
int SqliteCheckpointer::on_commit(void* self, sqlite3* db, const char* name, int pages) {
  auto* me = static_cast<SqliteCheckpointer*>(self);
  const auto count = static_cast<std::uint64_t>(pages < 0 ? 0 : pages);
  const std::uint64_t before = me->wal_pages_.exchange(count, std::memory_order_relaxed);
  Action action;
  {
    std::lock_guard lock(me->mutex_);
    action = me->after_commit(before, count);
  }
  if (action == Action::kWake) {
    me->wake_.notify_one();
  } else if (action == Action::kCatchUp) {
    // As SQLite's own hook does, from inside the hook. SQLITE_BUSY: the thread is copying
    // right now, and the next commit tries again. The commit stands whatever happens here.
    int wal_frames = 0;
    int copied = 0;
    if (::sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &wal_frames, &copied) ==
        SQLITE_OK) {
      me->catch_ups_.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lock(me->mutex_);
      me->copied_ = std::max(me->copied_, static_cast<std::uint64_t>(copied));
      me->asked_at_ = count;
    }
  }
  // Anything else would fail the statement that committed (its commit stands regardless).
  return SQLITE_OK;
}

void SqliteCheckpointer::loop() {
  bool failing = false;
  for (;;) {
    std::uint64_t restarts = 0;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return wanted_ || stop_; });
      if (stop_) return;
      wanted_ = false;
      restarts = restarts_;
    }
    // PASSIVE: copies what no reader still needs, without waiting for a lock, and never
    // blocks the writer. A WAL a long reader pins is copied by a later attempt.
    int wal_frames = 0;
    int copied = 0;
    const int rc = ::sqlite3_wal_checkpoint_v2(own_.handle(), "main", SQLITE_CHECKPOINT_PASSIVE,
                                               &wal_frames, &copied);
    if (rc == SQLITE_OK) {
      checkpoints_.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard lock(mutex_);
        // Of this WAL only: one that started over meanwhile has copied nothing yet.
        if (restarts == restarts_) copied_ = std::max(copied_, static_cast<std::uint64_t>(copied));
      }
      if (failing) spdlog::info("database: checkpoints work again");
      failing = false;
    } else if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
      // Another connection is checkpointing (a commit catching up, an admin's, the writer
      // closing): its work.
    } else {
      failures_.fetch_add(1, std::memory_order_relaxed);
      // Nothing is lost (the WAL keeps every commit); once per streak, not per commit.
      if (!failing) {
        spdlog::warn("database: checkpoint failed ({}); the WAL grows until one succeeds",
                     ::sqlite3_errmsg(own_.handle()));
      }
      failing = true;
    }
  }
}

}  // namespace tamma::orchestrator
