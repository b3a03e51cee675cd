// A small real project's test suite run the way hosted CI runners run it: checked out from
// git by the worker, with git's global configuration, pip's configuration and cache in HOME,
// a 300 MB temporary file and a pseudo-terminal. The checkout must stay clean, HOME and /tmp
// must count in the task's disk limit (not its memory) and go with the task. Also the
// operator's passEnv. The real binary, real git and python3, no mocks.

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace tamma {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::ProcessResult;
using testing::TempDir;
using testing::write_file;
using json = nlohmann::json;

std::string sh(const std::string& script) {
  ProcessResult r = testing::run_process({"/bin/sh", "-ec", script});
  if (r.exit_code != 0) throw std::runtime_error("setup failed: " + script + "\n" + r.err);
  return r.out;
}

// The project: a module, its unittest suite, and what a real repository ignores.
constexpr const char* kModule = "def add(a, b):\n    return a + b\n";
constexpr const char* kTests = R"PY(import json, os, pty, pwd, tempfile, unittest

import calc

MiB = 1 << 20


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(calc.add(2, 3), 5)

    def test_big_temporary_file(self):
        # 300 MB in the default temporary directory: more than the task's memory limit.
        self.assertEqual(tempfile.gettempdir(), "/tmp")
        chunk = b"x" * MiB
        with tempfile.NamedTemporaryFile() as f:
            for _ in range(300):
                f.write(chunk)
            f.flush()
            self.assertEqual(os.fstat(f.fileno()).st_size, 300 * MiB)

    def test_home_is_the_users_and_outside_the_checkout(self):
        home = os.environ["HOME"]
        self.assertEqual(pwd.getpwuid(os.getuid()).pw_dir, home)
        self.assertTrue(os.access(home, os.W_OK))
        self.assertFalse(os.path.realpath(home).startswith(os.getcwd()))

    def test_pseudo_terminal(self):
        master, slave = pty.openpty()
        os.write(slave, b"hi\n")
        self.assertEqual(os.read(master, 10), b"hi\r\n")

    @classmethod
    def tearDownClass(cls):
        os.makedirs("out", exist_ok=True)
        with open("out/report.json", "w") as f:
            json.dump({"suite": "calc", "ok": True}, f)


if __name__ == "__main__":
    unittest.main()
)PY";

class RealProject : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* tool : {"/usr/bin/git", "/usr/bin/python3"}) {
      if (::access(tool, X_OK) != 0) GTEST_SKIP() << "LOUD SKIP: " << tool << " is missing";
    }
    if (testing::run_process({"/usr/bin/python3", "-m", "pip", "--version"}).exit_code != 0) {
      GTEST_SKIP() << "LOUD SKIP: python3's pip is missing (apt-get install python3-pip)";
    }
  }

  void TearDown() override {
    // The task's filesystem (checkout, HOME, /tmp, /var/tmp) goes with the task.
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(workspaces_.path())) {
      left.push_back(e.path().filename());
    }
    EXPECT_TRUE(left.empty()) << "workspace root not empty: " << (left.empty() ? "" : left[0]);
  }

  // A bare repository holding the project, for the task's repository field.
  std::string make_repository() {
    const fs::path work = files_.path() / "project";
    fs::create_directories(work / "tests");
    write_file(work / "calc.py", kModule);
    write_file(work / "tests" / "__init__.py", "");
    write_file(work / "tests" / "test_calc.py", kTests);
    write_file(work / ".gitignore", "__pycache__/\nout/\n");
    const std::string bare = (files_.path() / "project.git").string();
    sh("cd " + work.string() +
       " && git init -q -b main && git -c user.name=t -c user.email=t@example.com add -A"
       " && git -c user.name=t -c user.email=t@example.com commit -qm project"
       " && git clone -q --bare . " +
       bare);
    return bare;
  }

  ProcessResult run(const json& spec, std::vector<std::string> flags = {},
                    const std::vector<std::string>& env = {}) {
    const auto file = files_.path() / ("task-" + std::to_string(++count_) + ".json");
    write_file(file, spec.dump());
    std::vector<std::string> argv{TAMMA_WORKER_BINARY, "run", "--json", "--workspace-root",
                                  workspaces_.path().string()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.push_back(file.string());
    return testing::run_process(argv, env);
  }

  json run_json(const json& spec, int expected_exit, std::vector<std::string> flags = {},
                const std::vector<std::string>& env = {}) {
    ProcessResult r = run(spec, std::move(flags), env);
    EXPECT_EQ(r.exit_code, expected_exit) << r.err;
    try {
      return json::parse(r.out);
    } catch (const std::exception&) {
      ADD_FAILURE() << "not a result document: " << r.out << r.err;
      return json::object();
    }
  }

  TempDir files_;
  TempDir workspaces_;
  int count_ = 0;
};

