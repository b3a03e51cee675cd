#include "worker/secret_masker.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/encoding.h"

namespace tamma::worker {
namespace {

std::string json_escape(std::string_view text) {
  std::string quoted = nlohmann::json(std::string(text)).dump();
  return quoted.substr(1, quoted.size() - 2);
}

}  // namespace

SecretMasker::SecretMasker(const std::vector<std::string>& secrets) {
  for (const auto& secret : secrets) {
    if (secret.empty()) continue;
    patterns_.push_back(secret);
    // Padding is dropped: inside a longer base64 text the secret's encoding has none.
    std::string b64 = base64_encode(secret);
    while (!b64.empty() && b64.back() == '=') b64.pop_back();
    // Very short secrets would turn their encodings into noise matches; the plain form stays.
    if (secret.size() >= 4) patterns_.push_back(b64);
    patterns_.push_back(url_encode(secret));
    patterns_.push_back(json_escape(secret));
  }
  std::sort(patterns_.begin(), patterns_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  patterns_.erase(std::unique(patterns_.begin(), patterns_.end()), patterns_.end());
  patterns_.erase(std::remove(patterns_.begin(), patterns_.end(), std::string()), patterns_.end());
  for (const auto& p : patterns_) first_bytes_.set(static_cast<unsigned char>(p.front()));
}

std::string SecretMasker::feed(std::string_view chunk) {
  if (patterns_.empty()) return std::string(chunk);
  pending_.append(chunk);
  return drain(false);
}

std::string SecretMasker::finish() {
  if (patterns_.empty()) return {};
  return drain(true);
}

std::string SecretMasker::drain(bool at_end) {
  std::string out;
  out.reserve(pending_.size());
  std::size_t i = 0;
  const std::size_t n = pending_.size();
  while (i < n) {
    if (!first_bytes_.test(static_cast<unsigned char>(pending_[i]))) {
      out.push_back(pending_[i++]);
      continue;
    }
    std::string_view rest(pending_.data() + i, n - i);
    bool matched = false;
    bool could_match_later = false;
    // Longest first: a longer secret that may still complete wins over a shorter one that
    // already matches, so no part of the longer one leaks.
    for (const auto& pattern : patterns_) {
      if (rest.size() >= pattern.size()) {
        if (rest.compare(0, pattern.size(), pattern) == 0) {
          out += kMaskText;
          i += pattern.size();
          matched = true;
          break;
        }
      } else if (!at_end && pattern.compare(0, rest.size(), rest) == 0) {
        could_match_later = true;
        break;
      }
    }
    if (matched) continue;
    if (could_match_later) break;  // hold the tail back until more arrives
    out.push_back(pending_[i++]);
  }
  pending_.erase(0, i);
  return out;
}

std::string SecretMasker::mask(std::string_view text) const {
  SecretMasker copy = *this;
  copy.pending_.clear();
  std::string out = copy.feed(text);
  out += copy.finish();
  return out;
}

}  // namespace tamma::worker
