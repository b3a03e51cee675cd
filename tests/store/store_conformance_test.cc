// Every behaviour of the Store interface (src/orchestrator/store/store.h), run against each
// implementation: SQLite, the reference, and PostgreSQL on a real server. A store that passes
// here can stand in for the other behind the orchestrator.
//
// Time passes through tiny durations (a 1 ms lease, backoff or acknowledgement timeout, then a
// short sleep), never through backend-specific SQL; only outcomes are asserted, never how long
// anything took. Deadlines far in the future are checked against generous bounds.

#include <chrono>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "orchestrator/store/postgres_store.h"
#include "orchestrator/store/sqlite_store.h"
#include "support/postgres_cluster.h"
#include "support/test_support.h"

namespace tamma::protocol::wire {
// Readable failure messages: gtest would print enums as numbers.
inline void PrintTo(TaskState state, std::ostream* out) { *out << to_string(state); }
}  // namespace tamma::protocol::wire

namespace tamma::orchestrator {

inline void PrintTo(FenceStatus status, std::ostream* out) {
  switch (status) {
    case FenceStatus::kOk:
      *out << "kOk";
      return;
    case FenceStatus::kNotFound:
      *out << "kNotFound";
      return;
    case FenceStatus::kForbidden:
      *out << "kForbidden";
      return;
    case FenceStatus::kLeaseLost:
      *out << "kLeaseLost";
      return;
  }
  *out << "FenceStatus(" << static_cast<int>(status) << ")";
}

namespace {

using nlohmann::json;
using wire::TaskState;
using namespace std::chrono_literals;
using LogKind = LogAppendOutcome::Kind;
using tamma::testing::shared_postgres_cluster;

const char* kind_name(LogKind kind) {
  switch (kind) {
    case LogKind::kAppended:
      return "kAppended";
    case LogKind::kDuplicate:
      return "kDuplicate";
    case LogKind::kGap:
      return "kGap";
    case LogKind::kMismatch:
      return "kMismatch";
    case LogKind::kTooLarge:
      return "kTooLarge";
  }
  return "unknown";
}

constexpr auto kLongLease = std::chrono::milliseconds(60s);
constexpr auto kTinyLease = 1ms;
constexpr std::uint64_t kMaxLog = 1 << 20;
// Retries due at once, and a failed host avoided only for a moment.
const RetryPolicy kInstantRetry{1ms, 1ms, 1ms};
// Retries not due during any test.
const RetryPolicy kSlowRetry{100s, 1000s, 100s};

// Long enough for every 1 ms lease, backoff and acknowledgement timeout set before it to pass.
void let_tiny_durations_pass() { std::this_thread::sleep_for(30ms); }

struct TaskOptions {
  std::string type = "command";
  int priority = 0;
  int max_retries = 3;
  std::map<std::string, std::string> labels;
  std::optional<std::string> idempotency_key;
  std::string request_hash = "request-hash";
};

NewTask new_task(const std::string& id, const TaskOptions& options = {}) {
  NewTask t;
  t.id = id;
  t.type = options.type;
  t.spec = {{"id", id},
            {"type", options.type},
            {"steps", json::array({{{"name", "main"}, {"run", "echo " + id}}})}};
  t.priority = options.priority;
  t.max_retries = options.max_retries;
  t.labels = options.labels;
  t.idempotency_key = options.idempotency_key;
  t.request_hash = options.request_hash;
  return t;
}

struct WorkerOptions {
  std::vector<std::string> types = {"command"};
  std::map<std::string, std::string> labels;
  int slots = 4;
};

wire::Capabilities capabilities_of(const WorkerOptions& options) {
  wire::Capabilities c;
  c.task_types = options.types;
  c.labels = options.labels;
  c.slots = options.slots;
  c.resources = {std::uint64_t{1} << 30, 2, std::uint64_t{1} << 30};
  c.version = "test";
  c.platform = {"linux", "x86_64", "6.1"};
  return c;
}

std::string token_hash_of(const std::string& worker_id) { return "sha256-of-token-" + worker_id; }

// Times the admin API shows: RFC 3339, UTC, milliseconds.
bool is_api_time(const std::string& text) {
  static const std::regex kFormat(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)");
  return std::regex_match(text, kFormat);
}

std::vector<std::string> ids_of(const std::vector<wire::TaskView>& tasks) {
  std::vector<std::string> ids;
  for (const auto& t : tasks) ids.push_back(t.id);
  return ids;
}

// count_tasks() as a map without zero entries: a store may list empty states or leave them out.
std::map<std::string, std::int64_t> nonzero_counts(const TaskCounts& counts) {
  std::map<std::string, std::int64_t> out;
  for (const auto& [state, n] : counts.by_state) {
    if (n != 0) out[state] = n;
  }
  return out;
}

wire::CompleteRequest completion(const wire::Fence& fence,
                                 const std::string& status = "succeeded") {
  wire::CompleteRequest request;
  request.fence = fence;
  request.result = {{"status", status}};
  return request;
}

wire::FailRequest failure(const wire::Fence& fence, const std::string& code, bool retryable) {
  wire::FailRequest request;
  request.fence = fence;
  request.error = {code, "it broke: " + code, retryable};
  return request;
}

class StoreConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      store_ = std::make_unique<SqliteStore>(dir_.path() / "db.sqlite", SyncMode::kNormal);
      return;
    }
    ASSERT_EQ(GetParam(), "postgres");
    try {
      database_ = shared_postgres_cluster().create_database("conf");
    } catch (const std::exception& e) {
      FAIL() << "no PostgreSQL server to test the PostgreSQL store against: " << e.what();
    }
    const std::string conninfo = shared_postgres_cluster().conninfo(database_);
    try {
      store_ = std::make_unique<PostgresStore>(conninfo);
    } catch (const Error& e) {
      FAIL() << "PostgresStore(\"" << conninfo << "\") threw [" << e.code() << "] " << e.what();
    } catch (const std::exception& e) {
      FAIL() << "PostgresStore(\"" << conninfo << "\") threw " << e.what();
    }
  }

  void TearDown() override {
    store_.reset();  // its connection, before the database goes
    if (!database_.empty()) {
      // Dropped at once rather than with the cluster at exit: dozens of databases would
      // otherwise pile up in /tmp.
      try {
        shared_postgres_cluster().execute("postgres",
                                          "DROP DATABASE " + database_ + " WITH (FORCE)");
      } catch (const std::exception& e) {
        ADD_FAILURE() << "cannot drop test database " << database_ << ": " << e.what();
      }
    }
  }

  Store& store() { return *store_; }

  wire::TaskView submit(const std::string& id, const TaskOptions& options = {}) {
    return store().submit(new_task(id, options), nullptr, "", kLongLease).task;
  }

  WorkerInfo add_worker(const std::string& id, const WorkerOptions& options = {}) {
    store().register_worker(id, token_hash_of(id), capabilities_of(options));
    return worker(id);
  }

  WorkerInfo worker(const std::string& id) {
    auto w = store().worker(id);
    if (!w) throw std::runtime_error("the store has no worker " + id);
    return *w;
  }

  wire::TaskView task(const std::string& id) {
    auto t = store().task(id);
    if (!t) throw std::runtime_error("the store has no task " + id);
    return *t;
  }

  // A claim the test needs to go on.
  Claim claim(const WorkerInfo& w, const std::string& lease_id,
              std::chrono::milliseconds ttl = kLongLease) {
    auto c = store().claim(w, lease_id, ttl);
    if (!c) throw std::runtime_error("worker " + w.id + " was handed no task");
    return *c;
  }

  // The task `id` claimed by `w` under `lease_id`; the only queued task it can run.
  wire::Fence claim_task(const std::string& id, const WorkerInfo& w, const std::string& lease_id,
                         std::chrono::milliseconds ttl = kLongLease) {
    auto c = claim(w, lease_id, ttl);
    if (c.assignment.task_id != id) {
      throw std::runtime_error("worker " + w.id + " was handed " + c.assignment.task_id + ", not " +
                               id);
    }
    return {c.assignment.attempt, lease_id};
  }

  // Brings a retry_wait task whose (tiny) backoff is over back to the queue.
  void promote(const std::string& id) {
    let_tiny_durations_pass();
    for (const auto& r : store().promote_retries()) {
      if (r.task_id == id) return;
    }
    throw std::runtime_error("task " + id + " was not promoted from retry_wait");
  }

  tamma::testing::TempDir dir_;
  std::string database_;
  std::unique_ptr<Store> store_;
};

// ---- settings -----------------------------------------------------------------------------------

TEST_P(StoreConformance, SettingsAreMissingUntilPutThenOverwritten) {
  EXPECT_FALSE(store().setting("admin_token_hash").has_value());
  store().put_setting("admin_token_hash", "first");
  store().put_setting("other", "untouched");
  EXPECT_EQ(store().setting("admin_token_hash"), "first");
  store().put_setting("admin_token_hash", "second");
  EXPECT_EQ(store().setting("admin_token_hash"), "second");
  EXPECT_EQ(store().setting("other"), "untouched");
}

TEST_P(StoreConformance, ProbeCommitsAndTheWatchSaysReady) {
  store().probe();
  store().probe();
  const auto verdict = store().watch().verdict(std::chrono::hours(1));
  EXPECT_TRUE(verdict.ready) << verdict.status << ": " << verdict.message;
}

// ---- workers ------------------------------------------------------------------------------------

TEST_P(StoreConformance, ARegisteredWorkerIsFoundByItsTokenHashWithItsCapabilities) {
  const WorkerOptions options{{"command", "build"}, {{"arch", "x86_64"}, {"gpu", "none"}}, 3};
  store().register_worker("w1", token_hash_of("w1"), capabilities_of(options));
  EXPECT_EQ(store().worker_by_token_hash(token_hash_of("w1")), "w1");
  auto w = store().worker("w1");
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->id, "w1");
  EXPECT_EQ(wire::to_json(w->capabilities), wire::to_json(capabilities_of(options)));
  EXPECT_FALSE(w->draining);
  EXPECT_FALSE(w->drain_requested);
  EXPECT_FALSE(w->gone);
  EXPECT_EQ(w->leased, 0);
}

