#pragma once
// A liveness endpoint for process supervisors: GET /health on a loopback (or chosen) address,
// served by its own thread so that it answers even while every slot is busy.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace tamma::worker {

struct HealthAnswer {
  unsigned status = 200;
  std::string body;  // JSON
};

class HealthServer {
 public:
  // Listens on `listen` (HOST:PORT, [V6]:PORT; port 0 picks a free one) before returning;
  // throws Error(kConfig) for a malformed address, Error(kInfrastructure) when it cannot bind.
  HealthServer(const std::string& listen, std::function<HealthAnswer()> health);
  ~HealthServer();
  HealthServer(const HealthServer&) = delete;
  HealthServer& operator=(const HealthServer&) = delete;

  [[nodiscard]] std::uint16_t port() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tamma::worker
