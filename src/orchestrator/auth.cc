#include "orchestrator/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <ostream>

#include "common/error.h"
#include "orchestrator/store/store.h"

namespace tamma::orchestrator {
namespace {

std::string hex(const unsigned char* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 0xf]);
  }
  return out;
}

// A token whose hash is persisted under `key`; generated and announced when neither the
// environment nor the database has one.
std::string resolve(Store& store, const std::string& key, const std::string& env_name,
                    const std::optional<std::string>& given, std::ostream& announce) {
  if (given) {
    if (given->size() < 16) {
      throw Error(ErrorKind::kConfig, "weak_token", env_name + " must have at least 16 characters");
    }
    return sha256_hex(*given);
  }
  if (auto stored = store.setting(key)) return *stored;
  std::string token = random_token();
  std::string hash = sha256_hex(token);
  store.put_setting(key, hash);
  announce << env_name << "=" << token << "\n" << std::flush;
  return hash;
}

}  // namespace

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  if (::RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    throw Error(ErrorKind::kInfrastructure, "random_failed",
                "the OpenSSL random generator could not produce bytes");
  }
  return hex(reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
}

std::string random_token() { return random_hex(32); }

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  // cppcheck-suppress invalidLifetime ; false positive: `data` is a parameter, alive here
  if (::EVP_Digest(data.data(), data.size(), digest, &size, ::EVP_sha256(), nullptr) != 1) {
    throw Error(ErrorKind::kInfrastructure, "hash_failed", "SHA-256 failed");
  }
  return hex(digest, size);
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Lengths are not secret (every hash has 64 characters); contents are.
  if (a.size() != b.size()) return false;
  return ::CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::optional<std::string> bearer_token(std::string_view authorization) {
  constexpr std::string_view kScheme = "Bearer ";
  if (authorization.size() <= kScheme.size()) return std::nullopt;
  // The scheme is case-insensitive (RFC 7235).
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kScheme[i]))) {
      return std::nullopt;
    }
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  return std::string(token);
}

SharedTokens bootstrap_tokens(Store& store, const std::optional<std::string>& admin,
                              const std::optional<std::string>& registration,
                              std::ostream& announce) {
  SharedTokens tokens;
  tokens.admin_hash = resolve(store, "admin_token_sha256", "TAMMA_ADMIN_TOKEN", admin, announce);
  tokens.registration_hash = resolve(store, "registration_token_sha256", "TAMMA_REGISTRATION_TOKEN",
                                     registration, announce);
  return tokens;
}

}  // namespace tamma::orchestrator