TEST_P(StoreConformance, AnUnknownWorkerIsNeitherFoundNorServed) {
  add_worker("w1");
  EXPECT_FALSE(store().worker("nobody").has_value());
  EXPECT_FALSE(store().worker_by_token_hash(token_hash_of("nobody")).has_value());
  EXPECT_FALSE(store().request_drain("nobody"));
  EXPECT_FALSE(store().heartbeat("nobody", {}, kLongLease).known);
  EXPECT_TRUE(store().unregister_worker("nobody").empty());
}

TEST_P(StoreConformance, ListWorkersOrdersByRegistrationAndNamesEachState) {
  // Registered a few milliseconds apart, in the reverse of their ids' order.
  add_worker("w4-online");
  std::this_thread::sleep_for(5ms);
  add_worker("w3-draining");
  std::this_thread::sleep_for(5ms);
  add_worker("w2-drain-requested");
  std::this_thread::sleep_for(5ms);
  add_worker("w1-gone");
  wire::HeartbeatRequest draining;
  draining.draining = true;
  ASSERT_TRUE(store().heartbeat("w3-draining", draining, kLongLease).known);
  ASSERT_TRUE(store().request_drain("w2-drain-requested"));
  store().unregister_worker("w1-gone");

  auto listed = store().list_workers(std::chrono::hours(1), /*include_gone=*/false);
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[0].id, "w4-online");
  EXPECT_EQ(listed[0].state, wire::WorkerState::kOnline);
  EXPECT_EQ(listed[1].id, "w3-draining");
  EXPECT_EQ(listed[1].state, wire::WorkerState::kDraining);
  EXPECT_EQ(listed[2].id, "w2-drain-requested");
  EXPECT_EQ(listed[2].state, wire::WorkerState::kDraining);
  for (const auto& w : listed) {
    SCOPED_TRACE(w.id);
    EXPECT_EQ(wire::to_json(w.capabilities), wire::to_json(capabilities_of({})));
    EXPECT_TRUE(is_api_time(w.registered_at)) << w.registered_at;
    EXPECT_TRUE(is_api_time(w.last_seen_at)) << w.last_seen_at;
    EXPECT_GE(w.last_seen_ago_ms, 0);
    EXPECT_TRUE(w.leases.empty());
    EXPECT_FALSE(w.unhealthy.has_value());
  }

  auto all = store().list_workers(std::chrono::hours(1), /*include_gone=*/true);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[3].id, "w1-gone");
  EXPECT_EQ(all[3].state, wire::WorkerState::kGone);
}

TEST_P(StoreConformance, ListWorkersCallsAWorkerSilentForLongerThanOfflineAfterOffline) {
  add_worker("quiet");
  add_worker("draining-and-quiet");
  wire::HeartbeatRequest draining;
  draining.draining = true;
  store().heartbeat("draining-and-quiet", draining, kLongLease);
  let_tiny_durations_pass();
  auto listed = store().list_workers(1ms, false);
  ASSERT_EQ(listed.size(), 2u);
  for (const auto& w : listed) {
    EXPECT_EQ(w.state, wire::WorkerState::kOffline) << w.id << ": offline wins over draining";
    EXPECT_GT(w.last_seen_ago_ms, 1) << w.id;
  }
  store().heartbeat("quiet", {}, kLongLease);
  for (const auto& w : store().list_workers(std::chrono::hours(1), false)) {
    EXPECT_NE(w.state, wire::WorkerState::kOffline) << w.id;
  }
}

TEST_P(StoreConformance, ListWorkersShowsHeldLeasesAndTheUnhealthyReason) {
  auto w = add_worker("w1");
  submit("t1");
  submit("t2");
  auto f1 = claim_task("t1", w, "lease-1");
  auto f2 = claim_task("t2", w, "lease-2");
  store().cancel("t2");  // cancel_requested: still held
  wire::HeartbeatRequest hb;
  hb.unhealthy = "disk full on /var/lib/tamma";
  ASSERT_TRUE(store().heartbeat("w1", hb, kLongLease).known);

  auto listed = store().list_workers(std::chrono::hours(1), false);
  ASSERT_EQ(listed.size(), 1u);
  ASSERT_EQ(listed[0].leases.size(), 2u);
  EXPECT_EQ(listed[0].leases[0].task_id, "t1");
  EXPECT_EQ(listed[0].leases[0].attempt, f1.attempt);
  EXPECT_EQ(listed[0].leases[0].lease_id, "lease-1");
  EXPECT_EQ(listed[0].leases[1].task_id, "t2");
  EXPECT_EQ(listed[0].leases[1].lease_id, f2.lease_id);
  EXPECT_EQ(listed[0].unhealthy, "disk full on /var/lib/tamma");

  // A heartbeat without a reason clears it; a finished task is no longer listed.
  store().heartbeat("w1", {}, kLongLease);
  ASSERT_EQ(store().complete("t1", "w1", completion(f1)).status, FenceStatus::kOk);
  listed = store().list_workers(std::chrono::hours(1), false);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_FALSE(listed[0].unhealthy.has_value());
  ASSERT_EQ(listed[0].leases.size(), 1u);
  EXPECT_EQ(listed[0].leases[0].task_id, "t2");
}

TEST_P(StoreConformance, AClaimForADrainingOrGoneWorkerGetsNothingWhateverTheCallerSaw) {
  // The caller's WorkerInfo is read before the claim's transaction; with several replicas a
  // drain or an unregister may land in between. The store decides from the row itself.
  const WorkerInfo asked = add_worker("asked");
  const WorkerInfo said = add_worker("said");
  const WorkerInfo gone = add_worker("gone");
  const WorkerInfo fine = add_worker("fine");
  submit("t1");
  ASSERT_TRUE(store().request_drain("asked"));
  wire::HeartbeatRequest draining;
  draining.draining = true;
  ASSERT_TRUE(store().heartbeat("said", draining, kLongLease).known);
  store().unregister_worker("gone");
  EXPECT_FALSE(store().claim(asked, "lease-a", kLongLease).has_value());
  EXPECT_FALSE(store().claim(said, "lease-s", kLongLease).has_value());
  EXPECT_FALSE(store().claim(gone, "lease-g", kLongLease).has_value());
  EXPECT_FALSE(store().submit(new_task("t2"), &gone, "lease-g2", kLongLease).claim.has_value());
  auto c = store().claim(fine, "lease-f", kLongLease);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->assignment.task_id, "t1");
}

TEST_P(StoreConformance, DrainIsRecordedAsAskedByTheAdminOrSaidByTheWorker) {
  add_worker("asked");
  add_worker("said");
  add_worker("other");
  EXPECT_TRUE(store().request_drain("asked"));
  EXPECT_TRUE(worker("asked").drain_requested);
  EXPECT_FALSE(worker("asked").draining);
  EXPECT_TRUE(store().heartbeat("asked", {}, kLongLease).response.drain);
  EXPECT_FALSE(store().heartbeat("other", {}, kLongLease).response.drain);

  wire::HeartbeatRequest draining;
  draining.draining = true;
  EXPECT_FALSE(store().heartbeat("said", draining, kLongLease).response.drain)
      << "the worker said it drains; nobody asked it to";
  EXPECT_TRUE(worker("said").draining);
  EXPECT_FALSE(worker("said").drain_requested);
  store().heartbeat("said", {}, kLongLease);
  EXPECT_FALSE(worker("said").draining) << "each heartbeat says it anew";

  store().unregister_worker("other");
  EXPECT_FALSE(store().request_drain("other")) << "a gone worker";
}

TEST_P(StoreConformance, UnregisterPutsRunningTasksBackAtOnce) {
  auto w1 = add_worker("w1");
  submit("plain");
  submit("cancelling");
  submit("last-chance", {.max_retries = 0});
  auto plain = claim_task("plain", w1, "l-plain");
  claim_task("cancelling", w1, "l-cancelling");
  claim_task("last-chance", w1, "l-last");
  store().cancel("cancelling");

  auto requeued = store().unregister_worker("w1");
  ASSERT_EQ(requeued.size(), 3u);
  std::map<std::string, Requeued> by_task;
  for (const auto& r : requeued) by_task[r.task_id] = r;
  EXPECT_EQ(by_task["plain"].state, TaskState::kQueued);
  EXPECT_EQ(by_task["plain"].attempt, 1);
  EXPECT_EQ(by_task["cancelling"].state, TaskState::kCancelled);
  EXPECT_EQ(by_task["last-chance"].state, TaskState::kDead) << "no retry left";
  EXPECT_EQ(by_task["last-chance"].attempt, 1);

  auto view = task("plain");
  EXPECT_EQ(view.state, TaskState::kQueued);
  ASSERT_TRUE(view.error.has_value());
  EXPECT_EQ(view.error->code, "worker_unregistered");
  EXPECT_TRUE(view.error->retryable);
  EXPECT_FALSE(view.finished_at.has_value());
  EXPECT_TRUE(task("cancelling").finished_at.has_value());
  EXPECT_TRUE(task("last-chance").finished_at.has_value());

  auto gone = worker("w1");
  EXPECT_TRUE(gone.gone);
  EXPECT_EQ(gone.leased, 0);
  EXPECT_FALSE(store().worker_by_token_hash(token_hash_of("w1")).has_value());
  EXPECT_FALSE(store().heartbeat("w1", {}, kLongLease).known);
  EXPECT_TRUE(store().list_workers(std::chrono::hours(1), false).empty());
  EXPECT_TRUE(store().unregister_worker("w1").empty()) << "a second time finds nothing";

  // Queued without waiting for any lease to run out; the old lease is fenced out.
  auto again = claim(add_worker("w2"), "l-again");
  EXPECT_EQ(again.assignment.task_id, "plain");
  EXPECT_EQ(again.assignment.attempt, 2);
  EXPECT_EQ(store().started("plain", "w1", plain).status, FenceStatus::kLeaseLost);
}

// ---- heartbeats ---------------------------------------------------------------------------------

