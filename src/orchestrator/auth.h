#pragma once
// Bearer tokens: the admin token, the registration token that buys a worker its own token, and
// the per-worker tokens. Only SHA-256 hashes are kept (in memory and in the database); every
// comparison is constant-time; no token is ever logged.

#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>

namespace tamma::orchestrator {

class Store;

// 32 random bytes from the OpenSSL CSPRNG, hex-encoded (64 characters).
std::string random_token();
// `bytes` random bytes, hex-encoded: identifiers that must not be guessable (lease ids).
std::string random_hex(std::size_t bytes);
std::string sha256_hex(std::string_view data);
bool constant_time_equal(std::string_view a, std::string_view b);

// The token of an "Authorization: Bearer <token>" header; nullopt when absent or malformed.
std::optional<std::string> bearer_token(std::string_view authorization);

// Hashes of the two shared tokens.
struct SharedTokens {
  std::string admin_hash;
  std::string registration_hash;
};

// Takes each token from `admin` / `registration` (the environment) when given; otherwise from
// the hash persisted in the store; otherwise generates one, prints it ONCE on `announce` and
// persists its hash, so a restart keeps it valid.
SharedTokens bootstrap_tokens(Store& store, const std::optional<std::string>& admin,
                              const std::optional<std::string>& registration,
                              std::ostream& announce);

}  // namespace tamma::orchestrator
