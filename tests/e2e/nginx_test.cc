// nginx in front of orchestrator replicas, for real: Debian's /usr/sbin/nginx runs the
// configuration users copy (docs/nginx/tamma-orchestrator.conf, only its upstream's server lines
// and its listen address replaced) on a free loopback port, in front of two
// `tamma-orchestrator serve` replicas on one PostgreSQL database. Clients and a worker daemon
// know nginx's URL only.
//
// Without nginx the tests fail, saying so: scripts/setup.sh installs it.

#include <fmt/format.h>

#include <future>
#include <regex>
#include <sstream>
#include <thread>

#include "common/encoding.h"
#include "e2e/e2e_support.h"
#include "worker/artifacts.h"

namespace tamma::e2e {
namespace {

const std::filesystem::path kNginxBinary = "/usr/sbin/nginx";
const std::filesystem::path kDocumentedConf =
    std::filesystem::path(TAMMA_SOURCE_DIR) / "docs/nginx/tamma-orchestrator.conf";

// The documented file with the test's replicas and port: every other line as users copy it.
// Fails the test when the file no longer has the shape this replaces (one `server HOST:PORT`
// line per replica in the upstream, one `listen PORT;`).
std::string documented_conf_for(const std::vector<int>& replica_ports, int listen_port) {
  const std::string doc = testing::read_file(kDocumentedConf);
  std::istringstream in(doc);
  std::string out;
  std::string line;
  const std::regex server_line(R"(^(\s*)server\s+127\.0\.0\.1:[0-9]+(\s.*)?;\s*$)");
  const std::regex listen_line(R"(^(\s*)listen\s+[0-9]+;\s*$)");
  bool servers_written = false;
  int listens = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, server_line)) {
      if (!servers_written) {
        for (int port : replica_ports) {
          out += m[1].str() + "server 127.0.0.1:" + std::to_string(port) + m[2].str() + ";\n";
        }
        servers_written = true;
      }
    } else if (std::regex_match(line, m, listen_line)) {
      out += m[1].str() + "listen 127.0.0.1:" + std::to_string(listen_port) + ";\n";
      ++listens;
    } else {
      out += line + "\n";
    }
  }
  EXPECT_TRUE(servers_written) << kDocumentedConf << " has no upstream `server` lines to replace";
  EXPECT_EQ(listens, 1) << kDocumentedConf << " should have one `listen PORT;`";
  return out;
}

// The documented value of a directive (its first occurrence), or "".
std::string documented(const std::string& directive) {
  const std::string doc = testing::read_file(kDocumentedConf);
  std::smatch m;
  const std::regex re("\\n\\s*" + directive + "\\s+([^;]+);");
  return std::regex_search(doc, m, re) ? m[1].str() : "";
}

// nginx as a child of the test, in one process (master_process off: nothing outlives a
// SIGKILL of it), with its logs, pid and temporary files in its own directory.
class NginxProcess {
 public:
  NginxProcess(const std::filesystem::path& dir, const std::vector<int>& replica_ports)
      : dir_(dir), port_(free_port()) {
    if (::access(kNginxBinary.c_str(), X_OK) != 0) {
      ADD_FAILURE() << "\n!!! " << kNginxBinary
                    << " is not installed: these tests run the real nginx in front of the "
                       "replicas. Install it with scripts/setup.sh (Debian package `nginx`).\n";
      return;
    }
    std::filesystem::create_directories(dir_);
    testing::write_file(dir_ / "tamma-orchestrator.conf",
                        documented_conf_for(replica_ports, port_));
    const std::string d = dir_.string();
    testing::write_file(dir_ / "nginx.conf", fmt::format(R"(master_process off;
pid {0}/nginx.pid;
error_log {0}/error.log info;
events {{ worker_connections 512; }}
http {{
  access_log {0}/access.log;
  client_body_temp_path {0}/client_body;
  proxy_temp_path {0}/proxy;
  fastcgi_temp_path {0}/fastcgi;
  uwsgi_temp_path {0}/uwsgi;
  scgi_temp_path {0}/scgi;
  include {0}/tamma-orchestrator.conf;
}}
)",
                                                         d));
    child_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{kNginxBinary.string(), "-p", d + "/", "-e", d + "/error.log", "-c",
                                 d + "/nginx.conf", "-g", "daemon off;"});
    // Up when it answers: the orchestrator's /health, through it.
    const auto deadline = Clock::now() + 20s;
    for (;;) {
      try {
        orchestrator::HttpClient probe(url(), "");
        if (probe.get("/health", 5s).status == 200) break;
      } catch (const Error&) {
      }
      if (Clock::now() > deadline) {
        ADD_FAILURE() << "nginx did not answer /health within 20 s:\n" << error_log();
        return;
      }
      std::this_thread::sleep_for(50ms);
    }
    ready_ = true;
  }
  ~NginxProcess() {
    if (!child_) return;
    child_->send_signal(SIGTERM);  // fast shutdown
    child_->wait(20s);
  }

  [[nodiscard]] bool ready() const { return ready_; }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string error_log() const {
    try {
      return testing::read_file(dir_ / "error.log");
    } catch (const std::exception&) {
      return "(no error log)";
    }
  }
  [[nodiscard]] std::string access_log() const {
    try {
      return testing::read_file(dir_ / "access.log");
    } catch (const std::exception&) {
      return "(no access log)";
    }
  }

 private:
  std::filesystem::path dir_;
  int port_;
  std::unique_ptr<testing::ChildProcess> child_;
  bool ready_ = false;
};