TEST_P(StoreConformance, AHeartbeatRenewsTheLeasesItListsAndOnlyThose) {
  auto w = add_worker("w1");
  submit("listed");
  submit("forgotten");
  auto listed = claim_task("listed", w, "l-listed", kTinyLease);
  claim_task("forgotten", w, "l-forgotten", kTinyLease);
  // Both deadlines have passed, but no reaper has judged them yet: a heartbeat arriving now
  // still renews (docs/protocol.md: the heartbeat that arrives first always wins).
  let_tiny_durations_pass();
  wire::HeartbeatRequest hb;
  hb.leases.push_back({"listed", listed.attempt, listed.lease_id});
  auto out = store().heartbeat("w1", hb, kLongLease);
  ASSERT_TRUE(out.known);
  EXPECT_EQ(out.response.lease_ttl_ms, kLongLease.count());
  EXPECT_TRUE(out.response.lost_leases.empty());
  EXPECT_TRUE(out.response.cancel.empty());

  auto expired = store().expire_leases(kSlowRetry);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].task_id, "forgotten");
  EXPECT_EQ(task("listed").state, TaskState::kRunning);
}

TEST_P(StoreConformance, AHeartbeatNamesLostLeasesAndPendingCancels) {
  auto w1 = add_worker("w1");
  auto w2 = add_worker("w2");
  submit("mine");
  submit("cancel-me");
  submit("theirs");
  submit("finished");
  auto mine = claim_task("mine", w1, "l-mine");
  auto cancel_me = claim_task("cancel-me", w1, "l-cancel");
  auto theirs = claim_task("theirs", w2, "l-theirs");
  auto finished = claim_task("finished", w1, "l-finished");
  ASSERT_EQ(store().complete("finished", "w1", completion(finished)).status, FenceStatus::kOk);
  store().cancel("cancel-me");

  wire::HeartbeatRequest hb;
  hb.leases = {{"mine", mine.attempt, mine.lease_id},
               {"cancel-me", cancel_me.attempt, cancel_me.lease_id},
               {"mine", mine.attempt, "a-lease-it-never-had"},
               {"theirs", theirs.attempt, theirs.lease_id},
               {"finished", finished.attempt, finished.lease_id},
               {"no-such-task", 1, "l-ghost"}};
  auto out = store().heartbeat("w1", hb, 45s);
  ASSERT_TRUE(out.known);
  EXPECT_EQ(out.response.lease_ttl_ms, 45000);
  ASSERT_EQ(out.response.cancel.size(), 1u);
  EXPECT_EQ(out.response.cancel[0].task_id, "cancel-me");
  EXPECT_EQ(out.response.cancel[0].attempt, 1);
  std::set<std::string> lost;
  for (const auto& l : out.response.lost_leases) lost.insert(l.task_id);
  EXPECT_EQ(out.response.lost_leases.size(), 4u);
  EXPECT_EQ(lost, (std::set<std::string>{"mine", "theirs", "finished", "no-such-task"}));
  EXPECT_EQ(task("mine").state, TaskState::kRunning) << "its real lease still holds";
  EXPECT_EQ(task("theirs").state, TaskState::kRunning) << "not w1's to lose";
}

// ---- submit -------------------------------------------------------------------------------------

TEST_P(StoreConformance, SubmitCreatesAQueuedTaskWithEverythingAsked) {
  auto out = store().submit(new_task("t1", {.type = "build",
                                            .priority = 7,
                                            .max_retries = 2,
                                            .labels = {{"arch", "arm64"}},
                                            .idempotency_key = "ci-build-1"}),
                            nullptr, "", kLongLease);
  EXPECT_TRUE(out.created);
  EXPECT_FALSE(out.key_reused);
  EXPECT_FALSE(out.claim.has_value());
  const auto& t = out.task;
  EXPECT_EQ(t.id, "t1");
  EXPECT_EQ(t.type, "build");
  EXPECT_EQ(t.state, TaskState::kQueued);
  EXPECT_EQ(t.attempt, 0);
  EXPECT_EQ(t.max_retries, 2);
  EXPECT_EQ(t.priority, 7);
  EXPECT_EQ(t.labels, (std::map<std::string, std::string>{{"arch", "arm64"}}));
  EXPECT_EQ(t.idempotency_key, "ci-build-1");
  EXPECT_EQ(t.task, new_task("t1", {.type = "build"}).spec);
  EXPECT_FALSE(t.worker_id.has_value());
  EXPECT_FALSE(t.result.has_value());
  EXPECT_FALSE(t.error.has_value());
  EXPECT_FALSE(t.retry_in_ms.has_value());
  EXPECT_FALSE(t.progress.percent.has_value());
  EXPECT_EQ(t.log_length, 0u);
  EXPECT_EQ(t.log_missing_bytes, 0u);
  EXPECT_TRUE(t.artifacts.empty());
  EXPECT_TRUE(is_api_time(t.created_at)) << t.created_at;
  EXPECT_TRUE(is_api_time(t.updated_at)) << t.updated_at;
  EXPECT_FALSE(t.started_at.has_value());
  EXPECT_FALSE(t.finished_at.has_value());
  // What task() reads back is what submit() answered.
  EXPECT_EQ(wire::to_json(task("t1")), wire::to_json(t));
}

TEST_P(StoreConformance, TheSameIdempotencyKeyReturnsTheFirstTask) {
  auto w = add_worker("w1");
  submit("first", {.idempotency_key = "key-1", .request_hash = "hash-a"});
  // A replay of the same request: the first task, nothing created, nothing handed out.
  auto replay =
      store().submit(new_task("second", {.idempotency_key = "key-1", .request_hash = "hash-a"}), &w,
                     "lease-1", kLongLease);
  EXPECT_FALSE(replay.created);
  EXPECT_FALSE(replay.key_reused);
  EXPECT_EQ(replay.task.id, "first");
  EXPECT_FALSE(replay.claim.has_value());
  // The same key with a different request.
  auto reused =
      store().submit(new_task("third", {.idempotency_key = "key-1", .request_hash = "hash-b"}),
                     nullptr, "", kLongLease);
  EXPECT_FALSE(reused.created);
  EXPECT_TRUE(reused.key_reused);
  EXPECT_EQ(reused.task.id, "first");

  EXPECT_FALSE(store().task("second").has_value());
  EXPECT_FALSE(store().task("third").has_value());
  EXPECT_EQ(nonzero_counts(store().count_tasks()),
            (std::map<std::string, std::int64_t>{{"queued", 1}}));
  // Another key, or none, is another task.
  EXPECT_TRUE(store()
                  .submit(new_task("fourth", {.idempotency_key = "key-2"}), nullptr, "", kLongLease)
                  .created);
  EXPECT_TRUE(store().submit(new_task("fifth"), nullptr, "", kLongLease).created);
  EXPECT_TRUE(store().submit(new_task("sixth"), nullptr, "", kLongLease).created);
}

TEST_P(StoreConformance, SubmitHandsTheTaskToTheGivenWorkerInTheSameTransaction) {
  auto w = add_worker("w1", {.slots = 1});
  auto out = store().submit(new_task("t1"), &w, "lease-1", 20s);
  ASSERT_TRUE(out.created);
  ASSERT_TRUE(out.claim.has_value());
  EXPECT_EQ(out.claim->assignment.task_id, "t1");
  EXPECT_EQ(out.claim->assignment.attempt, 1);
  EXPECT_EQ(out.claim->assignment.lease_id, "lease-1");
  EXPECT_EQ(out.claim->assignment.lease_ttl_ms, 20000);
  EXPECT_EQ(out.claim->assignment.task, new_task("t1").spec);
  EXPECT_EQ(out.claim->type, "command");
  auto view = task("t1");
  EXPECT_EQ(view.state, TaskState::kRunning);
  EXPECT_EQ(view.worker_id, "w1");
  EXPECT_EQ(worker("w1").leased, 1);
  EXPECT_EQ(store().started("t1", "w1", {1, "lease-1"}).status, FenceStatus::kOk);

  // Its one slot is taken now: the next task stays queued.
  auto full = store().submit(new_task("t2"), &w, "lease-2", 20s);
  EXPECT_TRUE(full.created);
  EXPECT_FALSE(full.claim.has_value());
  EXPECT_EQ(task("t2").state, TaskState::kQueued);
  // A worker that cannot run the task's type gets nothing either.
  auto builder = add_worker("builder", {.types = {"build"}});
  auto mismatch = store().submit(new_task("t3"), &builder, "lease-3", 20s);
  EXPECT_TRUE(mismatch.created);
  EXPECT_FALSE(mismatch.claim.has_value());
  EXPECT_EQ(task("t3").state, TaskState::kQueued);
}

// ---- claim --------------------------------------------------------------------------------------

TEST_P(StoreConformance, ClaimHandsOutTheHighestPriorityFirstThenTheOldest) {
  auto w = add_worker("w1", {.slots = 10});
  submit("low-1", {.priority = 0});
  submit("high-1", {.priority = 10});
  submit("negative", {.priority = -5});
  submit("low-2", {.priority = 0});
  submit("high-2", {.priority = 10});
  std::vector<std::string> order;
  for (int i = 0; i < 5; ++i)
    order.push_back(claim(w, "lease-" + std::to_string(i)).assignment.task_id);
  EXPECT_EQ(order, (std::vector<std::string>{"high-1", "high-2", "low-1", "low-2", "negative"}));
  EXPECT_FALSE(store().claim(w, "lease-none", kLongLease).has_value()) << "the queue is empty";
}

TEST_P(StoreConformance, QueuedTaskIdsAreInClaimOrderAndLimited) {
  auto w = add_worker("w1");
  EXPECT_TRUE(store().queued_task_ids(10).empty());
  submit("running");
  claim_task("running", w, "l1");
  submit("retrying");
  auto retrying = claim_task("retrying", w, "l2");
  store().fail("retrying", "w1", failure(retrying, "worker_shutdown", true), kSlowRetry);
  submit("low-1");
  submit("high-1", {.priority = 10});
  submit("other-type", {.type = "build"});
  submit("low-2");
  submit("high-2", {.priority = 10});
  EXPECT_EQ(store().queued_task_ids(10),
            (std::vector<std::string>{"high-1", "high-2", "low-1", "other-type", "low-2"}));
  EXPECT_EQ(store().queued_task_ids(2), (std::vector<std::string>{"high-1", "high-2"}));
}

