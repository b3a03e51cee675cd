// Chaos: hundreds of tasks over three worker daemons while workers are SIGKILLed and restarted
// at random and the orchestrator is SIGKILLed and restarted twice. Nothing may be lost (every
// task ends succeeded, with its own output) and nothing may finish twice (one accepted
// completion per task in the orchestrator's records).
//
// TAMMA_CHAOS_SEED (default below, printed) replays a run; TAMMA_CHAOS_TASKS sets the count.

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <regex>

#include "e2e/e2e_support.h"

namespace tamma::e2e {
namespace {

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// Tasks in a final state, from the tamma_tasks gauges of /metrics: one request, not one per task.
std::int64_t tasks_finished(OrchestratorProcess& orchestrator) {
  const std::string body = orchestrator.admin("GET", "/metrics").body;
  std::int64_t sum = 0;
  for (const char* state : {"succeeded", "failed", "dead", "cancelled"}) {
    std::smatch m;
    const std::regex line(std::string("tamma_tasks\\{state=\"") + state + "\"\\} ([0-9]+)");
    if (std::regex_search(body, m, line)) sum += std::stoll(m[1]);
  }
  return sum;
}

struct Fleet {
  std::filesystem::path dir;
  std::string url;
  std::vector<std::unique_ptr<testing::ChildProcess>> workers;

