// The audit trail in both stores (issue 10): every operation once leaves its record, in order,
// with its actor; a refused or rolled-back operation leaves none. SQLite, and a real
// PostgreSQL cluster of this test process (tests/support/postgres_cluster.h).

#include "orchestrator/audit_test_support.h"
#include "orchestrator/store/postgres.h"
#include "orchestrator/store/postgres_store.h"
#include "orchestrator/store/sqlite_store.h"
#include "support/postgres_cluster.h"

namespace tamma::orchestrator::testing {
namespace {

// ---- the stores ---------------------------------------------------------------------------------

NewTask new_task(const std::string& id) {
  NewTask t;
  t.id = id;
  t.type = "command";
  t.spec = task_spec();
  t.spec["id"] = id;
  t.spec["env"] = {{"AUDIT_PROBE", kSecretEnv}};
  t.request_hash = id;
  return t;
}

w::Capabilities store_capabilities() {
  return w::capabilities_from_json(capabilities({"command"}, json::object(), 2));
}

// A database the backend under test runs on, and raw SQL beside the store.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Store& store() = 0;
  // Every column of every audit row, as text.
  virtual std::string raw_audit() = 0;
  // Makes every insert into `table` (whose new row matches `when`, in the backend's SQL) fail,
  // as a full disk or a constraint would, until heal().
  virtual void break_inserts(const std::string& table, const std::string& when) = 0;
  virtual void heal(const std::string& table) = 0;
  virtual void raw_exec(const std::string& sql) = 0;
};

class SqliteBackend : public Backend {
 public:
  SqliteBackend()
      : store_(dir_.path() / "db.sqlite", SyncMode::kNormal), raw_(dir_.path() / "db.sqlite") {
    raw_.exec("PRAGMA busy_timeout = 5000");
  }
  Store& store() override { return store_; }
  std::string raw_audit() override { return raw_sqlite_audit(dir_.path() / "db.sqlite", nullptr); }
  void break_inserts(const std::string& table, const std::string& when) override {
    raw_.exec("CREATE TRIGGER broken_" + table + " BEFORE INSERT ON " + table + " WHEN " + when +
              " BEGIN SELECT RAISE(ABORT, 'injected fault'); END");
  }
  void heal(const std::string& table) override { raw_.exec("DROP TRIGGER broken_" + table); }
  void raw_exec(const std::string& sql) override { raw_.exec(sql); }

 private:
  tamma::testing::TempDir dir_;
  SqliteStore store_;
  SqliteDb raw_;
};

// A database of its own on the test process's PostgreSQL cluster, dropped again at the end.
class PostgresBackend : public Backend {
 public:
  PostgresBackend() : name_(tamma::testing::shared_postgres_cluster().create_database("audit")) {
    const std::string conninfo = tamma::testing::shared_postgres_cluster().conninfo(name_);
    store_ = std::make_unique<PostgresStore>(conninfo);
    raw_ = std::make_unique<PgConnection>(conninfo);
  }
  ~PostgresBackend() override {
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
  std::string raw_audit() override {
    auto r = raw_->exec("SELECT a::text FROM audit a ORDER BY seq");
    std::string out;
    for (int i = 0; i < r.rows(); ++i) out += r.text(i, 0) + "\n";
    return out;
  }
  void break_inserts(const std::string& table, const std::string& when) override {
    raw_->exec_script("CREATE FUNCTION broken_" + table +
                      "() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                      "'injected fault'; END $$; CREATE TRIGGER broken_" +
                      table + " BEFORE INSERT ON " + table + " FOR EACH ROW WHEN (" + when +
                      ") EXECUTE FUNCTION broken_" + table + "()");
  }
  void heal(const std::string& table) override {
    raw_->exec_script("DROP TRIGGER broken_" + table + " ON " + table + "; DROP FUNCTION broken_" +
                      table + "()");
  }
  void raw_exec(const std::string& sql) override { raw_->exec_script(sql); }

 private:
  std::string name_;
  std::unique_ptr<PostgresStore> store_;
  std::unique_ptr<PgConnection> raw_;
};

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "sqlite") return std::make_unique<SqliteBackend>();
  return std::make_unique<PostgresBackend>();  // throws, and the test fails, without a cluster
}

class AuditStore : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { backend_ = make_backend(GetParam()); }
  Store& store() { return backend_->store(); }
  std::vector<w::AuditRecord> all() {
    AuditQuery q;
    q.limit = kMaxAuditLimit;
    return store().audit(q);
  }

  std::unique_ptr<Backend> backend_;
};