// fail_timeout of the upstream's server lines ("5s").
std::string documented_fail_timeout() {
  const std::string doc = testing::read_file(kDocumentedConf);
  std::smatch m;
  return std::regex_search(doc, m, std::regex("fail_timeout=([0-9]+s?)")) ? m[1].str() : "0";
}

std::chrono::seconds seconds_of(const std::string& value) {
  return std::chrono::seconds(std::stoi(value));  // "90s" and "90" alike
}

class NginxInFront : public ::testing::Test {
 protected:
  // The replicas' default --poll-timeout (25 s): the one the documented timeouts are set for.
  static std::vector<std::string> replica_flags() {
    return {"--heartbeat-interval", "300ms", "--lease-ttl", "2s", "--retry-base", "100ms"};
  }

  void SetUp() override {
    replicas_ = std::make_unique<PostgresReplicas>(testing::shared_postgres_cluster(), "nginx",
                                                   dir_.path() / "replicas", 2, replica_flags());
    nginx_ = std::make_unique<NginxProcess>(
        dir_.path() / "nginx", std::vector<int>{(*replicas_)[0].port(), (*replicas_)[1].port()});
    ASSERT_TRUE(nginx_->ready());
  }

  orchestrator::HttpResult admin(const std::string& method, const std::string& path,
                                 const std::string& body = {},
                                 std::vector<std::string> headers = {},
                                 std::chrono::milliseconds timeout = 30s) {
    orchestrator::HttpClient client(nginx_->url(), kAdminToken);
    return client.request(method, path, body, headers, timeout);
  }

  // As a client of the documented configuration must: a POST that reached a replica just
  // killed (on a pooled keep-alive connection) is answered 502 by nginx, which never replays
  // a non-idempotent request elsewhere (docs/nginx); the idempotency key makes the client's
  // own retry safe, and exactly one task comes of it.
  std::string submit(const json& spec, const std::string& key) {
    orchestrator::HttpResult r;
    bool retried = false;
    for (int attempt = 0; attempt < 5; ++attempt) {
      r = admin("POST", "/api/v1/tasks", json{{"task", spec}, {"maxRetries", 10}}.dump(),
                {"Content-Type: application/json", "Idempotency-Key: " + key});
      if (r.status != 502 && r.status != 503 && r.status != 504) break;
      retried = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100 << attempt));
    }
    // 200: the killed replica had committed it before dying; the retry finds that task.
    const bool ok = r.status == 201 || (retried && r.status == 200);
    EXPECT_TRUE(ok) << r.status << " " << r.body;
    return ok ? r.json().value("id", "") : "";
  }

  json wait_final(const std::string& id, std::chrono::seconds limit = 60s) {
    const auto deadline = Clock::now() + limit;
    json t;
    for (;;) {
      auto r = admin("GET", "/api/v1/tasks/" + id);
      if (r.status == 200) {
        t = r.json();
        const std::string state = t.value("state", "");
        if (state == "succeeded" || state == "failed" || state == "dead" || state == "cancelled") {
          return t;
        }
      }
      if (Clock::now() > deadline) return t;
      replicas_->pump();
      std::this_thread::sleep_for(50ms);
    }
  }

  // Polls parked on the replicas, from each one's /metrics (asked directly, not through nginx).
  int parked_polls() {
    int sum = 0;
    for (std::size_t i = 0; i < replicas_->size(); ++i) {
      if (!(*replicas_)[i].running()) continue;
      std::smatch m;
      const std::string body = (*replicas_)[i].admin("GET", "/metrics").body;
      static const std::regex gauge("\\ntamma_waiting_polls ([0-9]+)");
      if (std::regex_search(body, m, gauge)) sum += std::stoi(m[1]);
    }
    return sum;
  }

  testing::TempDir dir_;
  std::unique_ptr<PostgresReplicas> replicas_;
  std::unique_ptr<NginxProcess> nginx_;
};

