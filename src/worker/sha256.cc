#include "worker/sha256.h"

#include <dlfcn.h>
#include <openssl/evp.h>

#include <fmt/format.h>

#include "common/error.h"

namespace tamma::worker {
namespace {

struct CryptoLibrary {
  decltype(&::EVP_MD_CTX_new) md_ctx_new;
  decltype(&::EVP_MD_CTX_free) md_ctx_free;
  decltype(&::EVP_sha256) sha256;
  decltype(&::EVP_DigestInit_ex) digest_init;
  decltype(&::EVP_DigestUpdate) digest_update;
  decltype(&::EVP_DigestFinal_ex) digest_final;
};

CryptoLibrary load() {
  // RTLD_LOCAL: its symbols stay out of the global scope; RTLD_NOW: a missing function fails
  // here, not in the middle of a digest.
  void* handle = ::dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    throw Error(ErrorKind::kInfrastructure, "libcrypto_missing",
                std::string("cannot load libcrypto (install libssl3): ") +
                    (why != nullptr ? why : "unknown error"));
  }
  auto get = [handle](auto& slot, const char* name) {
    void* symbol = ::dlsym(handle, name);
    if (symbol == nullptr) {
      throw Error(ErrorKind::kInfrastructure, "libcrypto_missing",
                  std::string("libcrypto.so.3 lacks ") + name);
    }
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(symbol);
  };
  CryptoLibrary lib{};
  get(lib.md_ctx_new, "EVP_MD_CTX_new");
  get(lib.md_ctx_free, "EVP_MD_CTX_free");
  get(lib.sha256, "EVP_sha256");
  get(lib.digest_init, "EVP_DigestInit_ex");
  get(lib.digest_update, "EVP_DigestUpdate");
  get(lib.digest_final, "EVP_DigestFinal_ex");
  return lib;  // the handle stays open for the life of the process
}

const CryptoLibrary& crypto() {
  static const CryptoLibrary lib = load();  // once, thread-safely
  return lib;
}

}  // namespace

struct Sha256::Context {
  EVP_MD_CTX* md = nullptr;
};

Sha256::Sha256() : ctx_(std::make_unique<Context>()) {
  const CryptoLibrary& lib = crypto();
  ctx_->md = lib.md_ctx_new();
  if (ctx_->md == nullptr || lib.digest_init(ctx_->md, lib.sha256(), nullptr) != 1) {
    throw Error(ErrorKind::kInfrastructure, "sha256_failed", "cannot start a SHA-256 digest");
  }
}

Sha256::~Sha256() {
  if (ctx_->md != nullptr) crypto().md_ctx_free(ctx_->md);
}

void Sha256::update(const void* data, std::size_t size) {
  if (crypto().digest_update(ctx_->md, data, size) != 1) {
    throw Error(ErrorKind::kInfrastructure, "sha256_failed", "SHA-256 digest update failed");
  }
}

std::string Sha256::hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (crypto().digest_final(ctx_->md, digest, &length) != 1) {
    throw Error(ErrorKind::kInfrastructure, "sha256_failed", "SHA-256 digest failed");
  }
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

}  // namespace tamma::worker