TEST_P(StoreConformance, ATaskBackFromRetryKeepsItsPlaceInTheQueue) {
  auto w = add_worker("w1");
  submit("older");
  auto fence = claim_task("older", w, "l1");
  submit("newer");
  ASSERT_EQ(
      store().fail("older", "w1", failure(fence, "worker_shutdown", true), kInstantRetry).state,
      TaskState::kRetryWait);
  promote("older");
  auto again = claim(w, "l2");
  EXPECT_EQ(again.assignment.task_id, "older");
  EXPECT_EQ(again.assignment.attempt, 2);
}

TEST_P(StoreConformance, ClaimMatchesTheTaskTypeAndEveryRequiredLabel) {
  submit("needs-arm", {.labels = {{"arch", "arm64"}}});
  submit("needs-arm-gpu", {.labels = {{"arch", "arm64"}, {"gpu", "yes"}}});
  submit("a-build", {.type = "build"});
  auto x86 = add_worker("x86", {.labels = {{"arch", "x86_64"}, {"gpu", "yes"}}});
  auto arm_no_gpu = add_worker("arm-no-gpu", {.labels = {{"arch", "arm64"}}});
  auto tester = add_worker("tester", {.types = {"test"}, .labels = {{"arch", "arm64"}}});

  EXPECT_FALSE(store().claim(x86, "l-x86", kLongLease).has_value()) << "a label with another value";
  EXPECT_FALSE(store().claim(tester, "l-tester", kLongLease).has_value()) << "no type it runs";
  EXPECT_EQ(claim(arm_no_gpu, "l-arm").assignment.task_id, "needs-arm");
  EXPECT_FALSE(store().claim(arm_no_gpu, "l-arm-2", kLongLease).has_value())
      << "one required label missing";

  auto arm_gpu =
      add_worker("arm-gpu", {.types = {"command", "build"},
                             .labels = {{"arch", "arm64"}, {"gpu", "yes"}, {"extra", "x"}}});
  EXPECT_EQ(claim(arm_gpu, "l-1").assignment.task_id, "needs-arm-gpu");
  auto build = claim(arm_gpu, "l-2");
  EXPECT_EQ(build.assignment.task_id, "a-build");
  EXPECT_EQ(build.type, "build");
  // A task that requires no label goes to any worker of its type.
  submit("anywhere");
  EXPECT_EQ(claim(x86, "l-x86-2").assignment.task_id, "anywhere");
}

TEST_P(StoreConformance, ClaimNeverHandsAWorkerMoreTasksThanItHasSlots) {
  auto w = add_worker("w1", {.slots = 2});
  for (const char* id : {"a", "b", "c"}) submit(id);
  auto a = claim_task("a", w, "l-a");
  claim_task("b", w, "l-b");
  store().cancel("b");  // cancel_requested still holds its slot
  EXPECT_EQ(worker("w1").leased, 2);
  EXPECT_FALSE(store().claim(w, "l-c", kLongLease).has_value());
  EXPECT_EQ(task("c").state, TaskState::kQueued);
  ASSERT_EQ(store().complete("a", "w1", completion(a)).status, FenceStatus::kOk);
  EXPECT_EQ(worker("w1").leased, 1);
  EXPECT_EQ(claim(w, "l-c").assignment.task_id, "c");
}

TEST_P(StoreConformance, ClaimReturnsTheAssignmentAndStartsARunningAttempt) {
  auto w = add_worker("w1");
  submit("t1");
  auto c = claim(w, "lease-xyz", 25s);
  EXPECT_EQ(c.assignment.task_id, "t1");
  EXPECT_EQ(c.assignment.attempt, 1);
  EXPECT_EQ(c.assignment.lease_id, "lease-xyz");
  EXPECT_EQ(c.assignment.lease_ttl_ms, 25000);
  EXPECT_EQ(c.assignment.task, new_task("t1").spec);
  EXPECT_EQ(c.type, "command");
  EXPECT_GE(c.pickup_latency_ms, 0);
  auto view = task("t1");
  EXPECT_EQ(view.state, TaskState::kRunning);
  EXPECT_EQ(view.attempt, 1);
  EXPECT_EQ(view.worker_id, "w1");
  EXPECT_FALSE(view.started_at.has_value()) << "until the worker says it started";
  EXPECT_EQ(worker("w1").leased, 1);
}

TEST_P(StoreConformance, ATaskWaitingForItsRetryIsNotHandedOut) {
  auto w = add_worker("w1");
  submit("t1");
  auto fence = claim_task("t1", w, "l1");
  store().fail("t1", "w1", failure(fence, "worker_shutdown", true), kSlowRetry);
  EXPECT_FALSE(store().claim(w, "l2", kLongLease).has_value());
  EXPECT_TRUE(store().promote_retries().empty());
}

TEST_P(StoreConformance, AHostFailurePassesOverThatWorkerForAWhile) {
  auto w1 = add_worker("w1");
  auto w2 = add_worker("w2");
  const RetryPolicy avoid_long{1ms, 1ms, 100s};
  submit("avoided");
  auto fence = claim_task("avoided", w1, "l1");
  ASSERT_EQ(store().fail("avoided", "w1", failure(fence, "host_failure", true), avoid_long).state,
            TaskState::kRetryWait);
  promote("avoided");
  EXPECT_FALSE(store().claim(w1, "l2", kLongLease).has_value()) << "the host that failed it";
  auto other = claim(w2, "l3");
  EXPECT_EQ(other.assignment.task_id, "avoided");
  EXPECT_EQ(other.assignment.attempt, 2);

  // Once the avoidance is over, the same worker may have it back.
  submit("forgiven");
  fence = claim_task("forgiven", w1, "l4");
  store().fail("forgiven", "w1", failure(fence, "host_failure", true), kInstantRetry);
  promote("forgiven");
  EXPECT_EQ(claim(w1, "l5").assignment.task_id, "forgiven");

  // Another failure code blames the task, not the host.
  submit("not-the-host");
  fence = claim_task("not-the-host", w1, "l6");
  store().fail("not-the-host", "w1", failure(fence, "worker_shutdown", true), avoid_long);
  promote("not-the-host");
  EXPECT_EQ(claim(w1, "l7").assignment.task_id, "not-the-host");
}

TEST_P(StoreConformance, ReleaseGivesAnUndeliveredClaimBackUnderTheSameAttempt) {
  auto w1 = add_worker("w1");
  auto w2 = add_worker("w2");
  submit("t1");
  auto lost = claim_task("t1", w1, "lost-answer");
  EXPECT_FALSE(store().release("t1", 1, "some-other-lease"));
  EXPECT_FALSE(store().release("t1", 2, "lost-answer"));
  EXPECT_FALSE(store().release("no-such-task", 1, "lost-answer"));
  EXPECT_TRUE(store().release("t1", 1, "lost-answer"));
  EXPECT_FALSE(store().release("t1", 1, "lost-answer")) << "released already";
  auto view = task("t1");
  EXPECT_EQ(view.state, TaskState::kQueued);
  EXPECT_EQ(view.attempt, 0);
  EXPECT_FALSE(view.worker_id.has_value());
  EXPECT_EQ(worker("w1").leased, 0);

  auto again = claim(w2, "delivered");
  EXPECT_EQ(again.assignment.attempt, 1);
  EXPECT_EQ(store().started("t1", "w1", lost).status, FenceStatus::kForbidden)
      << "attempt 1 now belongs to w2";
  EXPECT_EQ(store().started("t1", "w2", {1, "delivered"}).status, FenceStatus::kOk);
  ASSERT_EQ(store().complete("t1", "w2", completion({1, "delivered"})).status, FenceStatus::kOk);
  EXPECT_FALSE(store().release("t1", 1, "delivered")) << "a finished task";
}

// ---- leases, retries, acknowledgements
// ------------------------------------------------------------

TEST_P(StoreConformance, AnExpiredLeaseWaitsForItsRetry) {
  auto w = add_worker("w1");
  submit("t1");
  submit("renewed");
  auto fence = claim_task("t1", w, "l1", kTinyLease);
  claim_task("renewed", w, "l2", kLongLease);
  let_tiny_durations_pass();
  auto expired = store().expire_leases(kSlowRetry);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].task_id, "t1");
  EXPECT_EQ(expired[0].attempt, 1);
  EXPECT_EQ(expired[0].state, TaskState::kRetryWait);
  EXPECT_TRUE(store().expire_leases(kSlowRetry).empty()) << "a second pass finds nothing";

  auto view = task("t1");
  EXPECT_EQ(view.state, TaskState::kRetryWait);
  ASSERT_TRUE(view.error.has_value());
  EXPECT_EQ(view.error->code, "lease_expired");
  EXPECT_TRUE(view.error->retryable);
  ASSERT_TRUE(view.retry_in_ms.has_value());
  EXPECT_GT(*view.retry_in_ms, 70000);
  EXPECT_LE(*view.retry_in_ms, 100000);
  EXPECT_FALSE(view.finished_at.has_value());
  EXPECT_EQ(worker("w1").leased, 1);
  EXPECT_EQ(store().started("t1", "w1", fence).status, FenceStatus::kLeaseLost);
  wire::HeartbeatRequest hb;
  hb.leases.push_back({"t1", 1, "l1"});
  auto out = store().heartbeat("w1", hb, kLongLease);
  ASSERT_EQ(out.response.lost_leases.size(), 1u);
  EXPECT_EQ(out.response.lost_leases[0].task_id, "t1");
}