TEST(NginxConfiguration, TheDocumentedFileKeepsWhatTheOrchestratorNeeds) {
  ASSERT_TRUE(std::filesystem::exists(kDocumentedConf)) << kDocumentedConf;
  // Above the default --poll-timeout (25 s) with room to spare: a parked poll or log follow is
  // never cut with 504.
  EXPECT_GE(seconds_of(documented("proxy_read_timeout")), 25s + 30s);
  EXPECT_GE(seconds_of(documented("proxy_send_timeout")), 25s + 30s);
  EXPECT_EQ(documented("proxy_buffering"), "off");
  EXPECT_EQ(documented("proxy_request_buffering"), "off");
  // At least the default --max-artifact-body, 64M.
  EXPECT_EQ(documented("client_max_body_size"), "64m");
  EXPECT_EQ(documented("proxy_http_version"), "1.1");
  // Failover for what was not sent, never a replay of a POST that reached a replica: no
  // `non_idempotent` (and no 5xx answers: every replica says 503 while PostgreSQL is away).
  EXPECT_EQ(documented("proxy_next_upstream"), "error timeout");
}

TEST_F(NginxInFront, AWorkerThroughNginxRunsTasksUploadsArtifactsAndOutlivesAReplicaKill) {
  auto worker = start_worker(nginx_->url(), dir_.path() / "ws", {"--slots", "2"});
  ASSERT_TRUE(worker->wait_for_output("registered with", 30s)) << worker->err_so_far();

  // An artifact of 3 MiB: above nginx's in-memory body buffer and libcurl's chunk sizes, so
  // the upload streams through nginx to the replica.
  json spec = {{"type", "command"},
               {"steps",
                {{{"name", "make"},
                  {"run",
                   "mkdir -p out && head -c 3145728 /dev/zero | tr '\\0' 'x' > out/big.bin && "
                   "echo made-it"}}}},
               {"artifacts", {"out/*.bin"}}};
  const std::string id = submit(spec, "nginx-artifact");
  auto t = wait_final(id);
  ASSERT_EQ(t["state"], "succeeded") << t.dump(2) << "\n" << worker->err_so_far();
  ASSERT_EQ(t["artifacts"].size(), 1u) << t.dump(2);
  EXPECT_EQ(t["artifacts"][0]["size"], 3145728);
  auto logs = admin("GET", "/api/v1/tasks/" + id + "/logs");
  EXPECT_EQ(logs.status, 200);
  EXPECT_EQ(logs.body, "made-it\n");
  auto download =
      admin("GET", "/api/v1/tasks/" + id + "/artifacts/" + tamma::url_encode("out/big.bin"));
  ASSERT_EQ(download.status, 200) << download.body.substr(0, 300);
  EXPECT_EQ(download.body, std::string(3145728, 'x'));
  testing::write_file(dir_.path() / "downloaded", download.body);
  EXPECT_EQ(worker::sha256_file(dir_.path() / "downloaded"), t["artifacts"][0]["sha256"]);

  // Each replica in turn is SIGKILLed behind nginx (its parked polls and open requests cut
  // off) and tasks keep running through nginx; then it comes back.
  int n = 0;
  for (std::size_t victim : {0u, 1u}) {
    (*replicas_)[victim].kill();
    std::vector<std::string> ids;
    for (int i = 0; i < 6; ++i, ++n) {
      ids.push_back(
          submit({{"type", "command"},
                  {"steps", {{{"name", "n"}, {"run", "echo behind-" + std::to_string(n)}}}}},
                 "nginx-kill-" + std::to_string(n)));
      ASSERT_FALSE(ids.back().empty()) << "with replica " << victim << " killed";
    }
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const int number = n - static_cast<int>(ids.size()) + static_cast<int>(i);
      auto done = wait_final(ids[i]);
      EXPECT_EQ(done["state"], "succeeded")
          << "with replica " << victim << " killed: " << done.dump(2) << "\n"
          << worker->err_so_far().substr(
                 worker->err_so_far().size() > 4000 ? worker->err_so_far().size() - 4000 : 0);
      EXPECT_EQ(admin("GET", "/api/v1/tasks/" + ids[i] + "/logs").body,
                "behind-" + std::to_string(number) + "\n");
    }
    (*replicas_)[victim].start();
    // nginx left the victim out for fail_timeout after its failures (max_fails=1): only then
    // is it tried again, and until then the other replica is all nginx has. Killing that one
    // now would leave nginx nothing (a 502 for everything), which is not what this checks.
    std::this_thread::sleep_for(seconds_of(documented_fail_timeout()) + 1s);
  }

  worker->send_signal(SIGTERM);
  auto r = worker->wait(60s);
  EXPECT_EQ(r.exit_code, 0) << r.err.substr(r.err.size() > 4000 ? r.err.size() - 4000 : 0);
}

