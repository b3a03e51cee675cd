// HTTPS: the orchestrator serves TLS with a certificate made by openssl in the test, clients
// verify it against the CA they are given, and nothing is answered in the clear.

#include "orchestrator_fixture.h"
#include "raw_http.h"

namespace tamma::orchestrator::testing {
namespace {

class TlsServer {
 public:
  TlsServer()
      : pki_(tamma::testing::make_test_pki(dir_.path())), server_([this](ServerConfig& c) {
          c.tls_cert = pki_.server_cert;
          c.tls_key = pki_.server_key;
        }) {}
  std::unique_ptr<HttpClient> client(const std::string& token,
                                     const std::filesystem::path& ca) const {
    auto http = std::make_unique<HttpClient>(server_.url(), token);
    http->set_ca_file(ca.string());
    return http;
  }
  [[nodiscard]] const tamma::testing::TestPki& pki() const { return pki_; }
  TestServer& server() { return server_; }

 private:
  tamma::testing::TempDir dir_;
  tamma::testing::TestPki pki_;
  TestServer server_;
};

TEST(OrchestratorTls, ServesHttpsToClientsThatTrustItsCa) {
  TlsServer tls;
  ASSERT_EQ(tls.server().url().rfind("https://", 0), 0u);
  auto anon = tls.client("", tls.pki().ca);
  EXPECT_EQ(anon->get("/health").status, 200);

  // The whole protocol works over it: register, submit, poll, complete.
  auto reg = tls.client(kRegistrationToken, tls.pki().ca)
                 ->post_json("/api/v1/workers/register", {{"capabilities", capabilities()}});
  ASSERT_EQ(reg.status, 201) << reg.body;
  auto worker = tls.client(reg.json()["token"], tls.pki().ca);
  auto admin = tls.client(kAdminToken, tls.pki().ca);
  auto submitted = admin->post_json("/api/v1/tasks", submit_body(task_spec()));
  ASSERT_EQ(submitted.status, 201) << submitted.body;
  std::string worker_id = reg.json()["workerId"];
  auto lease = worker->request("POST", "/api/v1/workers/" + worker_id + "/poll?waitMs=2000");
  ASSERT_EQ(lease.status, 200) << lease.body;
  auto l = lease.json();
  std::string task_id = l["taskId"];
  auto done = worker->post_json("/api/v1/tasks/" + task_id + "/complete",
                                {{"attempt", l["attempt"]},
                                 {"leaseId", l["leaseId"]},
                                 {"result", {{"status", "succeeded"}}}});
  EXPECT_EQ(done.status, 200) << done.body;
  // A large upload streams through TLS like through plain TCP.
  auto up = worker->request("POST",
                            "/api/v1/tasks/" + task_id + "/artifacts?name=a.bin&attempt=" +
                                std::to_string(l["attempt"].get<int>()) +
                                "&leaseId=" + l["leaseId"].get<std::string>(),
                            std::string(3 << 20, 'x'));
  EXPECT_EQ(up.status, 409) << "the task is over; the fence still decides: " << up.body;
}

TEST(OrchestratorTls, ClientsThatCannotVerifyItGetNoAnswerAndPlainHttpGetsNothing) {
  TlsServer tls;
  // A client trusting another CA, or only the system's store, refuses the handshake.
  EXPECT_THROW(tls.client(kAdminToken, tls.pki().other_ca)->get("/api/v1/tasks"), Error);
  EXPECT_THROW(HttpClient(tls.server().url(), kAdminToken).get("/api/v1/tasks"), Error);

  // Plain HTTP to the TLS port: no HTTP answer comes back, and the connection is closed.
  RawConnection raw(std::stoi(tls.server().url().substr(tls.server().url().rfind(':') + 1)));
  raw.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  auto got = raw.read_to_close(10s);
  EXPECT_TRUE(raw.closed());
  EXPECT_EQ(got.find("HTTP/1.1 200"), std::string::npos) << got;
}

TEST(OrchestratorTls, CertificateAndKeyGoTogetherAndMustLoad) {
  tamma::testing::TempDir dir;
  auto pki = tamma::testing::make_test_pki(dir.path());
  ServerConfig config;
  config.listen_port = 0;
  config.db_path = dir.path() / "db.sqlite";
  config.admin_token = kAdminToken;
  config.registration_token = kRegistrationToken;
  config.tls_cert = pki.server_cert;
  std::ostringstream announce;
  try {
    Server server(config, announce);
    FAIL() << "a certificate without its key was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "invalid_tls");
  }
  config.tls_key = pki.ca;  // not a key
  try {
    Server server(config, announce);
    FAIL() << "a certificate in place of the key was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "invalid_tls");
    EXPECT_NE(std::string(e.what()).find("--tls-key"), std::string::npos);
  }
}

}  // namespace
}  // namespace tamma::orchestrator::testing
