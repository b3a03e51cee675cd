// Chaos on PostgreSQL (issue 10): at least a thousand tasks over three orchestrator replicas on
// one throwaway PostgreSQL cluster and three worker daemons that each know all three replicas,
// while replicas and workers are SIGKILLed and restarted at random and PostgreSQL itself is
// restarted once (pg_ctl restart -m fast). Tasks are submitted through random replicas.
// Nothing may be lost (every task ends succeeded, its own output in its result and, read back
// through a random replica, as its whole log) and nothing may finish twice (one succeeded
// attempt and one accepted completion in the audit trail per task, read from the database).
//
// TAMMA_CHAOS_SEED (default below, printed) replays a run; TAMMA_CHAOS_TASKS sets the count
// (default 1000; the sanitizer build runs fewer by default, and says so loudly).

#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>

#include "e2e/e2e_support.h"

namespace tamma::e2e {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitizerBuild = true;
#else
constexpr bool kSanitizerBuild = false;
#endif

constexpr int kDefaultTasks = 1000;
// Under AddressSanitizer every process (worker, sandbox init, orchestrator) is several times
// slower: this many keep the run within the ctest timeout there.
constexpr int kSanitizerDefaultTasks = 1000;

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

std::string tail(const std::string& text, std::size_t n) {
  return text.substr(text.size() > n ? text.size() - n : 0);
}

// How often a worker's log says it moved to the next replica (OrchestratorEndpoints::failed).
int failovers_in(const std::string& log) {
  int n = 0;
  for (auto at = log.find("unreachable; trying"); at != std::string::npos;
       at = log.find("unreachable; trying", at + 1)) {
    ++n;
  }
  return n;
}

struct Fleet {
  std::filesystem::path dir;
  std::string urls;
  std::vector<std::unique_ptr<testing::ChildProcess>> workers;
  int failovers = 0;  // of the workers gone so far

  void kill(std::size_t i) {
    workers[i]->send_signal(SIGKILL);
    workers[i]->wait(10s);
    failovers += failovers_in(workers[i]->err_so_far());
    workers[i].reset();
  }
  [[nodiscard]] int all_failovers() const {
    int n = failovers;
    for (const auto& w : workers) n += w ? failovers_in(w->err_so_far()) : 0;
    return n;
  }