TEST_P(StoreConformance, RetryBackoffDoublesWithEachAttemptUpToTheMax) {
  auto w = add_worker("w1");
  const RetryPolicy policy{100s, 1000s, 100s};
  const RetryPolicy capped{100s, 250s, 100s};
  // Earlier attempts fail with an instant retry to get to the attempt under test quickly;
  // each failure is judged by the policy passed with it.
  auto fail_attempts = [&](const std::string& id, int attempts, const RetryPolicy& last) {
    submit(id);
    for (int attempt = 1; attempt <= attempts; ++attempt) {
      auto fence = claim_task(id, w, id + "-" + std::to_string(attempt));
      const bool is_last = attempt == attempts;
      auto out = store().fail(id, "w1", failure(fence, "worker_shutdown", true),
                              is_last ? last : kInstantRetry);
      if (out.state != TaskState::kRetryWait) throw std::runtime_error("not retry_wait: " + id);
      if (!is_last) promote(id);
    }
    return task(id).retry_in_ms.value_or(-1);
  };
  const auto first = fail_attempts("after-attempt-1", 1, policy);
  EXPECT_GT(first, 70000);
  EXPECT_LE(first, 100000);
  const auto second = fail_attempts("after-attempt-2", 2, policy);
  EXPECT_GT(second, 170000);
  EXPECT_LE(second, 200000);
  const auto third = fail_attempts("after-attempt-3", 3, capped);
  EXPECT_GT(third, 220000) << "min(100 s * 4, 250 s)";
  EXPECT_LE(third, 250000);

  // An expired lease waits by the same rule.
  submit("expired");
  claim_task("expired", w, "l-expired", kTinyLease);
  let_tiny_durations_pass();
  ASSERT_EQ(store().expire_leases(policy).size(), 1u);
  EXPECT_GT(task("expired").retry_in_ms.value_or(-1), 70000);
  EXPECT_LE(task("expired").retry_in_ms.value_or(-1), 100000);
}

TEST_P(StoreConformance, AnExpiredLeaseWithNoRetryLeftIsDead) {
  auto w = add_worker("w1");
  submit("once", {.max_retries = 0});
  submit("twice", {.max_retries = 1});
  claim_task("once", w, "l-once", kTinyLease);
  claim_task("twice", w, "l-twice-1", kTinyLease);
  let_tiny_durations_pass();
  std::map<std::string, TaskState> states;
  for (const auto& r : store().expire_leases(kInstantRetry)) states[r.task_id] = r.state;
  EXPECT_EQ(states["once"], TaskState::kDead);
  EXPECT_EQ(states["twice"], TaskState::kRetryWait);
  EXPECT_TRUE(task("once").finished_at.has_value());

  promote("twice");
  claim_task("twice", w, "l-twice-2", kTinyLease);
  let_tiny_durations_pass();
  auto expired = store().expire_leases(kInstantRetry);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].attempt, 2);
  EXPECT_EQ(expired[0].state, TaskState::kDead);
  auto view = task("twice");
  EXPECT_EQ(view.state, TaskState::kDead);
  EXPECT_TRUE(view.finished_at.has_value());
  EXPECT_FALSE(view.retry_in_ms.has_value());
  EXPECT_EQ(view.error.value_or(wire::TaskFailure{}).code, "lease_expired");
}

TEST_P(StoreConformance, AnExpiredLeaseOfATaskBeingCancelledEndsItCancelled) {
  auto w = add_worker("w1");
  submit("t1");
  claim_task("t1", w, "l1", kTinyLease);
  ASSERT_EQ(store().cancel("t1")->state, TaskState::kCancelRequested);
  let_tiny_durations_pass();
  auto expired = store().expire_leases(kInstantRetry);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].state, TaskState::kCancelled);
  EXPECT_EQ(task("t1").state, TaskState::kCancelled);
  EXPECT_TRUE(task("t1").finished_at.has_value());
  EXPECT_TRUE(store().promote_retries().empty());
}

TEST_P(StoreConformance, HostFailuresAreExcusedFromMaxRetriesUpToFive) {
  auto w = add_worker("w1");
  submit("broken-hosts", {.max_retries = 0});
  for (int attempt = 1; attempt <= 5; ++attempt) {
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    std::string lease = "l";  // appended: `"l" + std::to_string(...)` trips GCC 12's -Wrestrict
    lease += std::to_string(attempt);
    auto fence = claim_task("broken-hosts", w, lease);
    ASSERT_EQ(fence.attempt, attempt);
    ASSERT_EQ(store()
                  .fail("broken-hosts", "w1", failure(fence, "host_failure", true), kInstantRetry)
                  .state,
              TaskState::kRetryWait);
    promote("broken-hosts");
  }
  // The sixth counts: with no retry left, the task ends.
  auto sixth = claim_task("broken-hosts", w, "l6");
  EXPECT_EQ(
      store().fail("broken-hosts", "w1", failure(sixth, "host_failure", true), kInstantRetry).state,
      TaskState::kDead);

  // Only retryable host failures are excused, and only from failures of the task itself.
  submit("not-retryable", {.max_retries = 3});
  auto fence = claim_task("not-retryable", w, "l-nr");
  EXPECT_EQ(store()
                .fail("not-retryable", "w1", failure(fence, "host_failure", false), kInstantRetry)
                .state,
            TaskState::kFailed);
  submit("task-failure", {.max_retries = 0});
  fence = claim_task("task-failure", w, "l-tf");
  EXPECT_EQ(store()
                .fail("task-failure", "w1", failure(fence, "worker_shutdown", true), kInstantRetry)
                .state,
            TaskState::kDead);

  // A lease expiry after a host failure: the excused attempt is not counted against it.
  submit("expires-later", {.max_retries = 1});
  fence = claim_task("expires-later", w, "l-el-1");
  store().fail("expires-later", "w1", failure(fence, "host_failure", true), kInstantRetry);
  promote("expires-later");
  claim_task("expires-later", w, "l-el-2", kTinyLease);
  let_tiny_durations_pass();
  auto expired = store().expire_leases(kInstantRetry);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].state, TaskState::kRetryWait) << "attempt 2, one of them excused";
  promote("expires-later");
  claim_task("expires-later", w, "l-el-3", kTinyLease);
  let_tiny_durations_pass();
  expired = store().expire_leases(kInstantRetry);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].state, TaskState::kDead);
}

TEST_P(StoreConformance, ExtendLeasesGivesEveryHeldLeaseAtLeastOneMoreTtl) {
  auto w = add_worker("w1");
  for (const char* id : {"running", "cancelling", "queued"}) submit(id);
  claim_task("running", w, "l1", kTinyLease);
  claim_task("cancelling", w, "l2", kTinyLease);
  store().cancel("cancelling");
  let_tiny_durations_pass();
  EXPECT_EQ(store().extend_leases(kLongLease), 2) << "both held leases";
  EXPECT_TRUE(store().expire_leases(kInstantRetry).empty());
  // Never shortened: a smaller TTL leaves the longer deadline.
  EXPECT_EQ(store().extend_leases(kTinyLease), 2);
  let_tiny_durations_pass();
  EXPECT_TRUE(store().expire_leases(kInstantRetry).empty());
  EXPECT_EQ(task("running").state, TaskState::kRunning);
  EXPECT_EQ(task("cancelling").state, TaskState::kCancelRequested);
  EXPECT_EQ(task("queued").state, TaskState::kQueued);
}

TEST_P(StoreConformance, ExtendLeasesRestartsTheWaitForAnAcknowledgement) {
  auto w = add_worker("w1");
  submit("t1");
  claim_task("t1", w, "l1");
  // Generous margins: the check right after extend_leases() must come within `ack_timeout`.
  constexpr auto ack_timeout = 400ms;
  std::this_thread::sleep_for(ack_timeout + 200ms);
  store().extend_leases(kLongLease);
  EXPECT_TRUE(store().requeue_unacknowledged(ack_timeout).empty())
      << "the time before the restart does not count";
  std::this_thread::sleep_for(ack_timeout + 100ms);
  auto requeued = store().requeue_unacknowledged(ack_timeout);
  ASSERT_EQ(requeued.size(), 1u);
  EXPECT_EQ(requeued[0].task_id, "t1");
}

TEST_P(StoreConformance, PromoteRetriesQueuesOnlyTasksWhoseBackoffIsOver) {
  auto w = add_worker("w1");
  submit("due");
  submit("not-due");
  auto due = claim_task("due", w, "l1");
  auto not_due = claim_task("not-due", w, "l2");
  store().fail("due", "w1", failure(due, "worker_shutdown", true), kInstantRetry);
  store().fail("not-due", "w1", failure(not_due, "worker_shutdown", true), kSlowRetry);
  let_tiny_durations_pass();
  auto promoted = store().promote_retries();
  ASSERT_EQ(promoted.size(), 1u);
  EXPECT_EQ(promoted[0].task_id, "due");
  EXPECT_EQ(promoted[0].attempt, 1);
  EXPECT_EQ(promoted[0].state, TaskState::kQueued);
  auto view = task("due");
  EXPECT_EQ(view.state, TaskState::kQueued);
  EXPECT_EQ(view.attempt, 1) << "the next claim makes it 2";
  EXPECT_FALSE(view.retry_in_ms.has_value());
  EXPECT_EQ(task("not-due").state, TaskState::kRetryWait);
  EXPECT_TRUE(store().promote_retries().empty());
}

TEST_P(StoreConformance, AnUnacknowledgedClaimIsQueuedAgainUnderTheSameAttempt) {
  auto w = add_worker("w1", {.slots = 10});
  for (const char* id : {"silent", "started", "heartbeat", "logged", "progress", "artifact"}) {
    submit(id);
  }
  auto silent = claim_task("silent", w, "l-silent");
  auto started = claim_task("started", w, "l-started");
  auto heartbeat = claim_task("heartbeat", w, "l-heartbeat");
  auto logged = claim_task("logged", w, "l-logged");
  auto progress = claim_task("progress", w, "l-progress");
  auto artifact = claim_task("artifact", w, "l-artifact");
  // Each way a worker shows it has the task acknowledges it.
  ASSERT_EQ(store().started("started", "w1", started).status, FenceStatus::kOk);
  wire::HeartbeatRequest hb;
  hb.leases.push_back({"heartbeat", heartbeat.attempt, heartbeat.lease_id});
  ASSERT_TRUE(store().heartbeat("w1", hb, kLongLease).known);
  ASSERT_EQ(store().append_log("logged", "w1", logged, 0, "x", kMaxLog).fence.status,
            FenceStatus::kOk);
  wire::ProgressRequest p;
  p.fence = progress;
  ASSERT_EQ(store().progress("progress", "w1", p).status, FenceStatus::kOk);
  ASSERT_EQ(store().add_artifact("artifact", "w1", artifact, {"out.txt", 1, 3, "abc"}, "/x").status,
            FenceStatus::kOk);

  EXPECT_TRUE(store().requeue_unacknowledged(std::chrono::hours(1)).empty()) << "not yet due";
  let_tiny_durations_pass();
  auto requeued = store().requeue_unacknowledged(1ms);
  ASSERT_EQ(requeued.size(), 1u);
  EXPECT_EQ(requeued[0].task_id, "silent");
  EXPECT_EQ(requeued[0].attempt, 1);
  EXPECT_EQ(requeued[0].state, TaskState::kQueued);
  for (const char* id : {"started", "heartbeat", "logged", "progress", "artifact"}) {
    EXPECT_EQ(task(id).state, TaskState::kRunning) << id;
  }
  auto view = task("silent");
  EXPECT_EQ(view.state, TaskState::kQueued);
  EXPECT_EQ(view.attempt, 0) << "the attempt did not count";
  EXPECT_EQ(worker("w1").leased, 5);
  // Until it is handed out again, the lost lease's attempt is nobody's.
  EXPECT_EQ(store().started("silent", "w1", silent).status, FenceStatus::kForbidden);

  auto again = claim(w, "l-again");
  EXPECT_EQ(again.assignment.task_id, "silent");
  EXPECT_EQ(again.assignment.attempt, 1);
  EXPECT_EQ(store().started("silent", "w1", silent).status, FenceStatus::kLeaseLost)
      << "the old lease id stays fenced out";
  EXPECT_EQ(store().started("silent", "w1", {1, "l-again"}).status, FenceStatus::kOk);
}