TEST_F(NginxInFront, AParkedPollIsAnsweredThroughNginxAndAnEmptyOneIsTheOrchestratorsOwn) {
  orchestrator::HttpClient registration(nginx_->url(), kRegistrationToken);
  auto reg = registration.post_json(
      "/api/v1/workers/register",
      {{"capabilities",
        {{"taskTypes", {"command"}},
         {"labels", json::object()},
         {"slots", 1},
         {"resources", {{"memoryBytes", 1 << 30}, {"cpus", 2}, {"diskBytes", 1 << 30}}},
         {"version", "test"},
         {"platform", {{"os", "linux"}, {"arch", "x86_64"}, {"kernel", "6.1"}}}}}});
  ASSERT_EQ(reg.status, 201) << reg.body;
  const std::string worker_id = reg.json()["workerId"];
  const std::string worker_token = reg.json()["token"];
  auto poll = [&](const std::string& query) {
    orchestrator::HttpClient client(nginx_->url(), worker_token);
    return client.request("POST", "/api/v1/workers/" + worker_id + "/poll" + query, {}, {}, 120s);
  };

  // A poll with no waitMs is held the orchestrator's whole --poll-timeout (25 s): nginx must not
  // cut it (504) and must pass on the orchestrator's own empty answer.
  const auto asked = Clock::now();
  auto empty = poll("");
  EXPECT_EQ(empty.status, 204) << empty.body << "\n" << nginx_->error_log();
  EXPECT_EQ(empty.body, "");
  EXPECT_GE(Clock::now() - asked, 20s) << "the poll was not held: not the orchestrator's answer";
  // The same as asked directly of a replica.
  orchestrator::HttpClient direct((*replicas_)[0].url(), worker_token);
  auto direct_empty =
      direct.request("POST", "/api/v1/workers/" + worker_id + "/poll?waitMs=500", {}, {}, 30s);
  EXPECT_EQ(direct_empty.status, empty.status);
  EXPECT_EQ(direct_empty.body, empty.body);

  // Parked through nginx; a task submitted later, through nginx, wakes it.
  auto parked = std::async(std::launch::async, [&] { return poll("?waitMs=25000"); });
  const auto deadline = Clock::now() + 15s;
  while (parked_polls() < 1 && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(parked_polls(), 1) << "no poll parked behind nginx";
  std::this_thread::sleep_for(2s);  // parked a while: the answer comes from the wake-up
  const std::string id = submit(
      {{"type", "command"}, {"steps", {{{"name", "n"}, {"run", "echo later"}}}}}, "nginx-parked");
  auto answer = parked.get();
  ASSERT_EQ(answer.status, 200) << answer.body << "\n" << nginx_->error_log();
  EXPECT_EQ(answer.json()["taskId"], id);
}

}  // namespace
}  // namespace tamma::e2e