  std::unique_ptr<testing::ChildProcess> launch(std::size_t i) const {
    // The same workspace root after a kill: the new daemon sweeps what the dead one left.
    return start_worker(urls, dir / ("ws-" + std::to_string(i)),
                        {"--slots", "2", "--grace-period", "1s"});
  }
  void pump() {
    for (auto& w : workers) {
      if (w) w->drain_output();  // null while a killed one waits to be started again
    }
  }
  std::string logs() const {
    std::string out;
    for (const auto& w : workers) {
      if (w) out += tail(w->err_so_far(), 3000) + "\n---\n";
    }
    return out;
  }
};

std::string token(std::uint64_t seed, int n) {
  return "chaos-pg-" + std::to_string(seed) + "-" + std::to_string(n);
}

TEST(ChaosPostgres, NoTaskLostNoneFinishedTwiceThroughReplicaWorkerAndPostgresRestarts) {
  const std::uint64_t seed = env_number("TAMMA_CHAOS_SEED", 20261204);
  const int fallback = kSanitizerBuild ? kSanitizerDefaultTasks : kDefaultTasks;
  const int total = static_cast<int>(env_number("TAMMA_CHAOS_TASKS", fallback));
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (total < kDefaultTasks) {
    std::printf(
        "\n[chaos-pg] !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        "[chaos-pg] !!! ONLY %d TASKS, FEWER THAN THE %d OF THE FULL RUN (%s)\n"
        "[chaos-pg] !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n",
        total, kDefaultTasks,
        std::getenv("TAMMA_CHAOS_TASKS") != nullptr ? "TAMMA_CHAOS_TASKS"
                                                    : "sanitizer build default");
  }
  std::printf("[chaos-pg] seed %llu (TAMMA_CHAOS_SEED=%llu replays it), %d tasks\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed), total);
  std::mt19937_64 rng(seed);
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto ms = [](int n) { return std::chrono::milliseconds(n); };

  testing::PostgresCluster& cluster = testing::shared_postgres_cluster();
  testing::TempDir dir;
  // Short leases, so a killed worker's tasks come back within seconds; retries enough that a
  // task hit by several kills in a row still cannot run out of them.
  PostgresReplicas replicas(cluster, "chaos", dir.path() / "replicas", 3,
                            {"--heartbeat-interval", "300ms", "--lease-ttl", "2s", "--retry-base",
                             "50ms", "--retry-max", "500ms", "--poll-timeout", "2s"});
  Fleet fleet{dir.path(), replicas.urls(), {}};
  for (std::size_t i = 0; i < 3; ++i) fleet.workers.push_back(fleet.launch(i));

  const auto started = Clock::now();
  std::vector<std::string> ids(total);
  int submitted = 0;
  int worker_kills = 0;
  int replica_kills = 0;
  int pg_restarts = 0;
  // When PostgreSQL, stopped, is started again; while it is down, pg_down is set.
  bool pg_down = false;
  Clock::time_point pg_down_until{};
  double pg_down_seconds = 0;
  auto next_worker_kill = Clock::now() + ms(uniform(300, 1200));
  auto next_replica_kill = Clock::now() + ms(uniform(500, 2000));
  std::vector<std::pair<std::size_t, Clock::time_point>> workers_down;
  std::vector<std::pair<std::size_t, Clock::time_point>> replicas_down;
  std::int64_t done = 0;
  const auto limit = started + 8min;
  std::int64_t last_done = -1;
  auto last_progress = Clock::now();

  auto finished_in_database = [&]() -> std::int64_t {
    try {
      return std::stoll(replicas.query(
          "SELECT count(*) FROM tasks WHERE state IN ('succeeded','failed','dead','cancelled')")
                            [0][0]);
    } catch (const std::exception&) {
      return done;  // the server restarting: the count is asked again next round
    }
  };

  while (done < total && Clock::now() < limit) {
    // Tasks arrive over time, a few every round (about 25 a second, so that the kills fall
    // among tasks in flight), each through a replica picked at random. The idempotency key
    // makes a submit retried after a lost answer the same task. None while PostgreSQL is down:
    // every replica answers 503 then, and this loop is what brings it back.
    for (int burst = pg_down ? 0 : uniform(1, 4); burst > 0 && submitted < total;
         --burst, ++submitted) {
      json spec = {{"type", "command"},
                   {"steps", {{{"name", "n"}, {"run", "echo " + token(seed, submitted)}}}}};
      json body = {{"task", spec}, {"maxRetries", 50}};
      auto r = replicas.any(
          rng, "POST", "/api/v1/tasks", body.dump(),
          {"Content-Type: application/json", "Idempotency-Key: " + token(seed, submitted)});
      ASSERT_TRUE(r.status == 201 || r.status == 200) << r.status << " " << r.body;
      ids[submitted] = r.json().value("id", "");
    }

    const auto now = Clock::now();
    const bool calm = done >= total * 95 / 100;  // the tail runs undisturbed
    if (now >= next_worker_kill && !calm) {
      const auto victim = static_cast<std::size_t>(uniform(0, 2));
      if (fleet.workers[victim]) {
        fleet.kill(victim);
        ++worker_kills;
        workers_down.emplace_back(victim, now + ms(uniform(0, 1500)));
      }
      next_worker_kill = now + ms(uniform(300, 1200));
    }
    if (now >= next_replica_kill && !calm) {
      const auto victim = static_cast<std::size_t>(uniform(0, 2));
      // At least one replica stays up: with none, nothing is asked of anything.
      if (replicas[victim].running() && replicas.running() > 1) {
        replicas[victim].kill();
        ++replica_kills;
        replicas_down.emplace_back(victim, now + ms(uniform(300, 3000)));
      }
      next_replica_kill = now + ms(uniform(500, 2000));
    }
    for (auto it = workers_down.begin(); it != workers_down.end();) {
      if (Clock::now() >= it->second) {
        fleet.workers[it->first] = fleet.launch(it->first);
        it = workers_down.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = replicas_down.begin(); it != replicas_down.end();) {
      // A replica starts only while PostgreSQL is up: it migrates (or checks the schema) first.
      if (Clock::now() >= it->second && !pg_down) {
        replicas[it->first].start();
        it = replicas_down.erase(it);
      } else {
        ++it;
      }
    }
    // PostgreSQL goes down once, halfway (pg_ctl restart -m fast, held down a moment between
    // the stop and the start): every replica loses its connections (store and LISTEN) and must
    // make them again; meanwhile they answer 503 and workers fail over and retry.
    if (pg_restarts == 0 && !pg_down && done >= total / 2) {
      cluster.stop("fast");
      pg_down = true;
      pg_down_until = Clock::now() + ms(uniform(1000, 3000));
      pg_down_seconds = std::chrono::duration<double>(pg_down_until - Clock::now()).count();
      std::printf("[chaos-pg] PostgreSQL stopped (fast) at %lld done, for %.1f s\n",
                  static_cast<long long>(done), pg_down_seconds);
    }
    if (pg_down && Clock::now() >= pg_down_until) {
      cluster.start();
      pg_down = false;
      ++pg_restarts;
      // Every replica that was up recovers by itself: each answers /ready again (its store
      // connection made anew) within a bounded wait.
      for (std::size_t i = 0; i < replicas.size(); ++i) {
        if (!replicas[i].running()) continue;
        const auto deadline = Clock::now() + 30s;
        long status = 0;
        std::string body;
        while (Clock::now() < deadline) {
          try {
            orchestrator::HttpClient probe(replicas[i].url(), kAdminToken);
            auto r = probe.get("/ready", 5s);
            status = r.status;
            body = r.body;
          } catch (const Error& e) {
            body = e.what();
          }
          if (status == 200) break;
          replicas.pump();
          std::this_thread::sleep_for(100ms);
        }
        EXPECT_EQ(status, 200) << "replica " << i
                               << " not ready 30 s after PostgreSQL came back: " << body << "\n"
                               << tail(replicas[i].log_so_far(), 3000);
      }
      std::printf("[chaos-pg] PostgreSQL started again; every running replica ready\n");
    }

    fleet.pump();
    replicas.pump();
    std::this_thread::sleep_for(100ms);
    done = finished_in_database();
    if (done != last_done) {
      last_done = done;
      last_progress = Clock::now();
    } else if (!pg_down && Clock::now() - last_progress > 60s) {
      std::string orchestrator_logs;
      for (std::size_t i = 0; i < replicas.size(); ++i) {
        orchestrator_logs += tail(replicas[i].log_so_far(), 2000) + "\n---\n";
      }
      ADD_FAILURE() << "no task finished for 60 s (" << done << " done); the workers say:\n"
                    << fleet.logs() << "\nthe replicas say:\n"
                    << orchestrator_logs << "\nPostgreSQL says:\n"
                    << cluster.log_tail(30);
      break;
    }
  }
  if (pg_down) {
    cluster.start();
    ++pg_restarts;
  }
  for (auto& [i, when] : workers_down) fleet.workers[i] = fleet.launch(i);
  for (auto& [i, when] : replicas_down) replicas[i].start();
  const auto elapsed = Clock::now() - started;
  EXPECT_EQ(done, total) << "the run ended after " << std::chrono::duration<double>(elapsed).count()
                         << " s with tasks unfinished";

  // Each result belongs to its own task, and so does each log, read through any replica.
  int succeeded = 0;
  int logs_complete = 0;
  for (int n = 0; n < submitted; ++n) {
    const std::string expected = token(seed, n) + "\n";
    auto t = replicas.any(rng, "GET", "/api/v1/tasks/" + ids[n]).json();
    if (t["state"] == "succeeded" && t["result"]["steps"][0]["stdout"] == expected) {
      ++succeeded;
    } else {
      ADD_FAILURE() << "task " << n << " did not end succeeded with its own output: " << t.dump(2);
    }
    auto log = replicas.any(rng, "GET", "/api/v1/tasks/" + ids[n] + "/logs");
    if (log.status == 200 && log.body == expected) {
      ++logs_complete;
    } else {
      ADD_FAILURE() << "task " << n << "'s log is not its whole output: " << log.status << " '"
                    << log.body << "'";
    }
  }

  const int failovers = fleet.all_failovers();
  for (auto& w : fleet.workers) w->send_signal(SIGTERM);
  for (auto& w : fleet.workers) {
    auto r = w->wait(60s);
    EXPECT_FALSE(r.timed_out) << "a worker did not drain";
  }
  for (std::size_t i = 0; i < replicas.size(); ++i) replicas[i].stop();

  // The database's own records: one succeeded attempt and one accepted completion per task, none
  // of a task that was not submitted.
  std::map<std::string, int> succeeded_attempts;
  std::map<std::string, int> outcomes;
  int attempts = 0;
  for (const auto& row :
       replicas.query("SELECT task_id, COALESCE(outcome, '(not ended)'), count(*) FROM attempts "
                      "GROUP BY 1, 2")) {
    const int n = std::stoi(row[2]);
    attempts += n;
    outcomes[row[1]] += n;
    if (row[1] == "succeeded") succeeded_attempts[row[0]] += n;
  }
  std::map<std::string, int> completions;
  for (const auto& row : replicas.query(
           "SELECT task_id, count(*) FROM audit WHERE action = 'complete' GROUP BY task_id")) {
    completions[row[0]] = std::stoi(row[1]);
  }
  std::map<std::string, int> audit_actions;
  for (const auto& row : replicas.query("SELECT action, count(*) FROM audit GROUP BY action")) {
    audit_actions[row[0]] = std::stoi(row[1]);
  }
  int twice = 0;
  for (int n = 0; n < submitted; ++n) {
    EXPECT_EQ(succeeded_attempts[ids[n]], 1) << "task " << n << " " << ids[n];
    EXPECT_EQ(completions[ids[n]], 1) << "task " << n << " " << ids[n];
    twice += succeeded_attempts[ids[n]] > 1 || completions[ids[n]] > 1 ? 1 : 0;
  }
  EXPECT_EQ(succeeded_attempts.size(), static_cast<std::size_t>(submitted));
  EXPECT_EQ(completions.size(), static_cast<std::size_t>(submitted));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size()) << "a task twice";
  EXPECT_EQ(submitted, total);
  EXPECT_EQ(twice, 0);
  EXPECT_EQ(pg_restarts, 1);

  auto action = [&](const char* name) { return audit_actions[name]; };
  std::string by_outcome;
  for (const auto& [o, n] : outcomes) by_outcome += " " + o + "=" + std::to_string(n);
  std::printf(
      "[chaos-pg] seed %llu: tasks %d, succeeded %d, logs complete %d, finished twice %d, "
      "attempts %d (retries %d:%s), requeues: lease_expired %d, lease_revoked %d, "
      "claim_unacknowledged %d, claim_released %d, retry_promoted %d; replica kills %d, worker "
      "kills %d, worker failovers %d, PostgreSQL restarts %d (down %.1f s), elapsed %.1f s\n",
      static_cast<unsigned long long>(seed), submitted, succeeded, logs_complete, twice, attempts,
      attempts - submitted, by_outcome.c_str(), action("lease_expired"), action("lease_revoked"),
      action("claim_unacknowledged"), action("claim_released"), action("retry_promoted"),
      replica_kills, worker_kills, failovers, pg_restarts, pg_down_seconds,
      std::chrono::duration<double>(elapsed).count());
}

}  // namespace
}  // namespace tamma::e2e
