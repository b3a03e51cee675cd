// The audit trail (docs/adr/0026-audit-trail.md, docs/protocol.md#audit-trail): every operation
// that changed state is recorded with who asked, in the operation's own transaction, and no
// secret is ever in it. Over HTTP against a real orchestrator, and at the level of the Store
// for SQLite and (when a server is at hand) PostgreSQL.

#include <sqlite3.h>
#include <unistd.h>

#include <cstdlib>
#include <future>
#include <regex>
#include <set>

#include "audit_test_support.h"
#include "orchestrator/auth.h"
#include "orchestrator/store/sqlite_store.h"
#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {
namespace {

namespace w = tamma::protocol::wire;
using tamma::testing::run_process;

void upload(TestWorker& worker, const std::string& task, int attempt, const std::string& lease,
            const std::string& bytes) {
  auto r = worker.http.request("POST",
                               "/api/v1/tasks/" + task + "/artifacts?name=dist%2Fout.txt&attempt=" +
                                   std::to_string(attempt) + "&leaseId=" + lease,
                               bytes, {"Content-Type: application/octet-stream"});
  EXPECT_EQ(r.status, 201) << r.body;
}

TEST(AuditApi, EveryOperationIsRecordedInOrderWithItsActorAndNoSecret) {
  TestServer server([](ServerConfig& c) {
    c.lease_ttl = 3s;
    c.ack_timeout = 1s;  // below the lease TTL: an unacknowledged claim is re-queued first
    c.retry_base = 50ms;
    c.retry_max = 100ms;
  });
  auto admin = server.admin();
  auto w1 = server.register_worker();
  auto w2 = server.register_worker();
  std::vector<std::string> leases;
  auto fence = [](const json& a) {
    return json{{"attempt", a["attempt"]}, {"leaseId", a["leaseId"]}};
  };

  // t1: handed out, started, logged, uploaded, completed.
  const std::string t1 = server.submit(submit_body(task_spec()));
  auto a = w1->poll(2000).json();
  ASSERT_EQ(a["taskId"], t1);
  leases.push_back(a["leaseId"].get<std::string>());
  ASSERT_EQ(w1->task_post(t1, "started", fence(a)).status, 200);
  ASSERT_EQ(w1->append_raw(t1, 1, a["leaseId"], 0, "hello\n").status, 200);
  json progress = fence(a);
  progress["percent"] = 50;
  ASSERT_EQ(w1->task_post(t1, "progress", progress).status, 200);
  upload(*w1, t1, 1, a["leaseId"], "artifact bytes");
  ASSERT_EQ(w1->complete(t1, 1, a["leaseId"]).status, 200);

  // t2 carries secrets; it fails and is retried, its lease expires, and it is cancelled.
  json spec = task_spec();
  spec["env"] = {{"AUDIT_PROBE", kSecretEnv}};
  spec["secrets"] = {{"API_TOKEN", kSecretValue}};
  const std::string t2 = server.submit(submit_body(spec));
  a = w1->poll(2000).json();
  ASSERT_EQ(a["taskId"], t2);
  leases.push_back(a["leaseId"].get<std::string>());
  ASSERT_EQ(w1->task_post(t2, "started", fence(a)).status, 200);
  ASSERT_EQ(w1->fail(t2, 1, a["leaseId"], /*retryable=*/true).status, 200);
  // Promoted by the reaper before the next poll: the claim is then the poll's own.
  ASSERT_EQ(server.wait_task(t2, [](const json& t) { return t["state"] == "queued"; })["state"],
            "queued");
  a = w1->poll(2000).json();
  ASSERT_EQ(a["taskId"], t2);
  ASSERT_EQ(a["attempt"], 2);
  leases.push_back(a["leaseId"].get<std::string>());
  ASSERT_EQ(w1->task_post(t2, "started", fence(a)).status, 200);
  // No heartbeat: the lease expires, the retry's backoff passes, and it waits in the queue.
  auto expired = server.wait_task(
      t2,
      [](const json& t) {
        return t["state"] == "queued" && t["attempt"] == 2 && t.contains("error") &&
               t["error"]["code"] == "lease_expired";
      },
      15s);
  ASSERT_EQ(expired["state"], "queued") << expired.dump();
  ASSERT_EQ(admin->request("POST", "/api/v1/tasks/" + t2 + "/cancel").status, 200);

  // t3: a claim never acknowledged, claimed again, then lost with its worker.
  const std::string t3 = server.submit(submit_body(task_spec()));
  a = w2->poll(2000).json();
  ASSERT_EQ(a["taskId"], t3);
  leases.push_back(a["leaseId"].get<std::string>());
  auto requeued = server.wait_task(
      t3, [](const json& t) { return t["state"] == "queued" && t["attempt"] == 0; });
  ASSERT_EQ(requeued["state"], "queued") << requeued.dump();
  a = w2->poll(2000).json();
  ASSERT_EQ(a["taskId"], t3);
  leases.push_back(a["leaseId"].get<std::string>());
  ASSERT_EQ(w2->task_post(t3, "started", fence(a)).status, 200);
  ASSERT_EQ(admin->request("POST", "/api/v1/workers/" + w2->id + "/drain").status, 202);
  ASSERT_EQ(admin->request("DELETE", "/api/v1/workers/" + w2->id).status, 204);
  ASSERT_EQ(admin->request("POST", "/api/v1/tasks/" + t3 + "/cancel").status, 200);
  // A worker unregistering itself.
  ASSERT_EQ(w1->http.request("DELETE", "/api/v1/workers/" + w1->id).status, 204);
  // Refused and idempotent requests change nothing and are not recorded.
  EXPECT_EQ(admin->request("POST", "/api/v1/tasks/" + t1 + "/cancel").status, 409);
  EXPECT_EQ(admin->request("POST", "/api/v1/tasks/" + t3 + "/cancel").status, 200);
  EXPECT_EQ(admin->request("POST", "/api/v1/workers/wrk_nobody/drain").status, 404);

  std::string bodies;
  json records = all_records(*admin, "", &bodies);
  const std::string W1 = "worker:" + w1->id;
  const std::string W2 = "worker:" + w2->id;
  const std::vector<std::string> expected = {
      line("register", "registration", "", 0, w1->id, ""),
      line("register", "registration", "", 0, w2->id, ""),
      line("submit", "admin", t1, 0, "", "queued"),
      line("claim", W1, t1, 1, w1->id, "running"),
      line("started", W1, t1, 1, w1->id, "running"),
      line("artifact", W1, t1, 1, w1->id, ""),
      line("complete", W1, t1, 1, w1->id, "succeeded"),
      line("submit", "admin", t2, 0, "", "queued"),
      line("claim", W1, t2, 1, w1->id, "running"),
      line("started", W1, t2, 1, w1->id, "running"),
      line("fail", W1, t2, 1, w1->id, "retry_wait"),
      line("retry_promoted", "orchestrator", t2, 1, "", "queued"),
      line("claim", W1, t2, 2, w1->id, "running"),
      line("started", W1, t2, 2, w1->id, "running"),
      line("lease_expired", "orchestrator", t2, 2, w1->id, "retry_wait"),
      line("retry_promoted", "orchestrator", t2, 2, "", "queued"),
      line("cancel", "admin", t2, 2, "", "cancelled"),
      line("submit", "admin", t3, 0, "", "queued"),
      line("claim", W2, t3, 1, w2->id, "running"),
      line("claim_unacknowledged", "orchestrator", t3, 1, w2->id, "queued"),
      line("claim", W2, t3, 1, w2->id, "running"),
      line("started", W2, t3, 1, w2->id, "running"),
      line("drain", "admin", "", 0, w2->id, ""),
      line("unregister", "admin", "", 0, w2->id, ""),
      line("lease_revoked", "admin", t3, 1, w2->id, "queued"),
      line("cancel", "admin", t3, 1, "", "cancelled"),
      line("unregister", W1, "", 0, w1->id, ""),
  };
  EXPECT_EQ(lines_of(without_graces(records)), expected);

  // Who, from where, and when.
  std::int64_t last_seq = 0;
  for (const auto& r : records) {
    SCOPED_TRACE(r.dump());
    EXPECT_GT(r["seq"].get<std::int64_t>(), last_seq) << "ascending by seq";
    last_seq = r["seq"];
    EXPECT_TRUE(std::regex_match(r["at"].get<std::string>(),
                                 std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
    if (r["actor"]["kind"] == "orchestrator") {
      EXPECT_FALSE(r["actor"].contains("address")) << "the orchestrator's own work has no client";
      EXPECT_FALSE(r["actor"].contains("id"));
    } else {
      ASSERT_TRUE(r["actor"].contains("address"));
      EXPECT_TRUE(std::regex_match(r["actor"]["address"].get<std::string>(),
                                   std::regex(R"(127\.0\.0\.1:\d{1,5})")));
    }
  }
  // The facts a record holds, beyond the state.
  for (const auto& r : records) {
    if (r["action"] == "artifact") {
      EXPECT_EQ(r["detail"]["name"], "dist/out.txt");
      EXPECT_EQ(r["detail"]["size"], 14);
      EXPECT_EQ(r["detail"]["sha256"], sha256_hex("artifact bytes"));
    }
    if (r["action"] == "fail") {
      EXPECT_EQ(r["detail"]["code"], "boom");
      EXPECT_EQ(r["detail"]["retryable"], true);
      EXPECT_FALSE(r["detail"].contains("message")) << "the worker's free text stays out";
    }
    if (r["action"] == "complete") {
      EXPECT_EQ(r["detail"]["status"], "succeeded");
    }
    if (r["action"] == "submit") {
      EXPECT_EQ(r["detail"]["type"], "command");
    }
  }

  // No secret, in any answer nor in the table itself.
  std::vector<std::string> secrets = {kAdminToken,
                                      kRegistrationToken,
                                      w1->token,
                                      w2->token,
                                      sha256_hex(kAdminToken),
                                      sha256_hex(kRegistrationToken),
                                      sha256_hex(w1->token),
                                      sha256_hex(w2->token),
                                      kSecretEnv,
                                      kSecretValue};
  // Lease ids fence a worker's writes: not secrets to the admin, but nothing the trail needs.
  secrets.insert(secrets.end(), leases.begin(), leases.end());
  expect_no_secret(bodies, secrets, "the audit answers");
  int rows = 0;
  std::string table = raw_sqlite_audit(server.dir() / "db.sqlite", &rows);
  expect_no_secret(table, secrets, "the audit table");
  EXPECT_EQ(rows, static_cast<int>(records.size())) << "the API shows every row";
  EXPECT_NE(table.find(t2), std::string::npos) << "the search would have seen a secret";

  // Append-only: the database itself refuses a change or a removal.
  SqliteDb raw(server.dir() / "db.sqlite");
  raw.exec("PRAGMA busy_timeout = 5000");
  EXPECT_THROW(raw.exec("UPDATE audit SET action = 'submit'"), Error);
  EXPECT_THROW(raw.exec("DELETE FROM audit"), Error);
  EXPECT_EQ(all_records(*admin, "").size(), records.size());

  // Filters: one task's records, from a time on, after a seq; pages of any size.
  std::vector<std::string> of_t2;
  for (const auto& l : expected) {
    if (l.find(" task=" + t2 + " ") != std::string::npos) of_t2.push_back(l);
  }
  EXPECT_EQ(lines_of(without_graces(all_records(*admin, "&task=" + t2))), of_t2);
  json submit_t3;
  for (const auto& r : records) {
    if (line_of(r) == line("submit", "admin", t3, 0, "", "queued")) submit_t3 = r;
  }
  ASSERT_TRUE(submit_t3.is_object());
  auto since = admin->get("/api/v1/audit?limit=1000&since=" + submit_t3["at"].get<std::string>());
  ASSERT_EQ(since.status, 200) << since.body;
  bool seen = false;
  const json from_then = since.json();  // named: a loop over a temporary's member would dangle
  for (const auto& r : from_then["records"]) {
    EXPECT_GE(r["at"].get<std::string>(), submit_t3["at"].get<std::string>());
    seen = seen || r["seq"] == submit_t3["seq"];
  }
  EXPECT_TRUE(seen) << "a record written at `since` is included";
  EXPECT_EQ(admin->get("/api/v1/audit?since=0").json()["records"].size(), records.size())
      << "milliseconds since the epoch";
  EXPECT_TRUE(
      admin->get("/api/v1/audit?since=9999-12-31T23:59:59.999%2B00:00").json()["records"].empty());
  auto page = admin->get("/api/v1/audit?limit=2&after=" + records[0]["seq"].dump()).json();
  ASSERT_EQ(page["records"].size(), 2u);
  EXPECT_EQ(page["records"][0]["seq"], records[1]["seq"]);
  EXPECT_EQ(page["next"], records[2]["seq"]);
  EXPECT_FALSE(
      admin->get("/api/v1/audit?after=" + records.back()["seq"].dump()).json().contains("next"))
      << "an empty page is the end";
}

TEST(AuditApi, AClaimForAParkedPollNamesTheRequestThatMadeTheTaskAvailable) {
  TestServer server;
  auto worker = server.register_worker();
  auto parked = std::async(std::launch::async, [&] { return worker->poll(10000); });
  auto admin = server.admin();
  for (int i = 0; i < 500; ++i) {
    if (admin->get("/metrics").body.find("tamma_waiting_polls 1") != std::string::npos) break;
    std::this_thread::sleep_for(10ms);
  }
  const std::string id = server.submit(submit_body(task_spec()));
  auto got = parked.get();
  ASSERT_EQ(got.status, 200) << got.body;
  ASSERT_EQ(got.json()["taskId"], id);
  // One commit from submit to assignment: the admin's request handed it to the worker.
  EXPECT_EQ(lines_of(all_records(*admin, "&task=" + id)),
            (std::vector<std::string>{line("submit", "admin", id, 0, "", "queued"),
                                      line("claim", "admin", id, 1, worker->id, "running")}));
}

TEST(AuditApi, OnlyTheAdminTokenReadsIt) {
  TestServer server;
  auto worker = server.register_worker();
  auto as_worker = worker->http.get("/api/v1/audit");
  EXPECT_EQ(as_worker.status, 401);
  EXPECT_EQ(error_code(as_worker), "invalid_token");
  HttpClient registration(server.url(), kRegistrationToken);
  EXPECT_EQ(registration.get("/api/v1/audit").status, 401);
  auto anonymous = server.anonymous()->get("/api/v1/audit");
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(error_code(anonymous), "missing_token");
  EXPECT_EQ(server.admin()->get("/api/v1/audit").status, 200);
  EXPECT_EQ(server.admin()->request("HEAD", "/api/v1/audit").status, 200);
  EXPECT_EQ(server.admin()->request("POST", "/api/v1/audit").status, 405);
}

TEST(AuditApi, EveryQueryParameterIsCheckedAndARefusalNamesIt) {
  TestServer server;
  auto admin = server.admin();
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"limit=0", "limit"},
      {"limit=1001", "limit"},
      {"limit=ten", "limit"},
      {"limit=-1", "limit"},
      {"limit=1e3", "limit"},
      {"limit=99999999999999999999", "limit"},
      {"since=yesterday", "since"},
      {"since=", "since"},
      {"since=-5", "since"},
      {"since=2026-02-30T00:00:00Z", "since"},
      {"since=2025-02-29T00:00:00Z", "since"},
      {"since=2026-01-01T24:00:00Z", "since"},
      {"since=2026-01-01T00:00:00", "since"},
      {"since=2026-01-01%2000:00:00Z", "since"},
      {"since=2026-01-01T00:00:00.Z", "since"},
      {"since=2026-01-01T00:00:00Z%20", "since"},
      {"since=2026-01-01T00:00:00%2B24:00", "since"},
      {"since=1234567890123456", "since"},
      {"after=-1", "after"},
      {"after=x", "after"},
      {"task=", "task"},
      {"task=" + std::string(129, 'a'), "task"},
      {"task=tsk%20x", "task"},
      {"task=tsk%27--", "task"},
  };
  for (const auto& [query, field] : refused) {
    auto r = admin->get("/api/v1/audit?" + query);
    EXPECT_EQ(r.status, 400) << query << ": " << r.body;
    EXPECT_EQ(error_code(r), "invalid_field") << query;
    if (r.status == 400) {
      EXPECT_EQ(r.json()["error"]["field"], field) << query;
    }
  }
  for (const std::string& ok : std::vector<std::string>{
           "since=2024-02-29T23:59:60Z", "since=2026-01-01T00:00:00.123456789%2B05:30",
           "since=2026-01-01t00:00:00z", "since=1767225600000", "limit=1000", "after=0",
           "task=" + std::string(128, 'a')}) {
    auto r = admin->get("/api/v1/audit?" + ok);
    EXPECT_EQ(r.status, 200) << ok << ": " << r.body;
  }
  // An offset counts: 01:00 at +01:00 is midnight UTC.
  auto local = admin->get("/api/v1/audit?since=2026-01-01T01:00:00%2B01:00").json();
  auto utc = admin->get("/api/v1/audit?since=2026-01-01T00:00:00Z").json();
  EXPECT_EQ(local, utc);
}

TEST(AuditApi, TheAdminCommandPrintsTheTrail) {
  TestServer server;
  auto worker = server.register_worker();
  const std::string id = server.submit(submit_body(task_spec()));
  std::vector<std::string> env = {"TAMMA_ORCHESTRATOR_URL=" + server.url(),
                                  std::string("TAMMA_TOKEN=") + kAdminToken};
  auto as_json = run_process({TAMMA_ORCHESTRATOR_BINARY, "audit", "--task", id, "--json"}, env);
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  auto page = w::audit_list_from_json(json::parse(as_json.out));
  EXPECT_EQ(lines_of(page.records),
            (std::vector<std::string>{line("submit", "admin", id, 0, "", "queued")}));
  auto table = run_process({TAMMA_ORCHESTRATOR_BINARY, "audit", "--limit", "1"}, env);
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("register"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(worker->id), std::string::npos) << table.out;
  EXPECT_NE(table.err.find("more: --after 1"), std::string::npos) << table.err;
  auto bad = run_process({TAMMA_ORCHESTRATOR_BINARY, "audit", "--since", "last week"}, env);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("since"), std::string::npos) << bad.err;
}