  std::unique_ptr<testing::ChildProcess> launch(std::size_t i) {
    // The same workspace root after a kill: the new daemon sweeps what the dead one left.
    return start_worker(url, dir / ("ws-" + std::to_string(i)),
                        {"--slots", "2", "--grace-period", "1s"});
  }
  void pump() {
    for (auto& w : workers) {
      if (w) w->drain_output();  // null while a killed one waits to be started again
    }
  }
};

TEST(Chaos, NoTaskLostNoneFinishedTwiceThroughWorkerAndOrchestratorKills) {
  const std::uint64_t seed = env_number("TAMMA_CHAOS_SEED", 20261124);
  const int total = static_cast<int>(env_number("TAMMA_CHAOS_TASKS", 500));
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("[chaos] seed %llu (TAMMA_CHAOS_SEED=%llu replays it), %d tasks\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed), total);
  std::mt19937_64 rng(seed);
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  testing::TempDir dir;
  // Short leases, so a killed worker's tasks come back within seconds; retries enough that a
  // task hit by several kills in a row still cannot run out of them.
  OrchestratorProcess orchestrator(
      dir.path(), {"--heartbeat-interval", "300ms", "--lease-ttl", "1500ms", "--retry-base", "50ms",
                   "--retry-max", "500ms", "--poll-timeout", "2s"});
  Fleet fleet{dir.path(), orchestrator.url(), {}};
  for (std::size_t i = 0; i < 3; ++i) fleet.workers.push_back(fleet.launch(i));

  const auto started = Clock::now();
  std::vector<std::string> ids(total);
  int submitted = 0;
  int worker_kills = 0;
  int orchestrator_restarts = 0;
  // The orchestrator dies once a third and once two thirds of the tasks are done.
  const std::int64_t restart_at[2] = {total / 3, 2 * total / 3};
  auto next_worker_kill = Clock::now() + std::chrono::milliseconds(uniform(500, 2000));
  std::vector<std::pair<std::size_t, Clock::time_point>> to_restart;
  std::int64_t done = 0;
  const auto limit = started + 7min;
  std::int64_t last_done = 0;
  auto last_progress = Clock::now();

  while (done < total && Clock::now() < limit) {
    // Tasks arrive over time, in small bursts, not all at once.
    for (int burst = uniform(5, 25); burst > 0 && submitted < total; --burst, ++submitted) {
      json spec = {
          {"type", "command"},
          {"steps", {{{"name", "n"}, {"run", "echo chaos-" + std::to_string(submitted)}}}}};
      ids[submitted] = orchestrator.submit(
          spec, "chaos-" + std::to_string(seed) + "-" + std::to_string(submitted), 50);
    }

    const auto now = Clock::now();
    if (now >= next_worker_kill && done < total * 95 / 100) {
      std::size_t victim = static_cast<std::size_t>(uniform(0, 2));
      if (fleet.workers[victim]) {
        fleet.workers[victim]->send_signal(SIGKILL);
        fleet.workers[victim]->wait(10s);
        fleet.workers[victim].reset();
        ++worker_kills;
        to_restart.emplace_back(victim, now + std::chrono::milliseconds(uniform(0, 1500)));
      }
      next_worker_kill = now + std::chrono::milliseconds(uniform(800, 3000));
    }
    for (auto it = to_restart.begin(); it != to_restart.end();) {
      if (Clock::now() >= it->second) {
        fleet.workers[it->first] = fleet.launch(it->first);
        it = to_restart.erase(it);
      } else {
        ++it;
      }
    }

    if (orchestrator_restarts < 2 && done >= restart_at[orchestrator_restarts]) {
      orchestrator.kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(uniform(500, 2500)));
      orchestrator.start();
      ++orchestrator_restarts;
      std::printf("[chaos] orchestrator SIGKILLed and restarted at %lld done\n",
                  static_cast<long long>(done));
    }

    fleet.pump();
    orchestrator.pump();
    std::this_thread::sleep_for(100ms);
    done = tasks_finished(orchestrator);
    if (done != last_done) {
      last_done = done;
      last_progress = Clock::now();
    } else if (Clock::now() - last_progress > 60s) {
      std::string logs;
      for (auto& w : fleet.workers) {
        if (w)
          logs += w->err_so_far().substr(
                      w->err_so_far().size() > 3000 ? w->err_so_far().size() - 3000 : 0) +
                  "\n---\n";
      }
      ADD_FAILURE() << "no task finished for 60 s (" << done << " done); the workers say:\n"
                    << logs;
      break;
    }
  }
  for (auto& [i, when] : to_restart) fleet.workers[i] = fleet.launch(i);
  const auto elapsed = Clock::now() - started;

  // Each result belongs to its own task.
  int succeeded = 0;
  for (int n = 0; n < submitted; ++n) {
    auto t = orchestrator.task(ids[n]);
    if (t["state"] == "succeeded" &&
        t["result"]["steps"][0]["stdout"] == "chaos-" + std::to_string(n) + "\n") {
      ++succeeded;
    } else {
      ADD_FAILURE() << "task " << n << " did not end succeeded with its own output: " << t.dump(2);
    }
  }

  for (auto& w : fleet.workers) w->send_signal(SIGTERM);
  for (auto& w : fleet.workers) {
    auto r = w->wait(60s);
    EXPECT_FALSE(r.timed_out) << "a worker did not drain";
  }
  orchestrator.stop();

  // The orchestrator's own records: one accepted completion per task, no completion of a task
  // that was not submitted, and every other attempt ended some other way.
  std::map<std::string, int> completions;
  std::map<std::string, int> outcomes;
  int attempts = 0;
  for (const auto& a : attempts_in(orchestrator.db_path())) {
    ++attempts;
    ++outcomes[a.outcome.empty() ? "(not ended)" : a.outcome];
    if (a.outcome == "succeeded") ++completions[a.task_id];
  }
  int twice = 0;
  for (const auto& [id, n] : completions) twice += n > 1 ? 1 : 0;
  for (int n = 0; n < submitted; ++n) {
    EXPECT_EQ(completions[ids[n]], 1) << "task " << n << " " << ids[n];
  }
  EXPECT_EQ(completions.size(), static_cast<std::size_t>(submitted));
  EXPECT_EQ(submitted, total);
  EXPECT_EQ(twice, 0);
  EXPECT_EQ(orchestrator_restarts, 2);

  std::string by_outcome;
  for (const auto& [o, n] : outcomes) by_outcome += " " + o + "=" + std::to_string(n);
  std::printf(
      "[chaos] seed %llu: submitted %d, succeeded %d, attempts %d (re-queued %d:%s), "
      "finished twice %d, worker kills %d, orchestrator restarts %d, elapsed %.1f s\n",
      static_cast<unsigned long long>(seed), submitted, succeeded, attempts, attempts - submitted,
      by_outcome.c_str(), twice, worker_kills, orchestrator_restarts,
      std::chrono::duration<double>(elapsed).count());
}

}  // namespace
}  // namespace tamma::e2e
