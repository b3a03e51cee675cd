#pragma once
// One output stream of a step: masked, forwarded live, and kept within a cap.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "protocol/task_result.h"
#include "worker/secret_masker.h"

namespace tamma::worker {

class OutputCapture {
 public:
  using Sink = std::function<void(std::string_view masked)>;

  // Keeps at most `keep_bytes`: the first half and the last half of the stream, with a
  // line saying how much was dropped in between (errors are usually at the end).
  OutputCapture(const SecretMasker& masker, std::uint64_t keep_bytes, Sink live_sink);

  void append(std::string_view raw);
  // The stream ended; flushes what the masker held back.
  void finish();

  [[nodiscard]] std::uint64_t total_bytes() const { return total_; }
  [[nodiscard]] protocol::OutputCapture result() const;

 private:
  void keep(std::string_view masked);

  SecretMasker masker_;
  std::uint64_t keep_bytes_;
  Sink sink_;
  std::uint64_t total_ = 0;    // raw bytes written by the task
  std::uint64_t dropped_ = 0;  // masked bytes not kept
  std::string head_;
  std::string tail_;  // ring buffer of the last keep_bytes_/2 bytes once head_ is full
  std::size_t tail_start_ = 0;
  bool tail_wrapped_ = false;
};

}  // namespace tamma::worker
