// `tamma-worker run` with a network allow-list (issue 15): real clients in the sandbox (curl,
// git, pip) reach allowed HTTPS and HTTP servers in a network namespace the test made, through
// the worker's egress proxy and the variables it sets; everything else fails and the result
// says what was refused and what was carried.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "egress/egress_net.h"

namespace tamma {
namespace {

using nlohmann::json;
using testing::EgressNet;
using ::testing::HasSubstr;
using testing::ProcessResult;
using testing::TempDir;
using testing::write_file;

constexpr const char* kMakeWheel = R"PY(
import sys, zipfile, hashlib, base64
out = sys.argv[1]
files = {
  "demo/__init__.py": b"",
  "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
  "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tamma-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for name, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += f"{name},sha256={digest},{len(data)}\n"
record += "demo-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile(out, "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
    z.writestr("demo-1.0.dist-info/RECORD", record)
)PY";

class EgressRun : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = testing::egress_net_unavailable(); !why.empty()) {
      GTEST_SKIP() << "SKIPPED LOUDLY: " << why;
    }
    for (const char* tool : {"git --version", "python3 -m pip --version"}) {
      if (testing::run_process({"/bin/sh", "-c", fmt::format("{} >/dev/null 2>&1", tool)})
              .exit_code != 0) {
        GTEST_SKIP() << "SKIPPED LOUDLY: " << tool << " is not installed (scripts/setup.sh)";
      }
    }
    net_ = std::make_unique<EgressNet>();
    const auto www = net_->root() / "www";
    write_file(www / "hello.txt", "hello through the proxy\n");
    // A repository served by plain files: git's "dumb" HTTP protocol, over http and https.
    const std::string repo = (net_->root() / "src").string();
    sh(fmt::format(
        "git init -q {0} && cd {0} && echo content > file.txt && git add file.txt && "
        "git -c user.name=t -c user.email=t@t commit -qm one && "
        "git clone -q --bare {0} {1}/repo.git && git -C {1}/repo.git update-server-info",
        repo, www.string()));
    // A package index in PEP 503's simple form with one wheel.
    std::filesystem::create_directories(www / "simple" / "demo");
    std::filesystem::create_directories(www / "packages");
    write_file(net_->root() / "wheel.py", kMakeWheel);
    sh(fmt::format("python3 {} {}", (net_->root() / "wheel.py").string(),
                   (www / "packages" / "demo-1.0-py3-none-any.whl").string()));
    write_file(www / "simple" / "demo" / "index.html",
               "<html><body><a href=\"/packages/demo-1.0-py3-none-any.whl\">"
               "demo-1.0-py3-none-any.whl</a></body></html>\n");
    net_->start_servers({"pkgs.egress.test", "other.egress.test"});
    testing::set_test_hosts({{net_->server_ip(), "pkgs.egress.test"},
                             {net_->server_ip(), "other.egress.test"},
                             {"127.0.0.1", "rebind.egress.test"},
                             {"169.254.169.254", "metadata.egress.test"}});
    ca_ = testing::read_file(net_->ca());
  }

  void TearDown() override {
    if (!workspaces_) return;
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(workspaces_->path())) {
      left.push_back(e.path().filename());
    }
    EXPECT_TRUE(left.empty()) << "workspace root not empty";
  }

  static void sh(const std::string& script) {
    auto r = testing::run_process({"/bin/sh", "-c", script});
    ASSERT_EQ(r.exit_code, 0) << script << "\n" << r.err;
  }

  // Runs a task whose steps are shell scripts, with the test's CA in $CA_PEM.
  json run_task(const json& network, const std::vector<std::string>& scripts, int expected_exit,
                const std::vector<std::string>& extra_args = {}) {
    json steps = json::array();
    for (std::size_t i = 0; i < scripts.size(); ++i) {
      steps.push_back({{"name", fmt::format("step{}", i)},
                       {"run", "printf '%s' \"$CA_PEM\" > /workspace/ca.pem\n" + scripts[i]}});
    }
    const json spec = {{"type", "command"},
                       {"network", network},
                       {"timeout", "120s"},
                       {"env", {{"CA_PEM", ca_}}},
                       {"steps", steps}};
    const auto file = files_.path() / fmt::format("task-{}.json", ++count_);
    write_file(file, spec.dump());
    std::vector<std::string> argv{TAMMA_WORKER_BINARY, "run", "--json", "--workspace-root",
                                  workspaces_->path().string()};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    argv.push_back(file.string());
    ProcessResult r = testing::run_process(argv, {}, std::chrono::seconds(300));
    EXPECT_EQ(r.exit_code, expected_exit) << r.out << r.err;
    last_err_ = r.err;
    try {
      return json::parse(r.out);
    } catch (const std::exception&) {
      return json::object();
    }
  }

  static std::string output(const json& result) {
    std::string out;
    for (const auto& step : result.value("steps", json::array())) {
      out += step.value("stdout", "") + step.value("stderr", "");
    }
    return out;
  }

  std::unique_ptr<EgressNet> net_;
  std::unique_ptr<TempDir> workspaces_ = std::make_unique<TempDir>();
  TempDir files_;
  std::string ca_;
  std::string last_err_;
  int count_ = 0;
};

