#include "worker/output_capture.h"

#include <fmt/format.h>

namespace tamma::worker {

OutputCapture::OutputCapture(const SecretMasker& masker, std::uint64_t keep_bytes,
                             Sink live_sink)
    : masker_(masker), keep_bytes_(keep_bytes), sink_(std::move(live_sink)) {}

void OutputCapture::append(std::string_view raw) {
  total_ += raw.size();
  std::string masked = masker_.feed(raw);
  if (masked.empty()) return;
  if (sink_) sink_(masked);
  keep(masked);
}

void OutputCapture::finish() {
  std::string masked = masker_.finish();
  if (masked.empty()) return;
  if (sink_) sink_(masked);
  keep(masked);
}

void OutputCapture::keep(std::string_view masked) {
  const std::size_t head_cap = keep_bytes_ - keep_bytes_ / 2;
  const std::size_t tail_cap = keep_bytes_ / 2;
  if (head_.size() < head_cap) {
    std::size_t take = std::min(head_cap - head_.size(), masked.size());
    head_.append(masked.substr(0, take));
    masked.remove_prefix(take);
  }
  if (masked.empty()) return;
  if (tail_cap == 0) {
    dropped_ += masked.size();
    return;
  }
  // Bytes pushed out of the tail window are the dropped ones.
  for (char c : masked) {
    if (tail_.size() < tail_cap) {
      tail_.push_back(c);
    } else {
      tail_[tail_start_] = c;
      tail_start_ = (tail_start_ + 1) % tail_cap;
      tail_wrapped_ = true;
      ++dropped_;
    }
  }
}

protocol::OutputCapture OutputCapture::result() const {
  protocol::OutputCapture out;
  out.total_bytes = total_;
  out.dropped_bytes = dropped_;
  out.text = head_;
  if (dropped_ > 0) {
    out.text += fmt::format("\n[... {} bytes of output dropped: over the {}-byte limit ...]\n",
                            dropped_, keep_bytes_);
  }
  if (tail_wrapped_) {
    out.text.append(tail_, tail_start_, std::string::npos);
    out.text.append(tail_, 0, tail_start_);
  } else {
    out.text += tail_;
  }
  return out;
}

}  // namespace tamma::worker