TEST_F(RealProject, TestSuiteWithHomeCachesAndABigTempFileLeavesTheCheckoutClean) {
  const std::string bare = make_repository();
  const json spec = {
      {"type", "command"},
      {"repository", {{"url", "file://" + bare}}},
      // 128 MiB of memory for a 300 MB temporary file: /tmp is on the task's disk, not RAM.
      {"resources", {{"memory", "128M"}, {"disk", "1G"}}},
      {"steps",
       {{{"name", "configure"},
         {"run",
          "git config --global user.name ci && git config --global user.email ci@example.com"
          " && python3 -m pip config set global.timeout 30"
          " && python3 -m pip --version > /dev/null"
          " && cache=$(python3 -m pip cache dir) && mkdir -p \"$cache/http\""
          " && echo '{\"last_check\": \"now\"}' > \"$cache/selfcheck.json\""
          " && head -c 1048576 /dev/urandom > \"$cache/http/blob\""}},
        {{"name", "test"}, {"run", "python3 -m unittest discover -v -s tests -t ."}},
        {{"name", "status"},
         {"run",
          "git status --porcelain; git commit -q --allow-empty -m ci"
          " && git log -1 --format=%an; ls -A ~ | tr '\\n' ' '; echo;"
          " touch /var/tmp/v && echo var-tmp-ok; getent passwd $(id -u) | cut -d: -f1,6"}}}},
      {"artifacts", {"**/*.json"}}};
  const json result = run_json(spec, 0);
  ASSERT_EQ(result["status"], "succeeded") << result.dump(2);
  ASSERT_EQ(result["steps"].size(), 4u) << result.dump(2);
  const json& test = result["steps"][2];
  EXPECT_THAT(test["stderr"].get<std::string>(), HasSubstr("Ran 4 tests"));
  EXPECT_THAT(test["stderr"].get<std::string>(), HasSubstr("\nOK\n"));
  // No .gitconfig, .cache or .config in the checkout: `git status` has nothing to say, and the
  // global identity is read from HOME.
  EXPECT_EQ(result["steps"][3]["stdout"],
            "ci\n.cache .config .gitconfig \nvar-tmp-ok\ntamma:/home/tamma\n")
      << result["steps"][3]["stderr"];
  // `**/*.json` collects the project's report, not pip's cache files.
  ASSERT_EQ(result["artifacts"].size(), 1u) << result["artifacts"].dump(2);
  EXPECT_EQ(result["artifacts"][0]["path"], "out/report.json");
  // The caches in HOME are the task's disk use: pip's 1 MiB blob and the rest.
  EXPECT_GT(result["usage"]["diskBytes"].get<std::uint64_t>(), 1u << 20);
  EXPECT_LE(result["usage"]["peakMemoryBytes"].get<std::uint64_t>(), 128u << 20);
}

TEST_F(RealProject, HomeAndTmpCountInTheDiskLimit) {
  // What a task leaves in HOME and /var/tmp is reported as its disk use.
  const json writes = {
      {"type", "command"},
      {"steps",
       {{{"run",
          "head -c 20971520 /dev/urandom > ~/cache.bin && head -c 10485760 /dev/urandom > "
          "/var/tmp/v.bin && echo $HOME"}}}}};
  const json used = run_json(writes, 0, {"--disk", "64M"});
  EXPECT_EQ(used["steps"][0]["stdout"], "/home/tamma\n");
  EXPECT_GE(used["usage"]["diskBytes"].get<std::uint64_t>(), 30u << 20);

  // A 300 MB temporary file beyond the disk limit fails as the disk limit, not as a random
  // ENOSPC, and not as memory: 128 MiB of memory would not have held it either way. (The
  // limit is read once the step has ended: a file the program deletes on its way out, as
  // tempfile.TemporaryFile does, leaves a plain failure with ENOSPC in its output.)
  const json big = {{"type", "command"},
                    {"steps",
                     {{{"run",
                        "python3 -c 'with open(\"/tmp/big\", \"wb\") as f:\n"
                        "    [f.write(bytes(1 << 20)) for _ in range(300)]'"}}}}};
  const json full = run_json(big, 4, {"--disk", "100M", "--memory", "128M"});
  EXPECT_EQ(full["status"], "limit_exceeded");
  EXPECT_EQ(full["limit"], "disk");
  EXPECT_THAT(full["error"]["message"].get<std::string>(), HasSubstr("disk limit"));
  EXPECT_THAT(full["steps"][0]["stderr"].get<std::string>(), HasSubstr("No space left"));
}

