#pragma once
// Cross-replica wake-up on PostgreSQL: when one orchestrator makes a task available that none
// of its own parked polls took, the others hear of it within milliseconds (LISTEN/NOTIFY on
// channel "tamma_queue") and offer it to theirs; SKIP LOCKED lets exactly one of them have it.
//
// Its own connection and thread, off the core thread:
// - NOTIFY never runs inside the enqueue transaction: at commit it takes a lock shared by the
//   whole cluster, which would serialize every submit of every replica behind it. Ids are
//   queued here instead and sent after, several per NOTIFY while one is on its way (debounce).
// - A notification can be lost (the listening connection dropped and was made again, or the
//   payload overflowed): the listener is then told to look at the whole queue, and the core's
//   fallback sweep covers the rest.
// - PgBouncer in transaction mode breaks LISTEN: this connection must reach PostgreSQL directly
//   (docs/scale-out.md).

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "orchestrator/store/store.h"

namespace tamma::orchestrator {

class PgQueueSignal {
 public:
  // Called on the signal's thread with the tasks another orchestrator announced; empty: look
  // at the whole queue (notifications may have been lost).
  using Listener = Store::QueueListener;

  PgQueueSignal(std::string conninfo, Listener listener);
  ~PgQueueSignal();
  PgQueueSignal(const PgQueueSignal&) = delete;
  PgQueueSignal& operator=(const PgQueueSignal&) = delete;

  // Thread-safe, never blocks: the task goes out with the next NOTIFY, with its type and
  // labels when given (the hearer then offers it without reading it back).
  void announce(const std::string& task_id, const Store::Queued* queued);

  // Notifications sent and received so far, and announcements not sent because no other
  // orchestrator listened (metrics, tests).
  [[nodiscard]] std::uint64_t sent() const { return sent_.load(); }
  [[nodiscard]] std::uint64_t received() const { return received_.load(); }
  [[nodiscard]] std::uint64_t skipped() const { return skipped_.load(); }

 private:
  void run();

  std::string conninfo_;
  Listener listener_;
  std::mutex mutex_;
  std::map<std::string, std::string> pending_;  // task id -> its entry in the payload
  std::size_t pending_bytes_ = 0;
  bool overflowed_ = false;
  int wake_fd_ = -1;  // eventfd: announce() and the destructor wake the thread
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> skipped_{0};
  int others_ = -1;  // other orchestrators listening, as last read; -1: unknown (send)
  std::thread thread_;
};

// The NOTIFY payload: a JSON array whose elements are a task id, or [id, type, {labels}] when
// the type and labels are known. decode_announcement also reads the comma-separated ids that
// earlier versions sent (a rolling upgrade); nullopt for anything else, or more than
// PostgreSQL's 8000 bytes, more than 256 tasks, or nesting deeper than the format's: the
// hearer then looks at the whole queue.
std::string encode_announcement(const std::string& task_id, const Store::Queued* queued);
std::optional<std::vector<Store::Announced>> decode_announcement(std::string_view payload);

}  // namespace tamma::orchestrator
