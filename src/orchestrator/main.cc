// tamma-orchestrator: the task queue tamma-worker daemons lease work from (serve), and the
// admin commands that talk to it.

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "orchestrator/admin_cli.h"
#include "orchestrator/server.h"
#include "orchestrator/store/postgres.h"
#include "orchestrator/store/postgres_store.h"
#include "orchestrator/store/sqlite_store.h"

namespace {

using tamma::Error;
using tamma::ErrorKind;
namespace orch = tamma::orchestrator;

struct ServeArgs {
  std::string listen = "127.0.0.1:8080";
  std::string db;
  std::string data_dir;
  std::string tls_cert;
  std::string tls_key;
  std::string lease_ttl = "30s";
  std::string ack_timeout = "10s";
  std::string poll_timeout = "25s";
  std::string heartbeat_interval = "10s";
  std::string retry_base = "1s";
  std::string retry_max = "60s";
  std::string avoid_failed_host = "30s";
  std::string max_json_body = "1M";
  std::string max_artifact_body = "64M";
  std::string max_log_bytes = "64M";
  std::string synchronous = "full";
  int sqlite_checkpoint_pages = orch::SqliteStore::kCheckpointPages;
  std::string retain_finished = "30d";
  int threads = 2;
  std::string idle_timeout = "75s";
  std::string header_timeout = "10s";
  std::int64_t max_connections = 0;
  std::string log_level = "info";
  std::string log_format = "text";
};

std::chrono::milliseconds duration_flag(const std::string& flag, const std::string& text) {
  std::string error;
  auto d = tamma::parse_duration(text, &error);
  if (!d) throw Error(ErrorKind::kConfig, "invalid_flag", flag + ": " + error);
  return *d;
}

std::uint64_t size_flag(const std::string& flag, const std::string& text) {
  std::string error;
  auto s = tamma::parse_size(text, &error);
  if (!s) throw Error(ErrorKind::kConfig, "invalid_flag", flag + ": " + error);
  return *s;
}

// --retain-finished: "0" (keep forever), whole days ("7d"), or any duration ("36h").
std::chrono::milliseconds retention_flag(const std::string& text) {
  if (text == "0") return std::chrono::milliseconds(0);
  if (text.size() > 1 && text.back() == 'd' &&
      text.find_first_not_of("0123456789") == text.size() - 1 && text.size() <= 6) {
    return std::chrono::hours(24) * std::stoi(text.substr(0, text.size() - 1));
  }
  return duration_flag("--retain-finished", text);
}

// --db: a PostgreSQL connection string, or an SQLite file (sqlite:PATH, sqlite://PATH, PATH).
struct DatabaseTarget {
  std::string conninfo;               // set for PostgreSQL
  std::filesystem::path sqlite_file;  // set for SQLite
};

DatabaseTarget database_target(std::string db) {
  DatabaseTarget out;
  if (db.rfind("postgres://", 0) == 0 || db.rfind("postgresql://", 0) == 0 ||
      db.find('=') != std::string::npos) {
    orch::conninfo_display(db);  // refuses a string libpq cannot parse, before anything starts
    out.conninfo = std::move(db);
    return out;
  }
  if (db.rfind("sqlite://", 0) == 0) {
    db = db.substr(9);
  } else if (db.rfind("sqlite:", 0) == 0) {
    db = db.substr(7);
  } else if (db.find("://") != std::string::npos) {
    throw Error(ErrorKind::kConfig, "unsupported_database",
                "--db: sqlite:PATH or a PostgreSQL connection string (postgres://...)");
  }
  if (db.empty()) throw Error(ErrorKind::kConfig, "invalid_flag", "--db: a path is required");
  out.sqlite_file = std::filesystem::absolute(db);
  return out;
}

// `migrate`: brings the database's schema to this orchestrator's version and says what it
// did. `serve` does the same at start; this lets an operator do it before a rolling upgrade,
// once, with an account allowed to change the schema. Under PostgreSQL's advisory lock (and
// SQLite's write lock), so running it beside live orchestrators is safe.
int migrate(const std::string& db) {
  auto target = database_target(db);
  orch::SchemaVersions schema;
  std::string name;
  if (!target.conninfo.empty()) {
    orch::PostgresStore store(target.conninfo);
    schema = store.schema();
    name = orch::conninfo_display(target.conninfo);
  } else {
    if (!std::filesystem::exists(target.sqlite_file)) {
      throw Error(ErrorKind::kConfig, "database_missing",
                  "--db: no SQLite database at " + target.sqlite_file.string());
    }
    orch::SqliteStore store(target.sqlite_file, orch::SyncMode::kFull);
    schema = store.schema();
    name = target.sqlite_file.string();
  }
  if (schema.found == schema.now) {
    std::cout << name << ": schema version " << schema.now << ", already current" << std::endl;
  } else {
    std::cout << name << ": schema version " << schema.found << " -> " << schema.now << std::endl;
  }
  return orch::kCliOk;
}

// VAR, or the content of the file VAR_FILE names (for secrets mounted as files).
std::optional<std::string> secret_env(const std::string& name) {
  if (const char* v = std::getenv(name.c_str()); v != nullptr && *v != '\0') return std::string(v);
  if (const char* f = std::getenv((name + "_FILE").c_str()); f != nullptr && *f != '\0') {
    std::ifstream in(f);
    if (!in)
      throw Error(ErrorKind::kConfig, "unreadable_secret", "cannot read " + name + "_FILE " + f);
    std::string value;
    std::getline(in, value);
    return value;
  }
  return std::nullopt;
}

orch::ServerConfig server_config(const ServeArgs& a) {
  orch::ServerConfig c;
  auto colon = a.listen.rfind(':');
  if (colon == std::string::npos) {
    throw Error(ErrorKind::kConfig, "invalid_flag",
                "--listen: expected HOST:PORT, got " + a.listen);
  }
  c.listen_host = a.listen.substr(0, colon);
  if (c.listen_host.size() > 2 && c.listen_host.front() == '[') {
    c.listen_host = c.listen_host.substr(1, c.listen_host.size() - 2);
  }
  try {
    std::size_t used = 0;
    int port = std::stoi(a.listen.substr(colon + 1), &used);
    if (used != a.listen.size() - colon - 1 || port < 0 || port > 65535)
      throw std::out_of_range("port");
    c.listen_port = static_cast<std::uint16_t>(port);
  } catch (const std::exception&) {
    throw Error(ErrorKind::kConfig, "invalid_flag", "--listen: bad port in " + a.listen);
  }
  auto target = database_target(a.db);
  c.postgres_conninfo = std::move(target.conninfo);
  c.db_path = std::move(target.sqlite_file);
  if (!a.data_dir.empty()) c.data_dir = std::filesystem::absolute(a.data_dir);
  if (!a.tls_cert.empty()) c.tls_cert = std::filesystem::absolute(a.tls_cert);
  if (!a.tls_key.empty()) c.tls_key = std::filesystem::absolute(a.tls_key);
  c.lease_ttl = duration_flag("--lease-ttl", a.lease_ttl);
  c.ack_timeout = duration_flag("--ack-timeout", a.ack_timeout);
  c.poll_timeout = duration_flag("--poll-timeout", a.poll_timeout);
  c.heartbeat_interval = duration_flag("--heartbeat-interval", a.heartbeat_interval);
  c.retry_base = duration_flag("--retry-base", a.retry_base);
  c.retry_max = duration_flag("--retry-max", a.retry_max);
  c.avoid_failed_host = duration_flag("--avoid-failed-host", a.avoid_failed_host);
  if (c.heartbeat_interval >= c.lease_ttl) {
    throw Error(ErrorKind::kConfig, "invalid_flag",
                "--heartbeat-interval must be shorter than --lease-ttl, or every lease expires "
                "between two heartbeats");
  }
  c.max_json_body = size_flag("--max-json-body", a.max_json_body);
  c.max_artifact_body = size_flag("--max-artifact-body", a.max_artifact_body);
  c.max_log_bytes = size_flag("--max-log-bytes", a.max_log_bytes);
  c.retain_finished = retention_flag(a.retain_finished);
  c.sync = orch::sync_mode_from_string(a.synchronous);
  if (a.sqlite_checkpoint_pages < 0 || a.sqlite_checkpoint_pages > 1000000) {
    throw Error(ErrorKind::kConfig, "invalid_flag",
                "--sqlite-checkpoint-pages must be between 0 and 1000000");
  }
  c.sqlite_checkpoint_pages = a.sqlite_checkpoint_pages;
  if (a.threads < 0 || a.threads > 64) {
    throw Error(ErrorKind::kConfig, "invalid_flag", "--threads must be between 0 and 64");
  }
  c.io_threads = a.threads;
  c.idle_timeout = duration_flag("--idle-timeout", a.idle_timeout);
  c.header_timeout = duration_flag("--header-timeout", a.header_timeout);
  if (a.max_connections < 0) {
    throw Error(ErrorKind::kConfig, "invalid_flag", "--max-connections must not be negative");
  }
  c.max_connections = a.max_connections;
  c.admin_token = secret_env("TAMMA_ADMIN_TOKEN");
  c.registration_token = secret_env("TAMMA_REGISTRATION_TOKEN");
  return c;
}

int serve(const ServeArgs& args) {
  tamma::setup_logging(args.log_level, args.log_format);
  // Blocked before any thread starts, so every thread inherits the mask and sigwait below is
  // the only place these signals land.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto config = server_config(args);
  auto files = orch::raise_open_file_limit();
  spdlog::info("open file limit: {}", files);
  orch::Server server(config, std::cout);
  server.start();
  std::cout << "tamma-orchestrator listening on " << (config.tls_cert.empty() ? "http" : "https")
            << "://" << config.listen_host << ":" << server.port() << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: shutting down", sig);
  server.shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A client hanging up mid-answer must not kill the server.
  ::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"tamma-orchestrator: the task queue tamma-worker daemons lease work from"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tamma-orchestrator 0.1.0");

  ServeArgs serve_args;
  auto* serve_cmd = app.add_subcommand("serve", "run the orchestrator");
  serve_cmd->add_option("--listen", serve_args.listen, "HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  serve_cmd
      ->add_option("--db", serve_args.db,
                   "sqlite:/path/to/db.sqlite, or postgres://USER@HOST:PORT/DB (any libpq "
                   "connection string; several orchestrators may share one PostgreSQL)")
      ->envname("TAMMA_DB_URL")
      ->required();
  serve_cmd->add_option("--tls-cert", serve_args.tls_cert,
                        "PEM certificate (chain) to serve HTTPS with; needs --tls-key");
  serve_cmd->add_option("--tls-key", serve_args.tls_key, "PEM private key of --tls-cert");
  serve_cmd->add_option("--data-dir", serve_args.data_dir,
                        "artifacts and staged uploads (default: tamma-data next to the SQLite "
                        "file; with PostgreSQL, which keeps the artifacts, only staged uploads: "
                        "a private temporary directory by default)");
  serve_cmd
      ->add_option("--lease-ttl", serve_args.lease_ttl, "a lease not renewed for this long is lost")
      ->capture_default_str();
  serve_cmd
      ->add_option("--ack-timeout", serve_args.ack_timeout,
                   "an assignment the worker has not acknowledged within this is queued again "
                   "under the same attempt")
      ->capture_default_str();
  serve_cmd->add_option("--poll-timeout", serve_args.poll_timeout, "longest a poll is held")
      ->capture_default_str();
  serve_cmd
      ->add_option("--heartbeat-interval", serve_args.heartbeat_interval,
                   "what workers are told to use")
      ->capture_default_str();
  serve_cmd->add_option("--retry-base", serve_args.retry_base, "backoff min(base*2^n, max)")
      ->capture_default_str();
  serve_cmd->add_option("--retry-max", serve_args.retry_max, "longest backoff")
      ->capture_default_str();
  serve_cmd
      ->add_option("--avoid-failed-host", serve_args.avoid_failed_host,
                   "a task that failed because of a worker's host is kept from that worker this "
                   "long")
      ->capture_default_str();
  serve_cmd->add_option("--max-json-body", serve_args.max_json_body, "413 above this")
      ->capture_default_str();
  serve_cmd->add_option("--max-artifact-body", serve_args.max_artifact_body, "413 above this")
      ->capture_default_str();
  serve_cmd->add_option("--max-log-bytes", serve_args.max_log_bytes, "per task attempt")
      ->capture_default_str();
  serve_cmd
      ->add_option("--retain-finished", serve_args.retain_finished,
                   "tasks that ended longer ago than this are pruned with their logs and "
                   "artifacts (the audit trail stays): 7d, 36h, ...; 0 keeps them forever")
      ->capture_default_str();
  serve_cmd->add_option("--sqlite-synchronous", serve_args.synchronous, "full or normal (ADR 0012)")
      ->capture_default_str();
  serve_cmd
      ->add_option("--sqlite-checkpoint-pages", serve_args.sqlite_checkpoint_pages,
                   "WAL size in pages at which a thread of its own copies the WAL into the "
                   "database; 0: the commit that passes 1000 does it, as SQLite does by default "
                   "(ADR 0040)")
      ->capture_default_str();
  serve_cmd
      ->add_option("--threads", serve_args.threads,
                   "HTTP I/O threads; 0: the core thread does the HTTP I/O too (one thread, no "
                   "hand-offs: for small hosts, ADR 0039)")
      ->capture_default_str();
  serve_cmd
      ->add_option("--idle-timeout", serve_args.idle_timeout,
                   "an idle connection of a client with a valid token is closed after this")
      ->capture_default_str();
  serve_cmd
      ->add_option("--header-timeout", serve_args.header_timeout,
                   "a connection without a valid token yet must send each request head "
                   "within this")
      ->capture_default_str();
  serve_cmd
      ->add_option("--max-connections", serve_args.max_connections,
                   "connections held at once; the oldest without a valid token is closed "
                   "to make room (0: the descriptor limit less a reserve)")
      ->capture_default_str();
  serve_cmd->add_option("--log-level", serve_args.log_level, "trace, debug, info, warn, error")
      ->envname("TAMMA_LOG_LEVEL")
      ->capture_default_str();
  serve_cmd->add_option("--log-format", serve_args.log_format, "text or json")
      ->capture_default_str();

  std::string migrate_db;
  auto* migrate_cmd = app.add_subcommand(
      "migrate", "apply the schema migrations this version needs, then exit (serve does too)");
  migrate_cmd
      ->add_option("--db", migrate_db,
                   "sqlite:/path/to/db.sqlite, or a PostgreSQL connection string")
      ->envname("TAMMA_DB_URL")
      ->required();

  auto admin = orch::add_admin_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : orch::kCliUsage;
  }
  try {
    if (serve_cmd->parsed()) return serve(serve_args);
    if (migrate_cmd->parsed()) return migrate(migrate_db);
    for (const auto& cmd : admin) {
      if (cmd.app->parsed()) return cmd.run();
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "tamma-orchestrator: %s\n", e.what());
    if (e.kind() == ErrorKind::kConfig) return orch::kCliUsage;
    if (e.code() == "orchestrator_unreachable") return orch::kCliUnreachable;
    return orch::kCliFailed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tamma-orchestrator: internal error: %s\n", e.what());
    return orch::kCliFailed;
  }
  return orch::kCliUsage;
}
