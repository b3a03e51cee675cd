// A real daemon talking to a real orchestrator over HTTPS, the certificate made by openssl for
// the test and trusted through --ca-file, as a deployment without a public CA would do.

#include "e2e/e2e_support.h"

namespace tamma::e2e {
namespace {

TEST(Tls, ADaemonRunsATaskOverHttpsWithAPrivateCa) {
  testing::TempDir dir;
  auto pki = testing::make_test_pki(dir.path());
  const int port = free_port();
  const std::string url = "https://127.0.0.1:" + std::to_string(port);
  testing::ChildProcess orchestrator(
      {kOrchestratorBinary, "serve", "--listen", "127.0.0.1:" + std::to_string(port), "--db",
       "sqlite:" + (dir.path() / "db.sqlite").string(), "--tls-cert", pki.server_cert.string(),
       "--tls-key", pki.server_key.string(), "--heartbeat-interval", "500ms", "--lease-ttl", "2s"},
      {"TAMMA_ADMIN_TOKEN=" + kAdminToken, "TAMMA_REGISTRATION_TOKEN=" + kRegistrationToken});
  ASSERT_TRUE(orchestrator.wait_for_output("listening on https://", 20s))
      << orchestrator.err_so_far();

  // Without the CA the daemon cannot verify the orchestrator and never registers.
  auto untrusting = start_worker(url, dir.path() / "ws-untrusting");
  EXPECT_FALSE(untrusting->wait_for_output("registered with", 3s));
  untrusting->send_signal(SIGTERM);
  untrusting->wait(30s);

  auto worker = start_worker(url, dir.path() / "ws", {"--ca-file", pki.ca.string()});
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s)) << worker->err_so_far();
  orchestrator::HttpClient admin(url, kAdminToken);
  admin.set_ca_file(pki.ca.string());
  auto submitted = admin.post_json(
      "/api/v1/tasks",
      {{"task", {{"type", "command"}, {"steps", {{{"name", "hi"}, {"run", "echo over tls"}}}}}}});
  ASSERT_EQ(submitted.status, 201) << submitted.body;
  const std::string id = submitted.json()["id"];
  json task;
  const auto deadline = Clock::now() + 30s;
  do {
    std::this_thread::sleep_for(50ms);
    task = admin.get("/api/v1/tasks/" + id).json();
  } while (task["state"] != "succeeded" && task["state"] != "failed" && Clock::now() < deadline);
  EXPECT_EQ(task["state"], "succeeded") << task.dump(2);
  auto log = admin.get("/api/v1/tasks/" + id + "/logs");
  EXPECT_NE(log.body.find("over tls"), std::string::npos) << log.body;

  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
  orchestrator.send_signal(SIGTERM);
  EXPECT_EQ(orchestrator.wait(20s).exit_code, 0);
}

}  // namespace
}  // namespace tamma::e2e
