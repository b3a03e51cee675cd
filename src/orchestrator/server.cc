#include "orchestrator/server.h"

#include <sys/resource.h>

#include <cstdlib>

#include <future>

#include <spdlog/spdlog.h>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/error.hpp>

#include "common/error.h"
#include "orchestrator/store/postgres.h"
#include "orchestrator/store/postgres_store.h"

namespace tamma::orchestrator {
namespace {

namespace beast = boost::beast;

// Runs `fn` on the core thread and waits for it: setup and teardown touch core-only state.
template <typename Fn>
void on_core(asio::io_context& core, Fn fn) {
  std::promise<void> done;
  asio::post(core, [&] {
    try {
      fn();
      done.set_value();
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  done.get_future().get();
}

// The server's TLS context, or null for plain HTTP (warned about off loopback: tokens would
// cross the network in the clear).
std::shared_ptr<asio::ssl::context> tls_context(const ServerConfig& config) {
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    throw Error(ErrorKind::kConfig, "invalid_tls",
                "--tls-cert and --tls-key go together: give both or neither");
  }
  if (config.tls_cert.empty()) {
    beast::error_code ec;
    auto address = asio::ip::make_address(config.listen_host, ec);
    if (ec || !address.is_loopback()) {
      spdlog::warn(
          "serving plain HTTP on {}: bearer tokens and task data cross the network unencrypted; "
          "give --tls-cert and --tls-key, or put a TLS proxy in front",
          config.listen_host);
    }
    return nullptr;
  }
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  beast::error_code ec;
  context->use_certificate_chain_file(config.tls_cert.string(), ec);
  if (ec) {
    throw Error(ErrorKind::kConfig, "invalid_tls",
                "--tls-cert " + config.tls_cert.string() + ": " + ec.message());
  }
  context->use_private_key_file(config.tls_key.string(), asio::ssl::context::pem, ec);
  if (ec) {
    throw Error(ErrorKind::kConfig, "invalid_tls",
                "--tls-key " + config.tls_key.string() + ": " + ec.message());
  }
  return context;
}

}  // namespace

std::uint64_t raise_open_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) throw_errno("getrlimit(RLIMIT_NOFILE)");
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) throw_errno("setrlimit(RLIMIT_NOFILE)");
  }
  return limit.rlim_cur;
}