TEST_P(StoreConformance, NextDeadlineIsTheNearestLeaseRetryOrAcknowledgement) {
  constexpr auto ack_timeout = std::chrono::milliseconds(5s);
  EXPECT_FALSE(store().next_deadline_ms(ack_timeout).has_value()) << "an empty store";
  auto w = add_worker("w1");
  submit("queued", {.type = "build"});  // a type w1 does not run: it stays queued
  EXPECT_FALSE(store().next_deadline_ms(ack_timeout).has_value()) << "queued tasks wait for nobody";

  submit("leased");
  auto leased = claim_task("leased", w, "l1", 60s);
  store().started("leased", "w1", leased);
  auto next = store().next_deadline_ms(ack_timeout);
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, 30000);
  EXPECT_LE(*next, 60000) << "the lease";

  submit("retrying");
  auto retrying = claim_task("retrying", w, "l2");
  store().fail("retrying", "w1", failure(retrying, "worker_shutdown", true), {20s, 20s, 20s});
  next = store().next_deadline_ms(ack_timeout);
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, 10000);
  EXPECT_LE(*next, 20000) << "the retry";

  submit("unacknowledged");
  claim_task("unacknowledged", w, "l3", 60s);
  next = store().next_deadline_ms(ack_timeout);
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, 0);
  EXPECT_LE(*next, 5000) << "the acknowledgement";

  submit("overdue");
  auto overdue = claim_task("overdue", w, "l4", kTinyLease);
  store().started("overdue", "w1", overdue);
  let_tiny_durations_pass();
  next = store().next_deadline_ms(ack_timeout);
  ASSERT_TRUE(next.has_value());
  EXPECT_LE(*next, 0) << "a deadline already passed is due now";
}

// ---- fenced writes ------------------------------------------------------------------------------

enum class FencedWrite { kStarted, kProgress, kAppendLog, kAddArtifact, kComplete, kFail };

const char* name_of(FencedWrite write) {
  switch (write) {
    case FencedWrite::kStarted:
      return "started";
    case FencedWrite::kProgress:
      return "progress";
    case FencedWrite::kAppendLog:
      return "append_log";
    case FencedWrite::kAddArtifact:
      return "add_artifact";
    case FencedWrite::kComplete:
      return "complete";
    case FencedWrite::kFail:
      return "fail";
  }
  return "?";
}

FenceOutcome write_fenced(Store& store, FencedWrite write, const std::string& task_id,
                          const std::string& worker_id, const wire::Fence& fence) {
  switch (write) {
    case FencedWrite::kStarted:
      return store.started(task_id, worker_id, fence);
    case FencedWrite::kProgress: {
      wire::ProgressRequest request;
      request.fence = fence;
      request.percent = 50;
      return store.progress(task_id, worker_id, request);
    }
    case FencedWrite::kAppendLog:
      return store.append_log(task_id, worker_id, fence, 0, "log line\n", kMaxLog).fence;
    case FencedWrite::kAddArtifact:
      return store.add_artifact(task_id, worker_id, fence, {"a.txt", fence.attempt, 1, "00"},
                                "/artifacts/a");
    case FencedWrite::kComplete:
      return store.complete(task_id, worker_id, completion(fence));
    case FencedWrite::kFail:
      return store.fail(task_id, worker_id, failure(fence, "worker_shutdown", true), kSlowRetry);
  }
  throw std::logic_error("unknown fenced write");
}

TEST_P(StoreConformance, FencedWritesAnswerNotFoundForbiddenOrLeaseLost) {
  auto w1 = add_worker("w1", {.slots = 100});
  auto w2 = add_worker("w2", {.slots = 100});
  for (auto write : {FencedWrite::kStarted, FencedWrite::kProgress, FencedWrite::kAppendLog,
                     FencedWrite::kAddArtifact, FencedWrite::kComplete, FencedWrite::kFail}) {
    const std::string name = name_of(write);
    SCOPED_TRACE(name);
    auto check = [&](const std::string& task_id, const std::string& worker_id,
                     const wire::Fence& fence, FenceStatus status, TaskState state, int attempt) {
      auto out = write_fenced(store(), write, task_id, worker_id, fence);
      EXPECT_EQ(out.status, status) << task_id << " by " << worker_id << " with attempt "
                                    << fence.attempt << " lease " << fence.lease_id;
      if (status == FenceStatus::kNotFound) return;
      EXPECT_EQ(out.state, state) << task_id;
      EXPECT_EQ(out.attempt, attempt) << task_id;
    };
    check("no-such-task", "w1", {1, "l"}, FenceStatus::kNotFound, TaskState::kQueued, 0);

    const std::string never = name + "-never-leased";
    submit(never, {.type = "build"});  // neither worker runs builds: it stays queued
    check(never, "w1", {0, ""}, FenceStatus::kForbidden, TaskState::kQueued, 0);
    check(never, "w1", {1, "l"}, FenceStatus::kForbidden, TaskState::kQueued, 0);

    const std::string current = name + "-current";
    submit(current);
    auto fence = claim_task(current, w1, current + "-lease");
    check(current, "w2", fence, FenceStatus::kForbidden, TaskState::kRunning, 1);
    check(current, "w1", {1, "a-lease-it-never-had"}, FenceStatus::kLeaseLost, TaskState::kRunning,
          1);
    check(current, "w1", {2, fence.lease_id}, FenceStatus::kForbidden, TaskState::kRunning, 1);

    // An attempt that ran out and went to another worker.
    const std::string taken = name + "-taken-over";
    submit(taken);
    auto old_fence = claim_task(taken, w1, taken + "-lease-1", kTinyLease);
    let_tiny_durations_pass();
    ASSERT_EQ(store().expire_leases(kInstantRetry).size(), 1u);
    promote(taken);
    claim_task(taken, w2, taken + "-lease-2");
    check(taken, "w1", old_fence, FenceStatus::kLeaseLost, TaskState::kRunning, 2);

    // The rightful write, then the same fence once the task has ended.
    const TaskState after = write == FencedWrite::kComplete ? TaskState::kSucceeded
                            : write == FencedWrite::kFail   ? TaskState::kRetryWait
                                                            : TaskState::kRunning;
    check(current, "w1", fence, FenceStatus::kOk, after, 1);
    if (after == TaskState::kRunning) {
      ASSERT_EQ(store().complete(current, "w1", completion(fence)).status, FenceStatus::kOk);
    }
    const TaskState ended = after == TaskState::kRunning ? TaskState::kSucceeded : after;
    check(current, "w1", fence, FenceStatus::kLeaseLost, ended, 1);
  }
}

TEST_P(StoreConformance, StartedAndProgressAreShownAndANewAttemptStartsClean) {
  auto w = add_worker("w1");
  submit("t1");
  auto fence = claim_task("t1", w, "l1");
  EXPECT_EQ(store().started("t1", "w1", fence).state, TaskState::kRunning);
  wire::ProgressRequest p;
  p.fence = fence;
  p.percent = 42.5;
  p.step = "test";
  p.message = "ran 17 of 40";
  EXPECT_EQ(store().progress("t1", "w1", p).status, FenceStatus::kOk);
  store().append_log("t1", "w1", fence, 0, "attempt one\n", kMaxLog);
  auto view = task("t1");
  EXPECT_TRUE(view.started_at.has_value() && is_api_time(*view.started_at));
  EXPECT_EQ(view.progress.percent, 42.5);
  EXPECT_EQ(view.progress.step, "test");
  EXPECT_EQ(view.progress.message, "ran 17 of 40");
  EXPECT_EQ(view.log_length, 12u);

  // A progress report replaces the previous one as a whole.
  wire::ProgressRequest step_only;
  step_only.fence = fence;
  step_only.step = "package";
  store().progress("t1", "w1", step_only);
  view = task("t1");
  EXPECT_FALSE(view.progress.percent.has_value());
  EXPECT_EQ(view.progress.step, "package");
  EXPECT_FALSE(view.progress.message.has_value());

  store().fail("t1", "w1", failure(fence, "worker_shutdown", true), kInstantRetry);
  promote("t1");
  claim_task("t1", w, "l2");
  view = task("t1");
  EXPECT_EQ(view.attempt, 2);
  EXPECT_FALSE(view.started_at.has_value());
  EXPECT_FALSE(view.progress.percent.has_value());
  EXPECT_FALSE(view.progress.step.has_value());
  EXPECT_EQ(view.log_length, 0u) << "each attempt has its own log";
}

