// Artifacts in daemon mode: what a task's `artifacts` globs match is uploaded to the
// orchestrator before the result, under its workspace-relative path, and downloads back intact.

#include <map>

#include "common/encoding.h"
#include "e2e/e2e_support.h"
#include "worker/artifacts.h"

namespace tamma::e2e {
namespace {

std::string sha256_of(const std::filesystem::path& dir, const std::string& bytes) {
  const auto file = dir / "sha-input";
  testing::write_file(file, bytes);
  return worker::sha256_file(file);
}

TEST(ArtifactUpload, MatchedArtifactsAreUploadedBeforeTheResultAndDownloadIntact) {
  testing::TempDir dir;
  OrchestratorProcess orchestrator(dir.path(), fast_orchestrator_flags());
  const auto root = dir.path() / "ws";
  auto worker = start_worker(orchestrator.url(), root);
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));

  json spec = {{"type", "command"},
               {"steps",
                {{{"name", "make"},
                  {"run",
                   "mkdir -p out/sub && seq 1 50000 > out/sub/data.bin && echo hello > report.txt "
                   "&& echo not-wanted > other.log"}}}},
               {"artifacts", {"out/**/*.bin", "*.txt"}}};
  const std::string id = orchestrator.submit(spec, "artifacts");
  auto t = orchestrator.wait_task(
      id, [](const json& t) { return t["state"] != "queued" && t["state"] != "running"; });
  ASSERT_EQ(t["state"], "succeeded") << t.dump(2);

  // Uploaded before the completion: the first view that says succeeded lists them already.
  const json& listed = t["result"]["artifacts"];
  ASSERT_EQ(listed.size(), 2u) << t.dump(2);
  ASSERT_EQ(t["artifacts"].size(), 2u) << t.dump(2);
  std::string expected_data;
  for (int i = 1; i <= 50000; ++i) expected_data += std::to_string(i) + "\n";
  const std::map<std::string, std::string> content = {{"out/sub/data.bin", expected_data},
                                                      {"report.txt", "hello\n"}};
  for (std::size_t i = 0; i < 2; ++i) {
    const std::string path = listed[i]["path"];
    ASSERT_TRUE(content.count(path)) << path;
    EXPECT_EQ(t["artifacts"][i]["name"], path);
    EXPECT_EQ(t["artifacts"][i]["attempt"], 1);
    EXPECT_EQ(t["artifacts"][i]["sha256"], listed[i]["sha256"]);
    EXPECT_EQ(t["artifacts"][i]["size"], listed[i]["size"]);

    // The admin downloads it by its path, '/' percent-encoded in the one path segment.
    auto download =
        orchestrator.admin("GET", "/api/v1/tasks/" + id + "/artifacts/" + tamma::url_encode(path));
    ASSERT_EQ(download.status, 200) << download.body;
    EXPECT_EQ(sha256_of(dir.path(), download.body), listed[i]["sha256"]) << path;
    EXPECT_EQ(sha256_of(dir.path(), content.at(path)), listed[i]["sha256"]) << path;
    EXPECT_EQ(download.body, content.at(path)) << path;
  }

  worker->send_signal(SIGTERM);
  auto r = worker->wait(30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The staging copies are gone with the task.
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    EXPECT_EQ(entry.path().filename().string().rfind(".artifacts-", 0), std::string::npos)
        << entry.path();
  }
}