// Without isolation there is no mount namespace: HOME and TMPDIR are then the task's own
// directories at their host paths, still outside the checkout, and removed with the task.
TEST_F(RealProject, WithoutIsolationHomeAndTmpdirAreStillTheTasksOwn) {
  const json spec = {{"type", "command"},
                     {"steps",
                      {{{"run",
                         "echo $HOME; echo $TMPDIR; pwd; git config --global user.name x && "
                         "echo t > $TMPDIR/t && python3 -c 'import tempfile; "
                         "print(tempfile.gettempdir())'; ls -A"}}}}};
  const json result = run_json(spec, 0, {"--no-isolate"});
  const std::string out = result["steps"][0]["stdout"];
  std::vector<std::string> lines;
  for (std::size_t start = 0, end; (end = out.find('\n', start)) != std::string::npos;
       start = end + 1) {
    lines.push_back(out.substr(start, end - start));
  }
  ASSERT_EQ(lines.size(), 4u) << out << result["steps"][0]["stderr"];
  const fs::path home = lines[0], tmp = lines[1], work = lines[2];
  EXPECT_EQ(home.parent_path(), work.parent_path()) << out;
  EXPECT_EQ(home.filename(), "home");
  EXPECT_EQ(tmp.filename(), "tmp");
  EXPECT_EQ(work.filename(), "work");
  EXPECT_EQ(home.parent_path().parent_path(), workspaces_.path());
  EXPECT_EQ(lines[3], tmp.string());  // the checkout (`ls -A`) is empty: no .gitconfig
  EXPECT_FALSE(fs::exists(home.parent_path()));
}

// The operator's passEnv: the listed variables of the worker's environment reach every task,
// a variable the spec sets wins, and nothing else of the worker's environment leaks.
TEST_F(RealProject, PassEnvHandsTheOperatorsVariablesToTasks) {
  const fs::path config = files_.path() / "worker.json";
  write_file(
      config,
      R"({"passEnv": ["HTTPS_PROXY", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "UNSET_VAR"]})");
  const json spec = {{"type", "command"},
                     {"env", {{"SSL_CERT_FILE", "/spec/wins.pem"}}},
                     {"steps",
                      {{{"run",
                         "echo $HTTPS_PROXY; echo $NODE_EXTRA_CA_CERTS; echo $SSL_CERT_FILE; "
                         "echo ${UNSET_VAR-unset}; echo ${NOT_LISTED-not-listed}"}}}}};
  const json result =
      run_json(spec, 0, {"--config", config.string()},
               {"HTTPS_PROXY=http://proxy.example:3128", "NODE_EXTRA_CA_CERTS=/etc/ssl/corp.pem",
                "SSL_CERT_FILE=/etc/ssl/host.pem", "NOT_LISTED=secret-of-the-worker"});
  EXPECT_EQ(result["steps"][0]["stdout"],
            "http://proxy.example:3128\n/etc/ssl/corp.pem\n/spec/wins.pem\nunset\nnot-listed\n")
      << result["steps"][0]["stderr"];

  // Off by default: the same worker environment without the configuration passes nothing.
  const json plain = run_json(spec, 0, {}, {"HTTPS_PROXY=http://proxy.example:3128"});
  EXPECT_EQ(plain["steps"][0]["stdout"], "\n\n/spec/wins.pem\nunset\nnot-listed\n");

  // Names only, and never the worker's own settings.
  write_file(config, R"({"passEnv": ["HTTPS_PROXY=http://other:1", "TAMMA_TOKEN"]})");
  ProcessResult refused = run(spec, {"--config", config.string()});
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("passEnv from config file " + config.string()));
  EXPECT_THAT(refused.err, HasSubstr("is not a variable name"));
}

}  // namespace
}  // namespace tamma