TEST_P(StoreConformance, CompleteEndsTheTaskAsItsResultStatusSays) {
  auto w = add_worker("w1", {.slots = 10});
  struct Case {
    std::string id;
    json result;
    TaskState state;
  };
  const std::vector<Case> cases = {
      {"succeeded", {{"status", "succeeded"}, {"steps", json::array()}}, TaskState::kSucceeded},
      {"cancelled", {{"status", "cancelled"}}, TaskState::kCancelled},
      {"failed",
       {{"status", "failed"}, {"error", {{"code", "step_failed"}, {"message", "make exited 2"}}}},
       TaskState::kFailed},
      {"timed-out", {{"status", "timed_out"}}, TaskState::kFailed},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.id);
    submit(c.id);
    auto fence = claim_task(c.id, w, "l-" + c.id);
    wire::CompleteRequest request;
    request.fence = fence;
    request.result = c.result;
    request.log.missing_bytes = 42;
    auto out = store().complete(c.id, "w1", request);
    EXPECT_EQ(out.status, FenceStatus::kOk);
    EXPECT_EQ(out.state, c.state);
    EXPECT_EQ(out.attempt, 1);
    auto view = task(c.id);
    EXPECT_EQ(view.state, c.state);
    EXPECT_EQ(view.result, c.result);
    EXPECT_EQ(view.log_missing_bytes, 42u);
    EXPECT_TRUE(view.finished_at.has_value() && is_api_time(*view.finished_at));
    // Repeated after it counted: refused, the task as it ended.
    auto again = store().complete(c.id, "w1", request);
    EXPECT_EQ(again.status, FenceStatus::kLeaseLost);
    EXPECT_EQ(again.state, c.state);
  }
  auto failed = task("failed");
  ASSERT_TRUE(failed.error.has_value());
  EXPECT_EQ(failed.error->code, "step_failed");
  EXPECT_EQ(failed.error->message, "make exited 2");
  EXPECT_FALSE(failed.error->retryable);
  EXPECT_FALSE(task("succeeded").error.has_value());
  EXPECT_EQ(worker("w1").leased, 0);
}

TEST_P(StoreConformance, ASuccessAfterALostLeaseCarriesNoStaleError) {
  auto w = add_worker("w1");
  submit("t1");
  claim_task("t1", w, "l1", kTinyLease);
  let_tiny_durations_pass();
  store().expire_leases(kInstantRetry);
  ASSERT_TRUE(task("t1").error.has_value());
  promote("t1");
  auto fence = claim_task("t1", w, "l2");
  ASSERT_EQ(store().complete("t1", "w1", completion(fence)).state, TaskState::kSucceeded);
  EXPECT_FALSE(task("t1").error.has_value());
}

TEST_P(StoreConformance, ATaskBeingCancelledEndsAsItsWorkerReports) {
  auto w = add_worker("w1");
  for (const char* id : {"finished-first", "stopped", "failed-meanwhile"}) {
    submit(id);
    claim_task(id, w, std::string("l-") + id);
    store().cancel(id);
  }
  EXPECT_EQ(store().complete("finished-first", "w1", completion({1, "l-finished-first"})).state,
            TaskState::kSucceeded);
  EXPECT_EQ(store().complete("stopped", "w1", completion({1, "l-stopped"}, "cancelled")).state,
            TaskState::kCancelled);
  EXPECT_EQ(store()
                .fail("failed-meanwhile", "w1",
                      failure({1, "l-failed-meanwhile"}, "worker_shutdown", true), kInstantRetry)
                .state,
            TaskState::kCancelled)
      << "no retry for a task being cancelled";
  EXPECT_TRUE(task("failed-meanwhile").finished_at.has_value());
}

TEST_P(StoreConformance, FailRetriesARetryableFailureAndEndsAnyOther) {
  auto w = add_worker("w1", {.slots = 10});
  submit("retryable");
  submit("final");
  submit("spent", {.max_retries = 0});
  auto retryable = claim_task("retryable", w, "l1");
  auto final_fence = claim_task("final", w, "l2");
  auto spent = claim_task("spent", w, "l3");

  wire::FailRequest request = failure(retryable, "sandbox_setup", true);
  request.log.missing_bytes = 7;
  auto out = store().fail("retryable", "w1", request, kSlowRetry);
  EXPECT_EQ(out.status, FenceStatus::kOk);
  EXPECT_EQ(out.state, TaskState::kRetryWait);
  EXPECT_EQ(out.attempt, 1);
  auto view = task("retryable");
  ASSERT_TRUE(view.error.has_value());
  EXPECT_EQ(view.error->code, "sandbox_setup");
  EXPECT_EQ(view.error->message, "it broke: sandbox_setup");
  EXPECT_TRUE(view.error->retryable);
  EXPECT_TRUE(view.retry_in_ms.has_value());
  EXPECT_EQ(view.log_missing_bytes, 7u);
  EXPECT_FALSE(view.finished_at.has_value());

  request = failure(final_fence, "bad_workspace", false);
  request.result = json{{"status", "failed"}, {"steps", json::array({"partial"})}};
  EXPECT_EQ(store().fail("final", "w1", request, kInstantRetry).state, TaskState::kFailed);
  view = task("final");
  EXPECT_EQ(view.result, request.result);
  ASSERT_TRUE(view.error.has_value());
  EXPECT_EQ(view.error->code, "bad_workspace");
  EXPECT_FALSE(view.error->retryable);
  EXPECT_TRUE(view.finished_at.has_value());

  EXPECT_EQ(
      store().fail("spent", "w1", failure(spent, "worker_shutdown", true), kInstantRetry).state,
      TaskState::kDead);
  EXPECT_TRUE(task("spent").finished_at.has_value());
  EXPECT_EQ(worker("w1").leased, 0);
}

// ---- logs ---------------------------------------------------------------------------------------

TEST_P(StoreConformance, AppendLogAppendsResendsAndRefusesAsTheProtocolSays) {
  auto w = add_worker("w1");
  submit("t1");
  auto fence = claim_task("t1", w, "l1");
  auto append = [&](std::uint64_t offset, std::string_view data, LogKind kind, std::uint64_t length,
                    std::uint64_t max = kMaxLog) {
    auto out = store().append_log("t1", "w1", fence, offset, data, max);
    EXPECT_EQ(out.fence.status, FenceStatus::kOk);
    EXPECT_EQ(out.fence.state, TaskState::kRunning);
    EXPECT_EQ(out.fence.attempt, 1);
    EXPECT_EQ(kind_name(out.kind), std::string(kind_name(kind)))
        << "offset " << offset << " data '" << data << "'";
    EXPECT_EQ(out.length, length) << "offset " << offset << " data '" << data << "'";
  };
  append(0, "hello", LogKind::kAppended, 5);
  append(5, " world", LogKind::kAppended, 11);
  append(0, "hello", LogKind::kDuplicate, 11);        // a resend after a lost answer
  append(0, "hello world", LogKind::kDuplicate, 11);  // the whole log again
  append(6, "world!!", LogKind::kAppended, 13);       // overlaps, then goes on
  append(0, "HELLO", LogKind::kMismatch, 13);         // rewrites what is held
  append(10, "D!!more", LogKind::kMismatch, 13);      // the overlap decides, not the rest
  append(14, "x", LogKind::kGap, 13);                 // past the end
  append(13, "", LogKind::kDuplicate, 13);            // nothing new
  append(13, "abc", LogKind::kTooLarge, 13, 15);      // would pass max_bytes
  append(13, "ab", LogKind::kAppended, 15, 15);       // up to max_bytes exactly
  append(12, "!ab", LogKind::kDuplicate, 15, 15);     // a resend within the limit
  EXPECT_EQ(task("t1").log_length, 15u);
  auto read = store().read_log("t1", std::nullopt, 0, kMaxLog);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->data, "hello world!!ab");
  EXPECT_EQ(read->length, 15u);
}

TEST_P(StoreConformance, ALogKeepsAnyBytesAndReadsFromAnyOffset) {
  auto w = add_worker("w1");
  submit("t1");
  auto fence = claim_task("t1", w, "l1");
  // Every byte value (NUL and invalid UTF-8 included), over more than one 64 KiB piece.
  std::string first;
  for (std::size_t i = 0; i < 150 * 1024; ++i)
    first.push_back(static_cast<char>((i * 7 + i / 256) % 256));
  std::string second(70 * 1024, '\0');
  for (std::size_t i = 0; i < second.size(); ++i) second[i] = static_cast<char>(255 - i % 256);
  auto out = store().append_log("t1", "w1", fence, 0, first, kMaxLog);
  ASSERT_EQ(kind_name(out.kind), std::string(kind_name(LogKind::kAppended)));
  out = store().append_log("t1", "w1", fence, first.size(), second, kMaxLog);
  ASSERT_EQ(kind_name(out.kind), std::string(kind_name(LogKind::kAppended)));
  const std::string whole = first + second;
  ASSERT_EQ(out.length, whole.size());
  // The same bytes again from the middle: recognised byte for byte.
  out = store().append_log("t1", "w1", fence, 65530, whole.substr(65530, 70000), kMaxLog);
  EXPECT_EQ(kind_name(out.kind), std::string(kind_name(LogKind::kDuplicate)));
  std::string changed = whole.substr(65530, 70000);
  changed[69999] = static_cast<char>(changed[69999] ^ 1);
  out = store().append_log("t1", "w1", fence, 65530, changed, kMaxLog);
  EXPECT_EQ(kind_name(out.kind), std::string(kind_name(LogKind::kMismatch)));

  auto read = [&](std::uint64_t offset, std::uint64_t max) {
    auto r = store().read_log("t1", std::nullopt, offset, max);
    if (!r) throw std::runtime_error("no log");
    EXPECT_EQ(r->length, whole.size());
    EXPECT_EQ(r->attempt, 1);
    EXPECT_TRUE(r->open);
    return r->data;
  };
  EXPECT_EQ(read(0, kMaxLog), whole);
  for (std::uint64_t offset :
       {1ULL, 65535ULL, 65536ULL, 65537ULL, 131071ULL, 150ULL * 1024 - 3, 200000ULL}) {
    for (std::uint64_t max : {0ULL, 1ULL, 10ULL, 70000ULL}) {
      EXPECT_EQ(read(offset, max), whole.substr(offset, max))
          << "offset " << offset << " max " << max;
    }
  }
  EXPECT_EQ(read(whole.size(), 10), "");
  EXPECT_EQ(read(whole.size() + 100, 10), "") << "past the end";
}