// Over 1 MiB: Beast's default body limit refused these with 400, and the task was reported
// succeeded with no artifacts.
TEST(ArtifactUpload, ArtifactsOverOneMebibyteArriveAndARefusedOneIsNotReportedAsNone) {
  testing::TempDir dir;
  auto flags = fast_orchestrator_flags();
  flags.insert(flags.end(), {"--max-artifact-body", "3M"});
  OrchestratorProcess orchestrator(dir.path(), flags);
  auto worker = start_worker(orchestrator.url(), dir.path() / "ws");
  ASSERT_TRUE(worker->wait_for_output("registered with", 20s));

  json spec = {{"type", "command"},
               {"steps",
                {{{"name", "make"},
                  {"run", "mkdir -p dist && head -c 2097152 /dev/urandom > dist/big.bin"}}}},
               {"artifacts", {"dist/*.bin"}}};
  const std::string id = orchestrator.submit(spec, "big");
  auto t = orchestrator.wait_task(
      id, [](const json& t) { return t["state"] != "queued" && t["state"] != "running"; });
  ASSERT_EQ(t["state"], "succeeded") << t.dump(2);
  ASSERT_EQ(t["artifacts"].size(), 1u) << t.dump(2);
  EXPECT_EQ(t["artifacts"][0]["size"], 2097152);
  auto download = orchestrator.admin("GET", "/api/v1/tasks/" + id + "/artifacts/dist%2Fbig.bin");
  ASSERT_EQ(download.status, 200);
  EXPECT_EQ(sha256_of(dir.path(), download.body), t["artifacts"][0]["sha256"]);

  // Over the orchestrator's limit: refused for good (413), so the task cannot have succeeded.
  spec["steps"][0]["run"] = "mkdir -p dist && head -c 4194304 /dev/urandom > dist/huge.bin";
  const std::string refused = orchestrator.submit(spec, "huge");
  auto r = orchestrator.wait_task(
      refused, [](const json& t) { return t["state"] != "queued" && t["state"] != "running"; });
  EXPECT_NE(r["state"], "succeeded") << r.dump(2);
  EXPECT_EQ(r["result"]["status"], "error") << r.dump(2);
  EXPECT_EQ(r["result"]["error"]["code"], "artifact_not_delivered") << r.dump(2);
  EXPECT_NE(r["result"]["error"]["message"].get<std::string>().find("dist/huge.bin"),
            std::string::npos);
  // The result still says which artifact the task made.
  EXPECT_EQ(r["result"]["artifacts"].size(), 1u);
  EXPECT_TRUE(r["artifacts"].empty());
  worker->send_signal(SIGTERM);
  EXPECT_EQ(worker->wait(30s).exit_code, 0);
}

TEST(ArtifactUpload, TheOrchestratorRefusesNamesThatClimbOutOrAreNotPlain) {
  testing::TempDir dir;
  OrchestratorProcess orchestrator(dir.path(), fast_orchestrator_flags());
  orchestrator::HttpClient reg(orchestrator.url(), kRegistrationToken);
  auto registered =
      reg.post_json("/api/v1/workers/register",
                    {{"capabilities", {{"taskTypes", json::array({"command"})}, {"slots", 1}}}});
  ASSERT_EQ(registered.status, 201) << registered.body;
  const std::string worker_id = registered.json()["workerId"];
  orchestrator::HttpClient worker(orchestrator.url(), registered.json()["token"]);
  const std::string id = orchestrator.submit(
      {{"type", "command"}, {"steps", {{{"name", "a"}, {"run", "true"}}}}}, "names");
  auto lease = worker.request("POST", "/api/v1/workers/" + worker_id + "/poll?waitMs=5000");
  ASSERT_EQ(lease.status, 200) << lease.body;
  const std::string fence = "&attempt=" + std::to_string(lease.json()["attempt"].get<int>()) +
                            "&leaseId=" + lease.json()["leaseId"].get<std::string>();
  const std::vector<std::string> bad_names = {
      "../x", "a/../../x", "/abs", "a//b", "a/./b", "a/", "sp ace", "a\\b", std::string(201, 'x')};
  for (const auto& bad : bad_names) {
    auto r = worker.request(
        "POST", "/api/v1/tasks/" + id + "/artifacts?name=" + tamma::url_encode(bad) + fence,
        "data");
    EXPECT_EQ(r.status, 400) << bad << " " << r.body;
    EXPECT_EQ(r.json()["error"]["field"], "name") << r.body;
  }
  auto good = worker.request(
      "POST", "/api/v1/tasks/" + id + "/artifacts?name=" + tamma::url_encode("a/b.c") + fence,
      "data");
  EXPECT_EQ(good.status, 201) << good.body;
  EXPECT_EQ(good.json()["name"], "a/b.c");
  orchestrator.stop();
}

}  // namespace
}  // namespace tamma::e2e
