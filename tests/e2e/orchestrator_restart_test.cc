// The orchestrator SIGKILLed while tasks run and started again on the same port and database:
// the workers carry on by themselves, and every task ends exactly once.

#include <map>
#include <set>

#include "e2e/e2e_support.h"

namespace tamma::e2e {
namespace {

TEST(OrchestratorRestart, SigkilledMidRunAndRestartedEveryTaskEndsExactlyOnce) {
  testing::TempDir dir;
  OrchestratorProcess orchestrator(dir.path(), fast_orchestrator_flags());
  std::vector<std::unique_ptr<testing::ChildProcess>> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(start_worker(orchestrator.url(), dir.path() / ("ws-" + std::to_string(i)),
                                   {"--slots", "2"}));
    ASSERT_TRUE(workers.back()->wait_for_output("registered with", 20s));
  }
  std::set<std::string> worker_ids;
  for (const auto& w : orchestrator.workers()) worker_ids.insert(w["id"].get<std::string>());
  ASSERT_EQ(worker_ids.size(), 2u);

  // Six tasks on four slots: four run when the orchestrator dies, two wait in the queue.
  std::vector<std::string> ids;
  for (int n = 0; n < 6; ++n) {
    json spec = {{"type", "command"},
                 {"steps",
                  {{{"name", "work"},
                    {"run", "echo begin-" + std::to_string(n) + "; sleep 2; echo end-" +
                                std::to_string(n)}}}}};
    ids.push_back(orchestrator.submit(spec, "restart-" + std::to_string(n)));
  }
  const auto deadline = Clock::now() + 20s;
  int running = 0;
  while (running < 4 && Clock::now() < deadline) {
    running = 0;
    for (const auto& id : ids) running += orchestrator.task(id)["state"] == "running" ? 1 : 0;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(running, 4) << "four slots busy before the kill";

  orchestrator.kill();
  // Down for longer than a lease TTL (2 s): the running tasks end meanwhile, and their
  // results wait in the workers for the orchestrator to come back.
  std::this_thread::sleep_for(3s);
  for (auto& w : workers) w->drain_output();
  orchestrator.start();

  for (std::size_t n = 0; n < ids.size(); ++n) {
    auto t = orchestrator.wait_task(
        ids[n],
        [](const json& t) {
          return t["state"] == "succeeded" || t["state"] == "failed" || t["state"] == "dead";
        },
        60s);
    ASSERT_EQ(t["state"], "succeeded") << t.dump(2);
    ASSERT_TRUE(t.contains("result")) << t.dump(2);
    EXPECT_EQ(t["result"]["steps"][0]["stdout"],
              "begin-" + std::to_string(n) + "\nend-" + std::to_string(n) + "\n");
    // The result the worker kept through the outage is accepted: the restart costs no rerun.
    EXPECT_EQ(t["attempt"], 1) << t.dump(2);
    EXPECT_EQ(orchestrator.logs(ids[n]),
              "begin-" + std::to_string(n) + "\nend-" + std::to_string(n) + "\n");
  }

  // The same workers, with their old tokens, take new work: nobody had to restart them.
  const std::string after = orchestrator.submit(
      {{"type", "command"}, {"steps", {{{"name", "after"}, {"run", "echo after"}}}}}, "after");
  auto t = orchestrator.wait_task(after, [](const json& t) { return t["state"] == "succeeded"; });
  ASSERT_EQ(t["state"], "succeeded") << t.dump(2);
  EXPECT_TRUE(worker_ids.count(t["workerId"].get<std::string>())) << t.dump(2);
  std::set<std::string> online;
  for (const auto& w : orchestrator.workers()) {
    if (w["state"] == "online") online.insert(w["id"].get<std::string>());
  }
  EXPECT_EQ(online, worker_ids) << "no worker registered anew";

  for (auto& w : workers) w->send_signal(SIGTERM);
  for (auto& w : workers) {
    auto r = w->wait(30s);
    EXPECT_EQ(r.exit_code, 0) << "every result delivered\n" << r.err;
  }
  orchestrator.stop();

  // Exactly one accepted completion per task, in the orchestrator's own records.
  std::map<std::string, int> completions;
  for (const auto& a : attempts_in(orchestrator.db_path())) {
    if (a.outcome == "succeeded") ++completions[a.task_id];
  }
  ids.push_back(after);
  for (const auto& id : ids) EXPECT_EQ(completions[id], 1) << id;
  EXPECT_EQ(completions.size(), ids.size());
}

}  // namespace
}  // namespace tamma::e2e
