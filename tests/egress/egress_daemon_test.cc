// A task with a network allow-list run by the daemon (`tamma-worker start`) for the real
// orchestrator (issue 15): the same engine as `run`, and its result with usage.egress and
// egressRefused reaches the orchestrator's API intact.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <csignal>
#include <thread>

#include <fmt/format.h>

#include "egress/egress_net.h"

namespace tamma {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;
using testing::EgressNet;
using testing::TempDir;

#ifdef TAMMA_ORCHESTRATOR_BINARY
const std::string kOrchestrator = TAMMA_ORCHESTRATOR_BINARY;
#else
const std::string kOrchestrator;
#endif
const std::string kAdmin = "egress-daemon-admin-token-0123456789";
const std::string kRegistration = "egress-daemon-registration-token-0123456789";

TEST(EgressDaemon, AnAllowListTaskRunsForTheOrchestratorAndItsLedgerIsStored) {
  if (kOrchestrator.empty()) GTEST_SKIP() << "SKIPPED LOUDLY: tamma-orchestrator is not built";
  if (auto why = testing::egress_net_unavailable(); !why.empty()) {
    GTEST_SKIP() << "SKIPPED LOUDLY: " << why;
  }
  EgressNet net;
  testing::write_file(net.root() / "www" / "hello.txt", "hello through the proxy\n");
  net.start_servers({"pkgs.egress.test"});
  testing::set_test_hosts({{net.server_ip(), "pkgs.egress.test"}});

  TempDir dir;
  const int port = testing::free_port();
  const std::string url = fmt::format("http://127.0.0.1:{}", port);
  ChildProcess orchestrator(
      {kOrchestrator, "serve", "--listen", fmt::format("127.0.0.1:{}", port), "--db",
       "sqlite:" + (dir.path() / "db.sqlite").string(), "--poll-timeout", "2s"},
      {"TAMMA_ADMIN_TOKEN=" + kAdmin, "TAMMA_REGISTRATION_TOKEN=" + kRegistration});
  ASSERT_TRUE(orchestrator.wait_for_output("listening on", 20s)) << orchestrator.err_so_far();
  ChildProcess worker({TAMMA_WORKER_BINARY, "start", "--orchestrator", url, "--workspace-root",
                       (dir.path() / "ws").string(), "--grace-period", "2s"},
                      {"TAMMA_TOKEN=" + kRegistration});
  ASSERT_TRUE(worker.wait_for_output("registered with", 20s)) << worker.err_so_far();

  const json spec = {
      {"type", "command"},
      {"network", {{"allow", {"pkgs.egress.test:80"}}}},
      {"steps",
       {{{"name", "fetch"},
         {"run",
          "curl -fsS http://pkgs.egress.test/hello.txt; "
          "if curl -fsS http://pkgs.egress.test:8080/ 2>/dev/null; then exit 1; fi"}}}}};
  testing::write_file(dir.path() / "task.json", spec.dump());
  auto submitted =
      testing::run_process({kOrchestrator, "submit", (dir.path() / "task.json").string()},
                           {"TAMMA_ORCHESTRATOR_URL=" + url, "TAMMA_TOKEN=" + kAdmin});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string id = submitted.out.substr(0, submitted.out.find('\n'));

  json task;
  for (int i = 0; i < 600; ++i) {
    auto r = testing::run_process({"/usr/bin/env", "curl", "-sS", "--noproxy", "*", "-H",
                                   "Authorization: Bearer " + kAdmin, url + "/api/v1/tasks/" + id});
    task = json::parse(r.out, nullptr, false);
    const std::string state = task.is_object() ? task.value("state", "") : "";
    if (state == "succeeded" || state == "failed" || state == "dead") break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(task.value("state", ""), "succeeded") << task.dump(2);
  const json& result = task["result"];
  EXPECT_EQ(result["steps"][0]["stdout"], "hello through the proxy\n");
  ASSERT_EQ(result["usage"]["egress"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["usage"]["egress"][0]["destination"], "pkgs.egress.test:80");
  EXPECT_GT(result["usage"]["egress"][0]["bytesIn"].get<std::uint64_t>(), 0u);
  ASSERT_EQ(result["egressRefused"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["egressRefused"][0]["destination"], "pkgs.egress.test:8080");

  worker.send_signal(SIGTERM);
  EXPECT_EQ(worker.wait(30s).exit_code, 0);
  orchestrator.send_signal(SIGTERM);
  orchestrator.wait(20s);
}

}  // namespace
}  // namespace tamma
