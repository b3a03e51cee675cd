#pragma once
// One orchestrator: the store, the core thread that owns it, the HTTP server on its I/O threads
// and the lease reaper, started and stopped together.

#include <iosfwd>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "orchestrator/config.h"
#include "orchestrator/core.h"
#include "orchestrator/http_server.h"
#include "orchestrator/lease_reaper.h"
#include "orchestrator/metrics.h"
#include "orchestrator/router.h"
#include "orchestrator/store/sqlite_store.h"

namespace tamma::orchestrator {

class Server {
 public:
  // Opens (creating) the database and resolves the tokens; a generated token is printed once
  // on `announce`.
  Server(ServerConfig config, std::ostream& announce);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the threads; throws Error(kConfig) when the address is taken.
  void start();
  [[nodiscard]] std::uint16_t port() const;
  // Stops accepting, answers parked polls with 204, lets answers in flight finish (up to
  // `grace`), then stops the threads and closes the database. Idempotent.
  void shutdown(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  using WorkGuard = asio::executor_work_guard<asio::io_context::executor_type>;

  ServerConfig config_;
  // The data directory made for a PostgreSQL store given none (uploads staged only), removed
  // with the server.
  std::filesystem::path temporary_data_dir_;
  std::unique_ptr<Store> store_;
  Metrics metrics_;
  asio::io_context core_io_{1};
  asio::io_context io_;
  std::optional<WorkGuard> core_work_;
  std::optional<WorkGuard> io_work_;
  std::unique_ptr<Core> core_;
  Router router_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<LeaseReaper> reaper_;
  std::thread core_thread_;
  std::vector<std::thread> io_threads_;
  bool running_ = false;
};

// Raises the soft RLIMIT_NOFILE to the hard limit: every held long-poll is a descriptor.
// Returns the new soft limit.
std::uint64_t raise_open_file_limit();

}  // namespace tamma::orchestrator