TEST_P(StoreConformance, EachAttemptHasItsOwnLogAndOnlyTheRunningOneIsOpen) {
  auto w = add_worker("w1");
  EXPECT_FALSE(store().read_log("no-such-task", std::nullopt, 0, kMaxLog).has_value());
  submit("t1");
  auto never_run = store().read_log("t1", std::nullopt, 0, kMaxLog);
  ASSERT_TRUE(never_run.has_value());
  EXPECT_EQ(never_run->attempt, 0);
  EXPECT_EQ(never_run->length, 0u);
  EXPECT_EQ(never_run->data, "");
  EXPECT_FALSE(never_run->open);

  auto first = claim_task("t1", w, "l1");
  store().append_log("t1", "w1", first, 0, "first attempt\n", kMaxLog);
  auto running = store().read_log("t1", std::nullopt, 0, kMaxLog);
  ASSERT_TRUE(running.has_value());
  EXPECT_EQ(running->attempt, 1);
  EXPECT_TRUE(running->open);
  EXPECT_EQ(running->data, "first attempt\n");

  store().fail("t1", "w1", failure(first, "worker_shutdown", true), kInstantRetry);
  auto waiting = store().read_log("t1", std::nullopt, 0, kMaxLog);
  ASSERT_TRUE(waiting.has_value());
  EXPECT_EQ(waiting->attempt, 1);
  EXPECT_FALSE(waiting->open) << "the attempt is over";
  EXPECT_EQ(waiting->length, 14u);
  EXPECT_EQ(waiting->data, "first attempt\n");

  promote("t1");
  auto second = claim_task("t1", w, "l2");
  auto fresh = store().read_log("t1", std::nullopt, 0, kMaxLog);
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->attempt, 2);
  EXPECT_EQ(fresh->length, 0u);
  EXPECT_TRUE(fresh->open);
  store().append_log("t1", "w1", second, 0, "second\n", kMaxLog);

  auto older = store().read_log("t1", 1, 6, 7);
  ASSERT_TRUE(older.has_value());
  EXPECT_EQ(older->attempt, 1);
  EXPECT_EQ(older->length, 14u);
  EXPECT_FALSE(older->open);
  EXPECT_EQ(older->data, "attempt");
  auto unrun = store().read_log("t1", 7, 0, kMaxLog);
  ASSERT_TRUE(unrun.has_value());
  EXPECT_EQ(unrun->attempt, 7);
  EXPECT_EQ(unrun->length, 0u);
  EXPECT_FALSE(unrun->open);

  store().cancel("t1");
  EXPECT_TRUE(store().read_log("t1", std::nullopt, 0, kMaxLog)->open)
      << "a task being cancelled may still write";
  store().complete("t1", "w1", completion(second, "cancelled"));
  auto closed = store().read_log("t1", std::nullopt, 0, kMaxLog);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->attempt, 2);
  EXPECT_FALSE(closed->open);
  EXPECT_EQ(closed->length, 7u);
  EXPECT_EQ(closed->data, "second\n");
  EXPECT_EQ(store().read_log("t1", 2, 3, kMaxLog)->data, "ond\n");
}

// ---- artifacts ----------------------------------------------------------------------------------

TEST_P(StoreConformance, ArtifactsAreRecordedPerAttemptAndReplacedByName) {
  auto w = add_worker("w1");
  submit("t1");
  auto first = claim_task("t1", w, "l1");
  const std::string sha_a(64, 'a');
  const std::string sha_b(64, 'b');
  ASSERT_EQ(store()
                .add_artifact("t1", "w1", first, {"dist/app.tgz", 1, 100, sha_a},
                              "/data/artifacts/t1/1/old")
                .status,
            FenceStatus::kOk);
  ASSERT_EQ(store()
                .add_artifact("t1", "w1", first, {"reports/junit.xml", 1, 5, sha_b},
                              "/data/artifacts/t1/1/junit")
                .status,
            FenceStatus::kOk);
  // The same name again replaces it.
  ASSERT_EQ(store()
                .add_artifact("t1", "w1", first, {"dist/app.tgz", 1, 200, sha_b},
                              "/data/artifacts/t1/1/new")
                .status,
            FenceStatus::kOk);
  EXPECT_EQ(store().artifact_path("t1", 1, "dist/app.tgz"), "/data/artifacts/t1/1/new");
  EXPECT_EQ(store().artifact_path("t1", 1, "reports/junit.xml"), "/data/artifacts/t1/1/junit");
  EXPECT_FALSE(store().artifact_path("t1", 1, "missing").has_value());
  EXPECT_FALSE(store().artifact_path("t1", 2, "dist/app.tgz").has_value());
  EXPECT_FALSE(store().artifact_path("no-such-task", 1, "dist/app.tgz").has_value());

  store().fail("t1", "w1", failure(first, "worker_shutdown", true), kInstantRetry);
  promote("t1");
  auto second = claim_task("t1", w, "l2");
  ASSERT_EQ(store()
                .add_artifact("t1", "w1", second, {"dist/app.tgz", 2, 300, sha_a},
                              "/data/artifacts/t1/2/app")
                .status,
            FenceStatus::kOk);
  EXPECT_EQ(store().artifact_path("t1", 1, "dist/app.tgz"), "/data/artifacts/t1/1/new");
  EXPECT_EQ(store().artifact_path("t1", 2, "dist/app.tgz"), "/data/artifacts/t1/2/app");

  auto artifacts = task("t1").artifacts;
  ASSERT_EQ(artifacts.size(), 3u);
  // By attempt, then name.
  EXPECT_EQ(artifacts[0].name, "dist/app.tgz");
  EXPECT_EQ(artifacts[0].attempt, 1);
  EXPECT_EQ(artifacts[0].size, 200u);
  EXPECT_EQ(artifacts[0].sha256, sha_b);
  EXPECT_EQ(artifacts[1].name, "reports/junit.xml");
  EXPECT_EQ(artifacts[1].attempt, 1);
  EXPECT_EQ(artifacts[1].size, 5u);
  EXPECT_EQ(artifacts[2].name, "dist/app.tgz");
  EXPECT_EQ(artifacts[2].attempt, 2);
  EXPECT_EQ(artifacts[2].size, 300u);
  EXPECT_EQ(artifacts[2].sha256, sha_a);
}

// ---- cancel -------------------------------------------------------------------------------------

TEST_P(StoreConformance, CancelEndsAnIdleTaskAtOnceAndAsksARunningOneToStop) {
  auto w = add_worker("w1", {.slots = 10});
  EXPECT_FALSE(store().cancel("no-such-task").has_value());
  for (const char* id : {"running", "retrying", "succeeded", "queued"}) submit(id);
  auto running = claim_task("running", w, "l-running");
  auto retrying = claim_task("retrying", w, "l-retrying");
  auto succeeded = claim_task("succeeded", w, "l-succeeded");
  store().fail("retrying", "w1", failure(retrying, "worker_shutdown", true), kSlowRetry);
  store().complete("succeeded", "w1", completion(succeeded));

  auto queued = store().cancel("queued");
  ASSERT_TRUE(queued.has_value());
  EXPECT_EQ(queued->id, "queued");
  EXPECT_EQ(queued->state, TaskState::kCancelled);
  EXPECT_TRUE(queued->finished_at.has_value());
  EXPECT_EQ(store().cancel("retrying")->state, TaskState::kCancelled);
  EXPECT_FALSE(task("retrying").retry_in_ms.has_value());

  auto stopping = store().cancel("running");
  ASSERT_TRUE(stopping.has_value());
  EXPECT_EQ(stopping->state, TaskState::kCancelRequested);
  EXPECT_FALSE(stopping->finished_at.has_value()) << "it ends when the worker reports";
  EXPECT_EQ(store().cancel("running")->state, TaskState::kCancelRequested) << "asked again";

  EXPECT_EQ(store().cancel("succeeded")->state, TaskState::kSucceeded) << "a final task stays";
  EXPECT_EQ(store().cancel("queued")->state, TaskState::kCancelled) << "cancelled again";
  // Nothing cancelled is handed out again.
  let_tiny_durations_pass();
  EXPECT_TRUE(store().promote_retries().empty());
  EXPECT_FALSE(store().claim(w, "l-next", kLongLease).has_value());
  EXPECT_EQ(store().progress("running", "w1", {running, 90.0, {}, {}}).state,
            TaskState::kCancelRequested)
      << "the fenced answer tells the worker too";
}

// ---- reading tasks ------------------------------------------------------------------------------

TEST_P(StoreConformance, ListTasksIsNewestFirstFilteredByStateAndLimited) {
  EXPECT_TRUE(store().list_tasks(std::nullopt, 100).empty());
  EXPECT_TRUE(nonzero_counts(store().count_tasks()).empty());
  EXPECT_FALSE(store().task("a").has_value());
  auto w = add_worker("w1");
  for (const char* id : {"a", "b", "c", "d"}) submit(id);
  claim_task("a", w, "l-a");
  auto b = claim_task("b", w, "l-b");
  store().complete("b", "w1", completion(b));

  EXPECT_EQ(ids_of(store().list_tasks(std::nullopt, 100)),
            (std::vector<std::string>{"d", "c", "b", "a"}));
  EXPECT_EQ(ids_of(store().list_tasks(std::nullopt, 2)), (std::vector<std::string>{"d", "c"}));
  EXPECT_EQ(ids_of(store().list_tasks(TaskState::kQueued, 100)),
            (std::vector<std::string>{"d", "c"}));
  EXPECT_EQ(ids_of(store().list_tasks(TaskState::kQueued, 1)), (std::vector<std::string>{"d"}));
  EXPECT_EQ(ids_of(store().list_tasks(TaskState::kRunning, 100)), (std::vector<std::string>{"a"}));
  EXPECT_EQ(ids_of(store().list_tasks(TaskState::kSucceeded, 100)),
            (std::vector<std::string>{"b"}));
  EXPECT_TRUE(store().list_tasks(TaskState::kDead, 100).empty());
  // A listed task is the same view task() gives.
  EXPECT_EQ(wire::to_json(store().list_tasks(TaskState::kRunning, 1).at(0)),
            wire::to_json(task("a")));

  EXPECT_EQ(nonzero_counts(store().count_tasks()),
            (std::map<std::string, std::int64_t>{{"queued", 2}, {"running", 1}, {"succeeded", 1}}));
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreConformance, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace tamma::orchestrator
