#pragma once
// Task output on its way to the orchestrator: buffered as the task writes it (never blocking
// the task on the network), then appended by byte offset in pieces. The orchestrator's answer
// says how much of the log it holds; a mismatch or a gap moves the next append to that length,
// so a lost answer or a retried request never duplicates or loses output.

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>

#include "worker/orchestrator_client.h"
#include "worker/output_spool.h"

namespace tamma::worker {

// Where the output goes: the orchestrator's log endpoint for one attempt, or a test's fake.
class LogSink {
 public:
  virtual ~LogSink() = default;
  // Throws OrchestratorError (or Interrupted) when the append got no usable answer.
  virtual LogAppendAnswer append(std::uint64_t offset, std::string_view data) = 0;
};

struct LogShipperLimits {
  std::size_t flush_bytes = 1 << 20;          // this much buffered asks for a flush now
  std::size_t max_request_bytes = 1 << 20;    // per append (the orchestrator's body limit)
  std::size_t min_request_bytes = 4 << 10;    // 413 halves the piece size down to this
  std::size_t max_buffered_bytes = 64 << 20;  // unsent output beyond this is dropped, and said
  std::size_t retained_bytes = 1 << 20;       // acknowledged output kept to rewind into
  // Output waiting beyond this much memory goes to an unlinked file under spill_dir (none:
  // everything stays in memory, up to max_buffered_bytes).
  std::size_t memory_bytes = 4 << 20;
  std::filesystem::path spill_dir;
};

class LogShipper {
 public:
  explicit LogShipper(const LogShipperLimits& limits = {});

  // Called with the task's (masked) output. Returns true when enough is waiting that a flush
  // should start now rather than at the next tick.
  bool append(std::string_view data);

  // Sends everything buffered so far and returns once the orchestrator holds it. Throws the
  // sink's error when an append fails; what was not acknowledged stays buffered for the next
  // call. Not to be called from two threads at once.
  void flush(LogSink& sink);

  // Stops shipping for good (the sink refused for a reason retrying cannot fix).
  void abandon(const std::string& reason);

  // The orchestrator says it holds only `length` bytes (it refused a result as early): the
  // next flush sends from there. False when those bytes are no longer kept (then shipping
  // stops, and what cannot be sent counts as dropped).
  bool rewind(std::uint64_t length);

  // Output the orchestrator acknowledged (its log length as last reported).
  [[nodiscard]] std::uint64_t acknowledged() const;
  // Output the task produced, including any dropped bytes' notice.
  [[nodiscard]] std::uint64_t produced() const;
  [[nodiscard]] std::uint64_t dropped_bytes() const;
  // Set when shipping stopped for good (log limit reached, the log cannot be rewound): the
  // reason, for the worker's own log. Further output is counted as dropped.
  [[nodiscard]] std::string stopped_reason() const;

 private:
  // Moves the next append to `length` (the orchestrator's view); false when impossible.
  bool move_to(std::uint64_t length);
  void stop(std::string reason);
  void note_drops();

  LogShipperLimits limits_;
  mutable std::mutex mutex_;
  OutputSpool buffer_;                 // bytes [base_, base_ + buffer_.size()) of the log
  std::uint64_t base_ = 0;             // log offset of buffer_[0]
  std::uint64_t next_ = 0;             // where the next append starts
  std::uint64_t acked_ = 0;            // the orchestrator's length, as last answered
  std::uint64_t dropped_ = 0;          // total, for the report
  std::uint64_t dropped_unnoted_ = 0;  // not yet said in the log itself
  std::size_t piece_;
  std::string stopped_;
};

}  // namespace tamma::worker