// Every state-changing operation once, with the actor a handler or the reaper would set; the
// trail then holds exactly these, in this order.
TEST_P(AuditStore, EveryOperationLeavesItsRecordInOrder) {
  auto& s = store();
  const auto ttl = std::chrono::seconds(30);
  const RetryPolicy fast{std::chrono::milliseconds(1), std::chrono::milliseconds(1)};
  const auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(30)); };
  const auto as_w1 = [] { return Actor::worker("w1", "10.0.0.1:1001"); };
  const auto as_w2 = [] { return Actor::worker("w2", "10.0.0.2:1002"); };
  {
    Store::ActorScope as(s, Actor::registration("10.0.0.3:1003"));
    s.register_worker("w1", sha256_hex("token-w1"), store_capabilities());
    s.register_worker("w2", sha256_hex("token-w2"), store_capabilities());
  }
  const WorkerInfo w1 = *s.worker("w1");
  const WorkerInfo w2 = *s.worker("w2");
  {
    // Handed to a parked poll in the submit's transaction: the admin's request did it.
    Store::ActorScope as(s, Actor::admin("10.0.0.9:9000"));
    ASSERT_TRUE(s.submit(new_task("t1"), &w2, "lease-t1-a", ttl).claim);
  }
  // No scope: the orchestrator on its own (an answer that could not be written).
  ASSERT_TRUE(s.release("t1", 1, "lease-t1-a"));
  {
    Store::ActorScope as(s, Actor::admin("10.0.0.9:9000"));
    s.submit(new_task("t2"), nullptr, {}, {});
  }
  {
    Store::ActorScope as(s, as_w1());
    auto c = s.claim(w1, "lease-t1", ttl);
    ASSERT_TRUE(c && c->assignment.task_id == "t1");
    ASSERT_EQ(s.started("t1", "w1", {1, "lease-t1"}).status, FenceStatus::kOk);
    ASSERT_EQ(s.add_artifact("t1", "w1", {1, "lease-t1"}, {"out.txt", 1, 3, "abc"},
                             "/srv/secret/path/out.txt")
                  .status,
              FenceStatus::kOk);
    w::CompleteRequest done;
    done.fence = {1, "lease-t1"};
    done.result = {{"status", "succeeded"}};
    ASSERT_EQ(s.complete("t1", "w1", done).status, FenceStatus::kOk);
    c = s.claim(w1, "lease-t2-b", ttl);
    ASSERT_TRUE(c && c->assignment.task_id == "t2");
    ASSERT_EQ(s.started("t2", "w1", {1, "lease-t2-b"}).status, FenceStatus::kOk);
    w::FailRequest failed;
    failed.fence = {1, "lease-t2-b"};
    failed.error = {"boom", std::string("message with ") + kSecretValue, true};
    ASSERT_EQ(s.fail("t2", "w1", failed, fast).state, w::TaskState::kRetryWait);
  }
  pause();
  ASSERT_EQ(s.promote_retries().size(), 1u);
  {
    Store::ActorScope as(s, as_w2());
    auto c = s.claim(w2, "lease-t2-c", std::chrono::milliseconds(1));
    ASSERT_TRUE(c && c->assignment.attempt == 2);
    ASSERT_EQ(s.started("t2", "w2", {2, "lease-t2-c"}).status, FenceStatus::kOk);
  }
  pause();
  ASSERT_EQ(s.expire_leases(fast).size(), 1u);
  pause();
  ASSERT_EQ(s.promote_retries().size(), 1u);
  {
    Store::ActorScope as(s, as_w1());
    ASSERT_TRUE(s.claim(w1, "lease-t2-d", ttl));
  }
  ASSERT_EQ(s.requeue_unacknowledged(std::chrono::milliseconds(0)).size(), 1u);
  {
    Store::ActorScope as(s, as_w1());
    ASSERT_TRUE(s.claim(w1, "lease-t2-e", ttl));
    ASSERT_EQ(s.started("t2", "w1", {3, "lease-t2-e"}).status, FenceStatus::kOk);
  }
  ASSERT_EQ(s.extend_leases(ttl), 1);
  {
    Store::ActorScope as(s, Actor::admin("10.0.0.9:9001"));
    ASSERT_EQ(s.cancel("t2")->state, w::TaskState::kCancelRequested);
    ASSERT_TRUE(s.request_drain("w2"));
    ASSERT_EQ(s.unregister_worker("w1").size(), 1u);
    s.submit(new_task("t3"), nullptr, {}, {});
    ASSERT_EQ(s.cancel("t3")->state, w::TaskState::kCancelled);
  }

  const std::vector<std::string> expected = {
      line("register", "registration", "", 0, "w1", ""),
      line("register", "registration", "", 0, "w2", ""),
      line("submit", "admin", "t1", 0, "", "queued"),
      line("claim", "admin", "t1", 1, "w2", "running"),
      line("claim_released", "orchestrator", "t1", 1, "w2", "queued"),
      line("submit", "admin", "t2", 0, "", "queued"),
      line("claim", "worker:w1", "t1", 1, "w1", "running"),
      line("started", "worker:w1", "t1", 1, "w1", "running"),
      line("artifact", "worker:w1", "t1", 1, "w1", ""),
      line("complete", "worker:w1", "t1", 1, "w1", "succeeded"),
      line("claim", "worker:w1", "t2", 1, "w1", "running"),
      line("started", "worker:w1", "t2", 1, "w1", "running"),
      line("fail", "worker:w1", "t2", 1, "w1", "retry_wait"),
      line("retry_promoted", "orchestrator", "t2", 1, "", "queued"),
      line("claim", "worker:w2", "t2", 2, "w2", "running"),
      line("started", "worker:w2", "t2", 2, "w2", "running"),
      line("lease_expired", "orchestrator", "t2", 2, "w2", "retry_wait"),
      line("retry_promoted", "orchestrator", "t2", 2, "", "queued"),
      line("claim", "worker:w1", "t2", 3, "w1", "running"),
      line("claim_unacknowledged", "orchestrator", "t2", 3, "w1", "queued"),
      line("claim", "worker:w1", "t2", 3, "w1", "running"),
      line("started", "worker:w1", "t2", 3, "w1", "running"),
      line("lease_grace", "orchestrator", "", 0, "", ""),
      line("cancel", "admin", "t2", 3, "w1", "cancel_requested"),
      line("drain", "admin", "", 0, "w2", ""),
      line("unregister", "admin", "", 0, "w1", ""),
      line("lease_revoked", "admin", "t2", 3, "w1", "cancelled"),
      line("submit", "admin", "t3", 0, "", "queued"),
      line("cancel", "admin", "t3", 0, "", "cancelled"),
  };
  auto records = all();
  EXPECT_EQ(lines_of(records), expected);
  for (const auto& r : records) {
    SCOPED_TRACE(line_of(r));
    if (r.actor.kind == w::ActorKind::kOrchestrator) {
      EXPECT_FALSE(r.actor.address || r.actor.id);
    } else {
      EXPECT_TRUE(r.actor.address && r.actor.address->rfind("10.0.0.", 0) == 0);
    }
    if (r.action == w::AuditAction::kLeaseGrace) {
      EXPECT_EQ(r.detail["leases"], 1);
    }
    if (r.action == w::AuditAction::kFail) {
      EXPECT_EQ(r.detail, json({{"state", "retry_wait"}, {"code", "boom"}, {"retryable", true}}));
    }
  }
  expect_no_secret(backend_->raw_audit(),
                   {kSecretEnv, kSecretValue, sha256_hex("token-w1"), sha256_hex("token-w2"),
                    "lease-", "/srv/secret"},
                   "the audit table");

  // Queries: one task's, a page after a seq, from a time on.
  AuditQuery of_t1;
  of_t1.task_id = "t1";
  std::vector<std::string> expected_t1;
  for (const auto& l : expected) {
    if (l.find(" task=t1 ") != std::string::npos) expected_t1.push_back(l);
  }
  EXPECT_EQ(expected_t1.size(), 7u);
  EXPECT_EQ(lines_of(s.audit(of_t1)), expected_t1);
  AuditQuery page;
  page.after_seq = records[4].seq;
  page.limit = 3;
  auto next = s.audit(page);
  ASSERT_EQ(next.size(), 3u);
  EXPECT_EQ(next[0].seq, records[5].seq);
  AuditQuery future;
  future.since_ms = std::int64_t{253402300799000};  // 9999-12-31T23:59:59Z
  EXPECT_TRUE(s.audit(future).empty());
  AuditQuery everything;
  everything.since_ms = 0;
  everything.limit = kMaxAuditLimit;
  EXPECT_EQ(s.audit(everything).size(), records.size());
}