TEST_F(EgressRun, CurlGitAndPipReachAllowedHttpsAndHttpServers) {
  const json network = {{"allow", {"pkgs.egress.test:443", "pkgs.egress.test:80"}}};
  const json result = run_task(
      network,
      {"curl -fsS --cacert /workspace/ca.pem https://pkgs.egress.test/hello.txt\n"
       "curl -fsS http://pkgs.egress.test/hello.txt\n",
       "cd /workspace && GIT_SSL_CAINFO=/workspace/ca.pem git clone -q "
       "https://pkgs.egress.test/repo.git over-https && cat over-https/file.txt\n"
       "git clone -q http://pkgs.egress.test/repo.git over-http && cat over-http/file.txt\n",
       "cd /workspace && python3 -m pip download -q --no-cache-dir --disable-pip-version-check "
       "--no-deps --cert /workspace/ca.pem --index-url https://pkgs.egress.test/simple/ "
       "-d dl demo && ls dl\n"},
      0);
  ASSERT_EQ(result.value("status", ""), "succeeded") << result.dump(2) << last_err_;
  const std::string out = output(result);
  EXPECT_THAT(out, HasSubstr("hello through the proxy\nhello through the proxy\n"));
  EXPECT_THAT(out, HasSubstr("content\ncontent\n"));
  EXPECT_THAT(out, HasSubstr("demo-1.0-py3-none-any.whl"));
  ASSERT_TRUE(result["usage"].contains("egress")) << result["usage"].dump();
  const json& egress = result["usage"]["egress"];
  ASSERT_EQ(egress.size(), 2u) << egress.dump();
  EXPECT_EQ(egress[0]["destination"], "pkgs.egress.test:443");
  EXPECT_EQ(egress[1]["destination"], "pkgs.egress.test:80");
  for (const auto& e : egress) {
    EXPECT_GT(e["bytesIn"].get<std::uint64_t>(), 0u);
    EXPECT_GT(e["bytesOut"].get<std::uint64_t>(), 0u);
    EXPECT_GE(e["connections"].get<std::uint64_t>(), 2u);
  }
  EXPECT_FALSE(result.contains("egressRefused")) << result["egressRefused"].dump();
}