Server::Server(ServerConfig config, std::ostream& announce) : config_(std::move(config)) {
  if (config_.data_dir.empty()) {
    if (!config_.postgres_conninfo.empty()) {
      // PostgreSQL keeps the artifacts; the data directory only stages uploads, so a private
      // one in $TMPDIR will do, removed when the server goes.
      const char* tmp = std::getenv("TMPDIR");
      std::string pattern =
          std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tamma-orchestrator-XXXXXX";
      if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
      temporary_data_dir_ = pattern;
      config_.data_dir = temporary_data_dir_;
    } else {
      config_.data_dir = config_.db_path.parent_path() / "tamma-data";
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir / "uploads", ec);
  if (ec) {
    throw Error(ErrorKind::kConfig, "data_dir_unusable",
                "cannot create " + (config_.data_dir / "uploads").string() + ": " + ec.message());
  }
  // Uploads a crash interrupted are never going to be claimed.
  for (const auto& entry : std::filesystem::directory_iterator(config_.data_dir / "uploads")) {
    std::filesystem::remove(entry.path(), ec);
  }
  if (config_.postgres_conninfo.empty()) {
    store_ =
        std::make_unique<SqliteStore>(config_.db_path, config_.sync, config_.data_dir / "artifacts",
                                      config_.sqlite_checkpoint_pages);
  } else {
    store_ = std::make_unique<PostgresStore>(config_.postgres_conninfo);
  }
  SharedTokens tokens =
      bootstrap_tokens(*store_, config_.admin_token, config_.registration_token, announce);
  // The workers holding these leases could not renew them while this process was down; they
  // get one lease TTL to come back (their heartbeats retry well within it) before the reaper
  // judges them, so a restart does not re-run every task that was running across it.
  if (int held = store_->extend_leases(config_.lease_ttl); held > 0) {
    spdlog::info(
        "{} lease(s) held across the restart: each runs at least one lease TTL ({} ms) "
        "from now",
        held, config_.lease_ttl.count());
  }
  core_ = std::make_unique<Core>(config_, *store_, metrics_, std::move(tokens), core_io_);
  // Tasks other orchestrators on the same database made available reach the polls parked here.
  store_->listen_for_queue([this](std::vector<Store::Announced> tasks) {
    // Posted, not waited for: this runs on the signal's thread, which must never block on a
    // core thread that is stopping.
    asio::post(core_io_, [this, tasks = std::move(tasks)] {
      try {
        core_->offer_announced(tasks);
      } catch (const std::exception& e) {
        spdlog::warn("tasks announced by another orchestrator not offered: {}", e.what());
      }
    });
  });
  add_health_routes(router_, *core_);
  add_worker_routes(router_, *core_);
  add_task_routes(router_, *core_);
  add_admin_routes(router_, *core_);
  add_audit_routes(router_, *core_);
  HttpServerOptions options;
  options.host = config_.listen_host;
  options.port = config_.listen_port;
  options.max_small_body = config_.max_json_body;
  options.max_upload_body = config_.max_artifact_body;
  options.upload_dir = config_.data_dir / "uploads";
  options.idle_timeout = config_.idle_timeout;
  options.observe_answer = config_.observe_answer;
  options.header_timeout = config_.header_timeout;
  options.max_connections = config_.max_connections;
  options.tls = tls_context(config_);
  options.authenticate = [core = core_.get()](Access access, const std::string& authorization) {
    return core->authenticate(access, authorization);
  };
  options.recently_authenticated = [core = core_.get()](Access access,
                                                        const std::string& authorization) {
    return core->recently_authenticated(access, authorization);
  };
  // With no I/O threads the sessions live on the core's io_context: a post between a session
  // and the core then queues on the one thread instead of waking another.
  http_ = std::make_unique<HttpServer>(config_.io_threads <= 0 ? core_io_ : io_, core_io_, router_,
                                       metrics_, options);
  reaper_ = std::make_unique<LeaseReaper>(*core_);
}

Server::~Server() {
  try {
    shutdown();
  } catch (const std::exception& e) {
    spdlog::error("orchestrator shutdown: {}", e.what());
  }
  if (!temporary_data_dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(temporary_data_dir_, ignored);
  }
}

void Server::start() {
  http_->start();
  core_work_.emplace(core_io_.get_executor());
  io_work_.emplace(io_.get_executor());
  core_thread_ = std::thread([this] { core_io_.run(); });
  on_core(core_io_, [this] { reaper_->start(); });
  for (int i = 0; i < config_.io_threads; ++i) {
    io_threads_.emplace_back([this] { io_.run(); });
  }
  running_ = true;
  spdlog::info("orchestrator listening on {}:{} (database {}, lease TTL {} ms, poll timeout {} ms)",
               config_.listen_host, http_->port(),
               config_.postgres_conninfo.empty() ? config_.db_path.string()
                                                 : conninfo_display(config_.postgres_conninfo),
               config_.lease_ttl.count(), config_.poll_timeout.count());
}

std::uint16_t Server::port() const { return http_->port(); }

void Server::shutdown(std::chrono::milliseconds grace) {
  if (!running_) return;
  running_ = false;
  http_->stop_accepting();
  on_core(core_io_, [this] {
    core_->shutting_down = true;
    reaper_->stop();
    core_->drain_waiters();
  });
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (http_->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (http_->in_flight() > 0) {
    spdlog::warn("{} request(s) still unanswered after the shutdown grace period",
                 http_->in_flight());
  }
  io_work_.reset();
  io_.stop();
  for (auto& t : io_threads_) t.join();
  io_threads_.clear();
  core_work_.reset();
  core_io_.stop();
  core_thread_.join();
  store_.reset();
  spdlog::info("orchestrator stopped");
}

}  // namespace tamma::orchestrator
