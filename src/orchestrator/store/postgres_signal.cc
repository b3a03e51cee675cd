#include "orchestrator/store/postgres_signal.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "orchestrator/store/postgres.h"

namespace tamma::orchestrator {
namespace {

constexpr const char* kChannel = "tamma_queue";
// One NOTIFY carries at most this many bytes (PostgreSQL's limit is 8000); more pending than
// that goes out as an empty payload, "look at the whole queue".
constexpr std::size_t kMaxPayload = 7000;
constexpr std::size_t kMaxTasksPerPayload = 256;
constexpr auto kSweepEvery = std::chrono::seconds(2);
// How often the number of other listening orchestrators is read again: a replica that starts
// meanwhile goes unannounced to for at most this long, and looks at the whole queue when it
// starts listening anyway.
constexpr auto kCountListenersEvery = std::chrono::seconds(1);
constexpr const char* kApplicationName = "tamma-orchestrator-signal";

struct ConnDeleter {
  void operator()(PGconn* c) const { ::PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;

Conn connect_listener(const std::string& conninfo) {
  // The application name comes after the caller's string and wins over one set there: the
  // other replicas find this connection by it (count_other_listeners).
  const char* keys[] = {"connect_timeout", "dbname", "application_name", nullptr};
  const char* values[] = {"5", conninfo.c_str(), kApplicationName, nullptr};
  Conn conn(::PQconnectdbParams(keys, values, 1));
  if (!conn || ::PQstatus(conn.get()) != CONNECTION_OK) return nullptr;
  // A NOTIFY is a hint, not a record: its commit need not wait for the WAL to reach the disk
  // (a wake-up lost in a crash is covered by the sweeps), and the wait is all pickup latency.
  PGresult* r = ::PQexec(conn.get(),
                         (std::string("SET synchronous_commit = off; LISTEN ") + kChannel).c_str());
  const bool ok = ::PQresultStatus(r) == PGRES_COMMAND_OK;
  ::PQclear(r);
  if (!ok) return nullptr;
  return conn;
}

// The signal connections of other orchestrators on this database; -1 when that cannot be
// told (then every announcement is sent, as if there were some): the view cannot be read, or
// it hides the application name of a session of another role (a replica may connect as one).
int count_other_listeners(PGconn* conn) {
  const char* values[] = {kApplicationName};
  PGresult* r = ::PQexecParams(
      conn,
      "SELECT count(*) FILTER (WHERE application_name = $1), "
      "  count(*) FILTER (WHERE usename IS DISTINCT FROM current_user AND "
      "    (application_name IS NULL OR application_name = '<insufficient privilege>')) "
      "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
      "AND backend_type = 'client backend'",
      1, nullptr, values, nullptr, nullptr, 0);
  int count = -1;
  if (::PQresultStatus(r) == PGRES_TUPLES_OK && ::PQntuples(r) == 1 &&
      std::atoi(::PQgetvalue(r, 0, 1)) == 0) {
    count = std::atoi(::PQgetvalue(r, 0, 0));
  }
  ::PQclear(r);
  return count;
}

// Earlier versions' payload: task ids (letters, digits, '-', '_') separated by commas.
std::optional<std::vector<Store::Announced>> split_ids(std::string_view payload) {
  std::vector<Store::Announced> tasks;
  std::size_t start = 0;
  while (start <= payload.size()) {
    std::size_t end = payload.find(',', start);
    if (end == std::string_view::npos) end = payload.size();
    const std::string_view id = payload.substr(start, end - start);
    for (char c : id) {
      if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-' && c != '_') {
        return std::nullopt;
      }
    }
    if (!id.empty()) tasks.push_back({std::string(id), {}});
    start = end + 1;
  }
  return tasks;
}

}  // namespace

std::string encode_announcement(const std::string& task_id, const Store::Queued* queued) {
  if (queued == nullptr) return nlohmann::json(task_id).dump();
  return nlohmann::json::array({task_id, queued->type, queued->labels}).dump();
}

std::optional<std::vector<Store::Announced>> decode_announcement(std::string_view payload) {
  constexpr std::size_t kMaxBytes = 8000;
  if (payload.size() > kMaxBytes) return std::nullopt;
  if (payload.empty() || payload.front() != '[') {
    auto tasks = split_ids(payload);
    if (tasks && tasks->size() > kMaxTasksPerPayload) return std::nullopt;
    return tasks;
  }
  // [ [id, type, {labels}] ]: depth 3 at most; a deeper document is refused while parsed.
  bool too_deep = false;
  const nlohmann::json::parser_callback_t limit_depth =
      [&too_deep](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
        if (depth > 2 && (event == nlohmann::json::parse_event_t::object_start ||
                          event == nlohmann::json::parse_event_t::array_start)) {
          too_deep = true;
        }
        return !too_deep;
      };
  nlohmann::json doc = nlohmann::json::parse(payload.begin(), payload.end(), limit_depth,
                                             /*allow_exceptions=*/false);
  if (too_deep || !doc.is_array() || doc.size() > kMaxTasksPerPayload) return std::nullopt;
  std::vector<Store::Announced> tasks;
  for (const auto& item : doc) {
    if (item.is_string()) {
      tasks.push_back({item.get<std::string>(), {}});
      continue;
    }
    if (!item.is_array() || item.size() != 3 || !item[0].is_string() || !item[1].is_string() ||
        !item[2].is_object()) {
      return std::nullopt;
    }
    Store::Queued queued{item[1].get<std::string>(), {}};
    for (const auto& [key, value] : item[2].items()) {
      if (!value.is_string()) return std::nullopt;
      queued.labels.emplace(key, value.get<std::string>());
    }
    tasks.push_back({item[0].get<std::string>(), std::move(queued)});
  }
  return tasks;
}

PgQueueSignal::PgQueueSignal(std::string conninfo, Listener listener)
    : conninfo_(std::move(conninfo)), listener_(std::move(listener)) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw_errno("eventfd");
  thread_ = std::thread([this] { run(); });
}

PgQueueSignal::~PgQueueSignal() {
  stopping_ = true;
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  ::close(wake_fd_);
}

void PgQueueSignal::announce(const std::string& task_id, const Store::Queued* queued) {
  std::string entry = encode_announcement(task_id, queued);
  {
    std::lock_guard lock(mutex_);
    if (!overflowed_) {
      auto [it, inserted] = pending_.try_emplace(task_id);
      if (!inserted) pending_bytes_ -= it->second.size() + 1;
      pending_bytes_ += entry.size() + 1;
      it->second = std::move(entry);
    }
    if (pending_bytes_ + 2 > kMaxPayload || pending_.size() > kMaxTasksPerPayload) {
      overflowed_ = true;
      pending_.clear();
      pending_bytes_ = 0;
    }
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void PgQueueSignal::run() {
  Conn conn;
  auto backoff = std::chrono::milliseconds(100);
  auto last_sweep = std::chrono::steady_clock::now();
  auto last_count = last_sweep;
  while (!stopping_) {
    if (!conn) {
      conn = connect_listener(conninfo_);
      if (!conn) {
        spdlog::warn("queue signal: cannot listen on {}; trying again in {} ms",
                     conninfo_display(conninfo_), backoff.count());
        pollfd p{wake_fd_, POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(backoff.count()));
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        continue;
      }
      backoff = std::chrono::milliseconds(100);
      others_ = count_other_listeners(conn.get());
      last_count = std::chrono::steady_clock::now();
      // Whatever was announced while this connection was down went unheard.
      listener_({});
    }
    if (const auto now = std::chrono::steady_clock::now();
        now - last_count >= kCountListenersEvery) {
      last_count = now;
      others_ = count_other_listeners(conn.get());
      if (::PQstatus(conn.get()) != CONNECTION_OK) {
        conn.reset();
        continue;
      }
    }

    // Send what is pending: one NOTIFY for all of it.
    std::string payload;
    bool send = false;
    {
      std::lock_guard lock(mutex_);
      if (overflowed_ || !pending_.empty()) {
        send = true;
        if (!overflowed_) {
          payload.push_back('[');
          for (const auto& [id, entry] : pending_) {
            if (payload.size() > 1) payload.push_back(',');
            payload.append(entry);
          }
          payload += "]";
        }
        pending_.clear();
        pending_bytes_ = 0;
        overflowed_ = false;
      }
    }
    if (send && others_ == 0) {
      // Nobody else listens: one orchestrator alone on its database, or the others are down
      // (they look at the whole queue when they come back). The NOTIFY would be a commit,
      // and a lock taken by the whole cluster, for no one.
      skipped_.fetch_add(1);
      send = false;
    }
    if (send) {
      const char* values[] = {kChannel, payload.c_str()};
      PGresult* r = ::PQexecParams(conn.get(), "SELECT pg_notify($1, $2)", 2, nullptr, values,
                                   nullptr, nullptr, 0);
      const bool ok = ::PQresultStatus(r) == PGRES_TUPLES_OK;
      ::PQclear(r);
      if (!ok) {
        spdlog::warn("queue signal: NOTIFY failed: {}", ::PQerrorMessage(conn.get()));
        conn.reset();
        continue;
      }
      sent_.fetch_add(1);
    }

    // Hand over what arrived (PQexec above may have read some already).
    if (::PQconsumeInput(conn.get()) == 0) {
      spdlog::warn("queue signal: connection lost: {}", ::PQerrorMessage(conn.get()));
      conn.reset();
      continue;
    }
    const int own_pid = ::PQbackendPID(conn.get());
    while (PGnotify* n = ::PQnotifies(conn.get())) {
      if (n->be_pid != own_pid) {
        received_.fetch_add(1);
        auto tasks = decode_announcement(n->extra);
        if (!tasks)
          spdlog::warn("queue signal: a notification not understood; looking at the queue");
        listener_(tasks ? std::move(*tasks) : std::vector<Store::Announced>{});
      }
      ::PQfreemem(n);
    }

    {
      std::lock_guard lock(mutex_);
      if (overflowed_ || !pending_.empty()) continue;  // more came while sending
    }
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {::PQsocket(conn.get()), POLLIN, 0}};
    if (::poll(fds, 2, 1000) > 0 && (fds[0].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
    }
    // The fallback for a notification lost anyway (a NOTIFY that failed on the sender's side,
    // a listener that was not yet listening): a look at the queue every kSweepEvery.
    if (const auto now = std::chrono::steady_clock::now(); now - last_sweep >= kSweepEvery) {
      last_sweep = now;
      listener_({});
    }
  }
}

}  // namespace tamma::orchestrator
