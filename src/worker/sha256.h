#pragma once
// SHA-256 of artifacts, from libcrypto loaded the first time an artifact is hashed.
//
// Linked, libcrypto.so.3 (4.7 MB) cost every start of tamma-worker some 3 ms of mapping and
// relocation, a third of `tamma-worker --version` (issue 13), for a digest that only tasks
// with artifacts need. Loaded as libcurl is (curl_library.h): its SONAME, RTLD_LOCAL.

#include <cstddef>
#include <memory>
#include <string>

namespace tamma::worker {

class Sha256 {
 public:
  // Throws Error(kInfrastructure, "libcrypto_missing") naming what the loader said, or
  // "sha256_failed".
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t size);
  // The digest in lower-case hex; the object is spent after this.
  std::string hex();

 private:
  struct Context;
  std::unique_ptr<Context> ctx_;
};

}  // namespace tamma::worker
