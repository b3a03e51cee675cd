#include "worker/log_shipper.h"

#include <algorithm>
#include <cstdint>

#include <fmt/format.h>

namespace tamma::worker {

LogShipper::LogShipper(const LogShipperLimits& limits)
    : limits_(limits),
      // Memory only: append() bounds what is unsent (max_buffered_bytes) by itself.
      buffer_(limits.spill_dir.empty() ? SIZE_MAX : limits.memory_bytes, limits.spill_dir),
      piece_(std::max<std::size_t>(limits.max_request_bytes, 1)) {}

bool LogShipper::append(std::string_view data) {
  std::lock_guard lock(mutex_);
  if (!stopped_.empty()) {
    dropped_ += data.size();
    return false;
  }
  const std::uint64_t end = base_ + buffer_.size();
  const std::uint64_t unsent = end - std::min(next_, end);
  if (unsent + data.size() > limits_.max_buffered_bytes) {
    // The orchestrator is not keeping up (or not there): keep the worker's memory bounded and
    // say in the log how much is missing, once there is room again.
    dropped_ += data.size();
    dropped_unnoted_ += data.size();
    return true;
  }
  note_drops();
  if (!buffer_.append(data)) {
    dropped_ += data.size();
    dropped_unnoted_ += data.size();
    return true;
  }
  return unsent + data.size() >= limits_.flush_bytes;
}

void LogShipper::note_drops() {
  if (dropped_unnoted_ == 0) return;
  const bool kept = buffer_.append(fmt::format(
      "\n[tamma-worker: {} bytes of output were dropped here: the orchestrator did not take them "
      "fast enough, or they could not be kept]\n",
      dropped_unnoted_));
  if (kept) dropped_unnoted_ = 0;
}

void LogShipper::stop(std::string reason) {
  stopped_ = std::move(reason);
  dropped_ += (base_ + buffer_.size()) - std::min(next_, base_ + buffer_.size());
  buffer_.clear();
  base_ = next_;
}

bool LogShipper::move_to(std::uint64_t length) {
  const std::uint64_t end = base_ + buffer_.size();
  if (length > end) {
    stop(fmt::format("the orchestrator holds {} bytes of this attempt's log but the task wrote {}",
                     length, end));
    return false;
  }
  if (length < base_) {
    stop(
        fmt::format("the orchestrator holds only {} bytes of this attempt's log and the bytes "
                    "from there are no longer kept (from {})",
                    length, base_));
    return false;
  }
  next_ = length;
  acked_ = length;
  // Keep a little of what was acknowledged: an orchestrator restored from an older state may
  // ask for it again.
  const std::uint64_t keep_from =
      length > limits_.retained_bytes ? length - limits_.retained_bytes : 0;
  if (keep_from > base_) {
    buffer_.drop_front(keep_from - base_);
    base_ = keep_from;
  }
  return true;
}

void LogShipper::flush(LogSink& sink) {
  std::unique_lock lock(mutex_);
  note_drops();
  int rewinds_without_progress = 0;
  while (stopped_.empty() && next_ < base_ + buffer_.size()) {
    const std::uint64_t offset = next_;
    const std::size_t size = std::min<std::uint64_t>(piece_, base_ + buffer_.size() - offset);
    std::string piece = buffer_.read(offset - base_, size);
    if (piece.empty()) {
      stop(fmt::format("the output kept at offset {} cannot be read back", offset));
      break;
    }
    lock.unlock();
    LogAppendAnswer answer = sink.append(offset, piece);
    lock.lock();
    switch (answer.kind) {
      case LogAppendAnswer::Kind::kAccepted:
        rewinds_without_progress = 0;
        move_to(answer.length);
        break;
      case LogAppendAnswer::Kind::kRewind:
        // A second rewind to the same place means the two sides disagree about the bytes
        // themselves; sending them again would loop forever.
        if (answer.length == offset && ++rewinds_without_progress > 2) {
          stop(fmt::format("the orchestrator keeps refusing the log at offset {}", offset));
          break;
        }
        move_to(answer.length);
        break;
      case LogAppendAnswer::Kind::kTooLarge:
        if (piece_ / 2 < limits_.min_request_bytes) {
          stop(fmt::format("the orchestrator refuses log appends of {} bytes", piece_));
          break;
        }
        piece_ /= 2;
        break;
    }
  }
}

void LogShipper::abandon(const std::string& reason) {
  std::lock_guard lock(mutex_);
  if (stopped_.empty()) stop(reason);
}

bool LogShipper::rewind(std::uint64_t length) {
  std::lock_guard lock(mutex_);
  if (!stopped_.empty()) return false;
  if (length < base_) {
    // What the orchestrator lacks is gone from here too: count it, keep going from its end.
    const std::uint64_t end = base_ + buffer_.size();
    stop(
        fmt::format("the orchestrator holds only {} bytes of this attempt's log and the bytes "
                    "from there are no longer kept (from {})",
                    length, base_));
    dropped_ += std::min(end, next_) - length;
    acked_ = length;
    return false;
  }
  return move_to(length);
}

std::uint64_t LogShipper::acknowledged() const {
  std::lock_guard lock(mutex_);
  return acked_;
}

std::uint64_t LogShipper::produced() const {
  std::lock_guard lock(mutex_);
  return std::max(base_ + buffer_.size(), next_);
}

std::uint64_t LogShipper::dropped_bytes() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

std::string LogShipper::stopped_reason() const {
  std::lock_guard lock(mutex_);
  return stopped_;
}

}  // namespace tamma::worker
