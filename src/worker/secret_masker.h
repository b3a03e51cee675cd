#pragma once
// Replaces secrets in a byte stream with "[MASKED]", even when a secret is split across reads.

#include <bitset>
#include <string>
#include <string_view>
#include <vector>

namespace tamma::worker {

inline constexpr std::string_view kMaskText = "[MASKED]";

class SecretMasker {
 public:
  // Each secret is masked as given and in the encoded forms in which tools print it back:
  // base64, URL-encoded and JSON-escaped (as the GitHub Actions runner does).
  explicit SecretMasker(const std::vector<std::string>& secrets);

  // Feeds a chunk; returns the text that is safe to emit now. A tail that could still
  // become a secret is held back until the next chunk or finish().
  std::string feed(std::string_view chunk);
  // Flushes what is held back: the stream has ended.
  std::string finish();
  // Masks a complete text in one call.
  [[nodiscard]] std::string mask(std::string_view text) const;

  [[nodiscard]] bool empty() const { return patterns_.empty(); }

 private:
  // Emits from pending_ up to where a secret might still be starting.
  std::string drain(bool at_end);

  std::vector<std::string> patterns_;  // longest first, so the longest match wins
  std::bitset<256> first_bytes_;
  std::string pending_;
};

}  // namespace tamma::worker