// Only committed operations are in the trail: a refused or idempotent call adds nothing, and an
// operation rolled back takes its record with it, as a record that cannot be written takes its
// operation.
TEST_P(AuditStore, ARefusedOrRolledBackOperationLeavesNoRecord) {
  auto& s = store();
  const auto ttl = std::chrono::seconds(30);
  Store::ActorScope as(s, Actor::admin("10.0.0.9:9000"));
  s.register_worker("w1", sha256_hex("token-w1"), store_capabilities());
  const WorkerInfo w1 = *s.worker("w1");
  NewTask keyed = new_task("t1");
  keyed.idempotency_key = "key-1";
  s.submit(keyed, nullptr, {}, {});
  ASSERT_TRUE(s.claim(w1, "lease-t1", ttl));
  w::CompleteRequest done;
  done.fence = {1, "lease-t1"};
  done.result = {{"status", "succeeded"}};
  ASSERT_EQ(s.complete("t1", "w1", done).status, FenceStatus::kOk);
  s.submit(new_task("t2"), nullptr, {}, {});
  ASSERT_EQ(s.cancel("t2")->state, w::TaskState::kCancelled);
  const std::size_t before = all().size();
  ASSERT_EQ(before, 6u);

  // Refused: a fenced write of an ended lease, of a task never leased, of no task.
  EXPECT_EQ(s.started("t1", "w1", {1, "lease-t1"}).status, FenceStatus::kLeaseLost);
  EXPECT_EQ(s.complete("t1", "w1", done).status, FenceStatus::kLeaseLost);
  EXPECT_EQ(s.started("t2", "w1", {1, "lease-t2"}).status, FenceStatus::kForbidden);
  EXPECT_EQ(s.add_artifact("nope", "w1", {1, "x"}, {"a", 1, 1, "ab"}, "/x").status,
            FenceStatus::kNotFound);
  // Changed nothing: a replayed submit, a cancel of an ended or cancelled task, a drain of no
  // worker, a release of a lease not running, sweeps with nothing to sweep.
  EXPECT_FALSE(s.submit(keyed, nullptr, {}, {}).created);
  EXPECT_EQ(s.cancel("t1")->state, w::TaskState::kSucceeded);
  EXPECT_EQ(s.cancel("t2")->state, w::TaskState::kCancelled);
  EXPECT_FALSE(s.request_drain("nobody"));
  EXPECT_FALSE(s.release("t1", 1, "lease-t1"));
  EXPECT_FALSE(s.claim(w1, "lease-none", ttl));
  EXPECT_TRUE(s.expire_leases({}).empty());
  EXPECT_TRUE(s.requeue_unacknowledged(std::chrono::milliseconds(0)).empty());
  EXPECT_TRUE(s.promote_retries().empty());
  EXPECT_EQ(s.extend_leases(ttl), 0);
  EXPECT_EQ(all().size(), before);

  // Rolled back after its record was written: a submit whose claim fails takes its submit and
  // claim records with it.
  backend_->break_inserts("attempts", "1 = 1");
  EXPECT_THROW(s.submit(new_task("t3"), &w1, "lease-t3", ttl), Error);
  backend_->heal("attempts");
  EXPECT_FALSE(s.task("t3")) << "the operation was rolled back";
  AuditQuery of_t3;
  of_t3.task_id = "t3";
  EXPECT_TRUE(s.audit(of_t3).empty()) << "and its records with it";
  EXPECT_EQ(all().size(), before);

  // A record that cannot be written takes its operation with it.
  s.submit(new_task("t4"), nullptr, {}, {});
  ASSERT_TRUE(s.claim(w1, "lease-t4", ttl));
  backend_->break_inserts("audit", "NEW.action = 'complete'");
  done.fence = {1, "lease-t4"};
  EXPECT_THROW(s.complete("t4", "w1", done), Error);
  backend_->heal("audit");
  EXPECT_EQ(s.task("t4")->state, w::TaskState::kRunning) << "not completed without its record";
  EXPECT_EQ(all().size(), before + 2);
  ASSERT_EQ(s.complete("t4", "w1", done).status, FenceStatus::kOk);
  EXPECT_EQ(line_of(all().back()), line("complete", "admin", "t4", 1, "w1", "succeeded"));

  // And nothing, not even the database's owner by mistake, rewrites or removes a record.
  EXPECT_ANY_THROW(backend_->raw_exec("UPDATE audit SET action = 'submit'"));
  EXPECT_ANY_THROW(backend_->raw_exec("DELETE FROM audit"));
  EXPECT_EQ(all().size(), before + 3);
}

TEST_P(AuditStore, AnActorScopeLastsAsLongAsItsOwnerAndNests) {
  auto& s = store();
  EXPECT_EQ(s.actor().kind, w::ActorKind::kOrchestrator);
  {
    Store::ActorScope admin(s, Actor::admin("10.0.0.9:1"));
    {
      Store::ActorScope worker(s, Actor::worker("w1", "10.0.0.1:2"));
      EXPECT_EQ(s.actor().kind, w::ActorKind::kWorker);
      EXPECT_EQ(s.actor().id, "w1");
    }
    EXPECT_EQ(s.actor().kind, w::ActorKind::kAdmin);
    EXPECT_EQ(s.actor().address, "10.0.0.9:1");
  }
  EXPECT_EQ(s.actor().kind, w::ActorKind::kOrchestrator);
  EXPECT_TRUE(s.actor().address.empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, AuditStore, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tamma::orchestrator::testing
