#pragma once
// What the audit tests share (tests/orchestrator/api_audit_test.cc over HTTP, and
// tests/store/audit_store_test.cc on both stores): records as one line each, the raw SQLite
// table, and the search for secrets.

#include <sqlite3.h>

#include <filesystem>
#include <string>
#include <vector>

#include "orchestrator_fixture.h"

namespace tamma::orchestrator::testing {

namespace w = tamma::protocol::wire;

inline constexpr const char* kSecretEnv = "env-value-that-must-stay-out-of-the-trail-4f1c";
inline constexpr const char* kSecretValue = "secret-value-that-must-stay-out-of-the-trail-9a7e";

// One record as a line a failure message shows whole: action, actor, task, attempt, worker,
// and the state its detail names ("-" for none).
inline std::string line(const std::string& action, const std::string& actor,
                        const std::string& task, int attempt, const std::string& worker,
                        const std::string& state) {
  return action + " by " + actor + " task=" + (task.empty() ? "-" : task) +
         " attempt=" + (attempt > 0 ? std::to_string(attempt) : "-") +
         " worker=" + (worker.empty() ? "-" : worker) + " state=" + (state.empty() ? "-" : state);
}

inline std::string line_of(const json& r) {
  std::string actor = r["actor"]["kind"];
  if (r["actor"].contains("id")) actor += ":" + r["actor"]["id"].get<std::string>();
  return line(r["action"], actor, r.value("taskId", ""), r.value("attempt", 0),
              r.value("workerId", ""), r["detail"].value("state", ""));
}

inline std::string line_of(const w::AuditRecord& r) { return line_of(w::to_json(r)); }

template <class Records>
std::vector<std::string> lines_of(const Records& records) {
  std::vector<std::string> out;
  for (const auto& r : records) out.push_back(line_of(r));
  return out;
}

// Every record, page by page, and every answer's raw body (for the search for secrets).
inline json all_records(HttpClient& admin, const std::string& query,
                        std::string* bodies = nullptr) {
  json records = json::array();
  std::string after;
  for (int page = 0; page < 100; ++page) {
    auto r = admin.get("/api/v1/audit?limit=7" + query + after);
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) break;
    if (bodies != nullptr) *bodies += r.body;
    json body = r.json();
    for (auto& rec : body["records"]) records.push_back(rec);
    if (!body.contains("next")) break;
    after = "&after=" + std::to_string(body["next"].get<std::int64_t>());
  }
  return records;
}

// A grace given to every lease (the reaper saw a stalled tick, as on a loaded machine) is a
// legitimate record that no step of a scenario asks for: left out of exact comparisons.
inline json without_graces(const json& records) {
  json out = json::array();
  for (const auto& r : records) {
    if (r["action"] != "lease_grace") out.push_back(r);
  }
  return out;
}

// Every column of every row of the SQLite audit table, as text.
inline std::string raw_sqlite_audit(const std::filesystem::path& file, int* rows) {
  sqlite3* db = nullptr;
  EXPECT_EQ(::sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  struct Dump {
    std::string text;
    int rows = 0;
  } dump;
  char* error = nullptr;
  int rc = ::sqlite3_exec(
      db, "SELECT * FROM audit",
      [](void* out, int columns, char** values, char**) {
        auto* d = static_cast<Dump*>(out);
        ++d->rows;
        for (int i = 0; i < columns; ++i) d->text += std::string(values[i] ? values[i] : "") + "|";
        d->text += "\n";
        return 0;
      },
      &dump, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error ? error : "");
  ::sqlite3_free(error);
  ::sqlite3_close(db);
  if (rows != nullptr) *rows = dump.rows;
  return dump.text;
}

inline void expect_no_secret(const std::string& text, const std::vector<std::string>& secrets,
                             const std::string& where) {
  ASSERT_FALSE(text.empty()) << where << " is empty: nothing was searched";
  for (const auto& secret : secrets) {
    EXPECT_EQ(text.find(secret), std::string::npos) << where << " holds '" << secret << "'";
  }
}

}  // namespace tamma::orchestrator::testing