TEST(AuditWire, TheCppTypesWriteWhatTheSchemaSaysAndReadBackTheSame) {
  w::AuditRecord r;
  r.seq = 7;
  r.at = "2026-01-02T03:04:05.678Z";
  r.actor = {w::ActorKind::kWorker, "wrk_1", "127.0.0.1:5000"};
  r.action = w::AuditAction::kFail;
  r.task_id = "tsk_1";
  r.attempt = 2;
  r.worker_id = "wrk_1";
  r.detail = {{"state", "retry_wait"}, {"code", "boom"}, {"retryable", true}};
  w::AuditList list{{r, w::AuditRecord{}}, 7};
  list.records[1].seq = 8;
  list.records[1].at = r.at;
  for (const auto& problem :
       contract::schema_problems(w::to_json(list), std::string("AuditList"))) {
    ADD_FAILURE() << problem;
  }
  EXPECT_EQ(w::to_json(w::audit_list_from_json(w::to_json(list))), w::to_json(list));
  EXPECT_EQ(w::to_json(list.records[1])["actor"], json({{"kind", "orchestrator"}}));
  // Every name the C++ side writes is one the schema lists, and the other way round.
  std::set<std::string> kinds;
  for (auto k : {w::ActorKind::kAdmin, w::ActorKind::kWorker, w::ActorKind::kRegistration,
                 w::ActorKind::kOrchestrator}) {
    kinds.insert(std::string(w::to_string(k)));
    EXPECT_EQ(w::actor_kind_from_string(w::to_string(k)), k);
  }
  const auto& kind_enum = contract::schemas()["ActorKind"]["enum"];
  EXPECT_EQ(kinds, std::set<std::string>(kind_enum.begin(), kind_enum.end()));
  std::set<std::string> actions;
  for (const auto& a : contract::schemas()["AuditAction"]["enum"]) {
    auto parsed = w::audit_action_from_string(a.get<std::string>());
    ASSERT_TRUE(parsed) << a;
    actions.insert(std::string(w::to_string(*parsed)));
  }
  EXPECT_EQ(actions.size(), 16u);
  EXPECT_THROW(w::audit_record_from_json({{"seq", 1},
                                          {"at", r.at},
                                          {"actor", {{"kind", "root"}}},
                                          {"action", "submit"},
                                          {"detail", json::object()}}),
               w::WireError);
}

}  // namespace
}  // namespace tamma::orchestrator::testing
