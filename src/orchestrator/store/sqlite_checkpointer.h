#pragma once
// Copies the write-ahead log back into the database file on a thread of its own, so that no
// commit of the core thread waits for a checkpoint (docs/adr/0040-background-wal-checkpoints.md).
//
// SQLite's default is to checkpoint inside the commit that takes the WAL past 1000 pages: that
// commit, and every request queued behind it on the core thread, waits for the page copies and
// two fsyncs. Here the writer's commits only count the WAL's pages (sqlite3_wal_hook, which also
// turns the built-in automatic checkpoint off) and wake this thread, which checkpoints through a
// second connection to the same file. A PASSIVE checkpoint takes no lock a writer needs, and
// durability is untouched: a commit is durable once the WAL is synced, which the writer still
// does at every commit under synchronous=FULL.
//
// The WAL only starts again from its beginning (rather than growing, each commit then extending
// the file, whose fsync costs a journal commit more) when a write transaction begins with every
// frame copied, which a pass made beside a steady stream of commits never leaves. So this
// thread makes a pass each time the WAL has grown by the threshold since the last one, and a
// commit that finds the WAL at kCatchUpFactor thresholds with at most half a threshold uncopied
// copies them itself: a little, where SQLite's own checkpoint copies a whole threshold's worth.
// At kHardCapFactor thresholds (commits outpace the passes, a reader pins the WAL, the passes
// fail) the thread makes no more passes and commits catch up, every threshold's worth of growth
// (SQLite's own tries at every commit past its threshold).

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <thread>

#include "orchestrator/store/sqlite.h"

struct sqlite3;

namespace tamma::orchestrator {

class SqliteCheckpointer {
 public:
  // What /metrics shows (monotonic counters, and the WAL's size at the last commit).
  struct Stats {
    std::uint64_t checkpoints = 0;  // passes completed on this thread
    std::uint64_t catch_ups = 0;    // passes a commit ran itself (see above)
    std::uint64_t failures = 0;     // a checkpoint that ended with an error
    std::uint64_t wal_pages = 0;    // pages in the WAL after the writer's last commit
  };

  // `writer`: the core thread's connection, already in WAL mode; its commits are counted from
  // now on. `file`: the same database, opened again here. `synchronous_full`: the writer's mode,
  // which the checkpoint's own syncs follow. `threshold_pages`: the WAL size that asks for a
  // checkpoint (SQLite's automatic one uses 1000). Throws Error when the second connection
  // cannot be opened; the writer is then left as it was.
  SqliteCheckpointer(sqlite3* writer, const std::filesystem::path& file, bool synchronous_full,
                     int threshold_pages);
  // Stops the thread and closes its connection; the writer gets SQLite's automatic checkpoint
  // back, so that its own close still copies everything and removes the WAL.
  ~SqliteCheckpointer();
  SqliteCheckpointer(const SqliteCheckpointer&) = delete;
  SqliteCheckpointer& operator=(const SqliteCheckpointer&) = delete;

  [[nodiscard]] Stats stats() const;

  // WAL sizes, in thresholds, at which a commit copies what this thread left behind: when
  // little is left, and in any case.
  static constexpr int kCatchUpFactor = 4;
  static constexpr int kHardCapFactor = 8;

 private:
  static int on_commit(void* self, sqlite3* db, const char* name, int pages);
  // Under mutex_: what a commit that took the WAL from `before` to `pages` should do.
  enum class Action { kNothing, kWake, kCatchUp };
  Action after_commit(std::uint64_t before, std::uint64_t pages);
  void loop();

  sqlite3* writer_;
  SqliteDb own_;  // used by the thread only, once it has started
  const int threshold_;
  std::atomic<std::uint64_t> checkpoints_{0};
  std::atomic<std::uint64_t> catch_ups_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<std::uint64_t> wal_pages_{0};  // written by the writer's commits only
  std::mutex mutex_;
  std::condition_variable wake_;
  // Guarded by mutex_.
  bool wanted_ = false;
  bool stop_ = false;
  std::uint64_t restarts_ = 0;  // times the WAL started over, as commits saw it
  std::uint64_t copied_ = 0;    // frames copied since the WAL last started over
  std::uint64_t woken_at_ = 0;  // WAL size at the last wake-up of the thread
  std::uint64_t asked_at_ = 0;  // WAL size at the last catch-up that was not busy
  std::thread thread_;
};

}  // namespace tamma::orchestrator
