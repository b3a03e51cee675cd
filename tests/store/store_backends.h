#pragma once
// The two stores on real backends for the store tests of artifacts and retention: each with
// raw access beside the store, to look at what it keeps and to damage or age it on purpose.

#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <random>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "orchestrator/store/postgres.h"
#include "orchestrator/store/postgres_store.h"
#include "orchestrator/store/sqlite.h"
#include "orchestrator/store/sqlite_store.h"
#include "support/postgres_cluster.h"
#include "support/test_support.h"

namespace tamma::orchestrator::testing {

class StoreBackend {
 public:
  virtual ~StoreBackend() = default;
  virtual Store& store() = 0;
  // Runs SQL that both backends understand.
  virtual void exec(const std::string& sql) = 0;
  // The single integer `sql` selects.
  virtual std::int64_t count(const std::string& sql) = 0;
  // The pieces of artifact bytes kept for a task: chunks in PostgreSQL, files with SQLite.
  virtual std::int64_t stored_units(const std::string& task_id) = 0;
  // Changes the stored bytes of the task's artifacts behind the store's back.
  virtual void damage(const std::string& task_id) = 0;
  // Another store on the same database, as another replica (or process) has.
  virtual std::unique_ptr<Store> another_store() = 0;
};

class SqliteStoreBackend : public StoreBackend {
 public:
  SqliteStoreBackend()
      : store_(dir_.path() / "db.sqlite", SyncMode::kNormal, dir_.path() / "artifacts"),
        raw_(dir_.path() / "db.sqlite") {
    raw_.exec("PRAGMA busy_timeout = 5000");
  }
  Store& store() override { return store_; }
  void exec(const std::string& sql) override { raw_.exec(sql); }
  std::int64_t count(const std::string& sql) override {
    auto s = raw_.prepare(sql);
    EXPECT_TRUE(s.step()) << sql;
    return s.int64(0);
  }
  std::int64_t stored_units(const std::string& task_id) override {
    std::int64_t n = 0;
    std::error_code ec;
    const auto dir = dir_.path() / "artifacts" / task_id;
    if (!std::filesystem::exists(dir)) return 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
      if (e.is_regular_file()) ++n;
    }
    return n;
  }
  void damage(const std::string& task_id) override {
    for (const auto& e :
         std::filesystem::recursive_directory_iterator(dir_.path() / "artifacts" / task_id)) {
      if (!e.is_regular_file()) continue;
      std::filesystem::resize_file(e.path(), e.file_size() > 0 ? e.file_size() - 1 : 1);
    }
  }
  [[nodiscard]] std::filesystem::path artifact_dir() const { return dir_.path() / "artifacts"; }
  std::unique_ptr<Store> another_store() override {
    return std::make_unique<SqliteStore>(dir_.path() / "db.sqlite", SyncMode::kNormal,
                                         dir_.path() / "artifacts");
  }

 private:
  tamma::testing::TempDir dir_;
  SqliteStore store_;
  SqliteDb raw_;
};

// A database of its own on the test process's PostgreSQL cluster, dropped at the end.
class PostgresStoreBackend : public StoreBackend {
 public:
  PostgresStoreBackend()
      : name_(tamma::testing::shared_postgres_cluster().create_database("artifacts")) {
    conninfo_ = tamma::testing::shared_postgres_cluster().conninfo(name_);
    store_ = std::make_unique<PostgresStore>(conninfo_);
    raw_ = std::make_unique<PgConnection>(conninfo_);
  }
  ~PostgresStoreBackend() override {
    store_.reset();
    raw_.reset();
    try {
      tamma::testing::shared_postgres_cluster().execute(
          "postgres", "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cannot drop test database " << name_ << ": " << e.what();
    }
  }
  Store& store() override { return *store_; }
  void exec(const std::string& sql) override { raw_->exec_script(sql); }
  std::int64_t count(const std::string& sql) override { return raw_->exec(sql).int64(0, 0); }
  std::int64_t stored_units(const std::string& task_id) override {
    return raw_->exec("SELECT count(*) FROM artifact_chunks WHERE task_id = $1", {task_id})
        .int64(0, 0);
  }
  void damage(const std::string& task_id) override {
    // Same length, one byte changed: only the digests tell.
    raw_->exec(
        "UPDATE artifact_chunks SET data = set_byte(data, 0, (get_byte(data, 0) + 1) % 256) "
        "WHERE task_id = $1 AND seq = 0",
        {task_id});
  }
  std::unique_ptr<Store> another_store() override {
    return std::make_unique<PostgresStore>(conninfo_);
  }

 private:
  std::string name_;
  std::string conninfo_;
  std::unique_ptr<PostgresStore> store_;
  std::unique_ptr<PgConnection> raw_;
};

inline std::unique_ptr<StoreBackend> make_store_backend(const std::string& name) {
  if (name == "sqlite") return std::make_unique<SqliteStoreBackend>();
  return std::make_unique<PostgresStoreBackend>();  // throws, and the test fails, without one
}

inline wire::Capabilities store_capabilities() {
  wire::Capabilities c;
  c.task_types = {"command"};
  c.slots = 8;
  c.resources = {std::uint64_t{1} << 30, 2, std::uint64_t{1} << 30};
  c.version = "test";
  c.platform = {"linux", "x86_64", "6.1"};
  return c;
}

inline NewTask store_task(const std::string& id,
                          std::optional<std::string> idempotency_key = std::nullopt) {
  NewTask t;
  t.id = id;
  t.type = "command";
  t.spec = {{"id", id},
            {"type", "command"},
            {"steps", nlohmann::json::array({{{"name", "main"}, {"run", "true"}}})}};
  t.idempotency_key = std::move(idempotency_key);
  t.request_hash = "hash-" + id;
  return t;
}

inline std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(gen() & 0xff);
  return out;
}

inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Every byte of an opened artifact: the file, or the stream's pieces in order (rethrowing a
// stream's error). `largest` gets the largest piece.
inline std::string read_all(const ArtifactBytes& bytes, std::size_t* largest = nullptr) {
  if (bytes.file) {
    std::ifstream in(*bytes.file, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
  }
  std::string all;
  for (;;) {
    std::promise<std::string> piece;
    bytes.stream->next([&piece](std::string got, std::exception_ptr error) {
      if (error) {
        piece.set_exception(error);
      } else {
        piece.set_value(std::move(got));
      }
    });
    std::string got = piece.get_future().get();
    if (got.empty()) return all;
    if (largest != nullptr) *largest = std::max(*largest, got.size());
    all += got;
  }
}

}  // namespace tamma::orchestrator::testing