TEST_F(EgressRun, EverythingElseFailsAndIsRecorded) {
  // Each attempt must fail; one that succeeds prints LEAK and fails the task.
  const std::string ip = net_->server_ip();
  const json network = {
      {"allow", {"pkgs.egress.test:443", "rebind.egress.test:8080", "metadata.egress.test:80"}}};
  const json result = run_task(
      network,
      {fmt::format(
          "attempt() {{ if \"$@\" >/dev/null 2>&1; then echo \"LEAK: $*\"; exit 1; fi; }}\n"
          "attempt curl -fsS --cacert /workspace/ca.pem https://other.egress.test/hello.txt\n"
          "attempt curl -fsS -k https://{0}/hello.txt\n"
          "attempt curl -fsS http://pkgs.egress.test/hello.txt\n"
          "attempt curl -fsS http://rebind.egress.test:8080/\n"
          "attempt curl -fsS http://metadata.egress.test/latest/meta-data/\n"
          "attempt curl -fsS --noproxy '*' http://{0}/hello.txt\n"
          "attempt curl -fsS --noproxy '*' --resolve pkgs.egress.test:443:{0} --cacert "
          "/workspace/ca.pem https://pkgs.egress.test/hello.txt\n"
          "attempt python3 -c \"import socket; s = socket.socket(socket.AF_INET, "
          "socket.SOCK_DGRAM); s.sendto(b'x', ('{0}', 53))\"\n"
          "attempt curl -fsS --max-time 5 --noproxy '*' http://169.254.169.254/\n"
          "echo ALL-REFUSED\n"
          "curl -fsS --cacert /workspace/ca.pem https://pkgs.egress.test/hello.txt\n",
          ip)},
      0);
  EXPECT_EQ(result.value("status", ""), "succeeded") << output(result) << last_err_;
  EXPECT_THAT(output(result), HasSubstr("ALL-REFUSED\nhello through the proxy\n"));
  ASSERT_TRUE(result.contains("egressRefused")) << result.dump(2);
  std::vector<std::string> refused;
  for (const auto& r : result["egressRefused"]) {
    refused.push_back(r["destination"].get<std::string>() + " " + r["reason"].get<std::string>());
    EXPECT_THAT(r["at"].get<std::string>(), ::testing::MatchesRegex("20[0-9-]+T[0-9:.]+Z"));
  }
  EXPECT_THAT(refused, ::testing::ElementsAre(
                           "other.egress.test:443 not in the task's allow-list",
                           ip + ":443 not in the task's allow-list",
                           "pkgs.egress.test:80 not in the task's allow-list",
                           "rebind.egress.test:8080 resolves to loopback (127.0.0.1)",
                           "metadata.egress.test:80 resolves to link-local (cloud metadata) "
                           "(169.254.169.254)"));
  ASSERT_EQ(result["usage"]["egress"].size(), 1u);
  EXPECT_EQ(result["usage"]["egress"][0]["connections"], 1);
}

TEST_F(EgressRun, AFailedTaskIsToldWhatTheProxyRefused) {
  const json result = run_task({{"allow", {"pkgs.egress.test:443"}}},
                               {"curl -fsS http://other.egress.test/hello.txt"}, 1);
  ASSERT_TRUE(result.contains("hints")) << result.dump(2);
  ASSERT_EQ(result["hints"].size(), 1u) << result["hints"].dump();
  EXPECT_THAT(result["hints"][0].get<std::string>(),
              HasSubstr("the egress proxy refused 1 connection (the first: other.egress.test:80: "
                        "not in the task's allow-list); the task's network allows only "
                        "pkgs.egress.test:443"));
}

TEST_F(EgressRun, SpecsOutsideTheOperatorsPolicyAreRefusedBeforeRunning) {
  // Address literals no task may reach, whatever the operator allows.
  json result = run_task({{"allow", {"127.0.0.1:80"}}}, {"true"}, 2);
  EXPECT_THAT(last_err_, HasSubstr("$.network.allow[0]: 127.0.0.1 is loopback"));
  const auto config = files_.path() / "worker.json";
  write_file(config,
             R"({"networkPolicy": {"hostNetwork": false, "allow": ["*.egress.test:443"]}})");
  result = run_task({{"allow", {"pkgs.egress.test:443", "pypi.org:443"}}}, {"true"}, 2,
                    {"--config", config.string()});
  EXPECT_THAT(last_err_, HasSubstr("$.network.allow[1]: \"pypi.org:443\" is not among"));
  result = run_task("host", {"true"}, 2, {"--config", config.string()});
  EXPECT_THAT(last_err_, HasSubstr("$.network: \"host\" is not allowed"));
  // Within the policy it runs.
  result = run_task({{"allow", {"pkgs.egress.test:443"}}},
                    {"curl -fsS --cacert /workspace/ca.pem https://pkgs.egress.test/hello.txt"}, 0,
                    {"--config", config.string()});
  EXPECT_THAT(output(result), HasSubstr("hello through the proxy"));
}

}  // namespace
}  // namespace tamma
