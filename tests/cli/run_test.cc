// End-to-end tests of `tamma-worker run`: the real binary, real sandboxed processes.

#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "support/test_support.h"

namespace tamma {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::ProcessResult;
using testing::read_file;
using testing::TempDir;
using testing::write_file;

class RunCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    workspaces_ = std::make_unique<TempDir>();
    std::random_device rd;
    marker_ = "tamma-marker-" + std::to_string(rd());
  }

  void TearDown() override {
    // Nothing of a task may survive it: no process, no workspace.
    EXPECT_TRUE(testing::processes_with(marker_).empty()) << "leaked processes of " << marker_;
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(workspaces_->path())) {
      left.push_back(e.path().filename());
    }
    EXPECT_TRUE(left.empty()) << "workspace root not empty: " << (left.empty() ? "" : left[0]);
  }

  std::vector<std::string> worker(std::vector<std::string> args) {
    std::vector<std::string> argv{TAMMA_WORKER_BINARY, "run", "--workspace-root",
                                  workspaces_->path().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  ProcessResult run(std::vector<std::string> args, std::vector<std::string> env = {}) {
    return testing::run_process(worker(std::move(args)), env);
  }

  nlohmann::json run_json(std::vector<std::string> args, int expected_exit,
                          std::vector<std::string> env = {}) {
    args.insert(args.begin(), "--json");
    ProcessResult r = run(std::move(args), env);
    EXPECT_EQ(r.exit_code, expected_exit) << r.err;
    try {
      return nlohmann::json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "stdout is not a result document: " << e.what() << "\n" << r.out << r.err;
      return {};
    }
  }

  std::string task_file(const nlohmann::json& spec) {
    auto path = files_.path() / ("task-" + std::to_string(++count_) + ".json");
    write_file(path, spec.dump());
    return path.string();
  }

  std::unique_ptr<TempDir> workspaces_;
  TempDir files_;
  std::string marker_;
  int count_ = 0;
};

// A one-shot run pays for every shared library the binary needs at start. libcurl and the
// two dozen libraries it brings are loaded only when the worker first speaks HTTP (the daemon,
// artifact uploads): `run` and `--version` never load them (issue 13).
// Neither libcurl nor libcrypto (issue 13: together most of a start's cost) is mapped by a
// command that does not speak HTTP nor hash an artifact.
TEST_F(RunCommand, StartsWithoutLoadingTheHttpLibrary) {
  for (std::vector<std::string> argv :
       {std::vector<std::string>{TAMMA_WORKER_BINARY, "--version"},
        worker({"--quiet", "--no-isolate", "--allow-degraded", "--", "/bin/true"})}) {
    ProcessResult r = testing::run_process(argv, {"LD_DEBUG=libs"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    // The loader's trace names every library it maps, libseccomp among them.
    EXPECT_NE(r.err.find("libseccomp.so"), std::string::npos) << r.err.substr(0, 2000);
    EXPECT_EQ(r.err.find("libcurl"), std::string::npos) << argv[1] << " loaded libcurl";
    EXPECT_EQ(r.err.find("libcrypto"), std::string::npos) << argv[1] << " loaded libcrypto";
  }
}

TEST_F(RunCommand, SucceedsWithExitCode0AndReportsUsage) {
  auto result = run_json({"--", "/bin/sh", "-c", "echo hello-" + marker_}, 0);
  EXPECT_EQ(result["status"], "succeeded");
  EXPECT_EQ(result["exitCode"], 0);
  ASSERT_EQ(result["steps"].size(), 1u);
  EXPECT_EQ(result["steps"][0]["stdout"], "hello-" + marker_ + "\n");
  EXPECT_GT(result["usage"]["peakMemoryBytes"].get<std::uint64_t>(), 0u);
  EXPECT_TRUE(result["usage"]["exact"].get<bool>());
}

TEST_F(RunCommand, TaskFailureExitsWith1) {
  auto result = run_json({"--", "/bin/sh", "-c", "exit 7"}, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["exitCode"], 7);
}

TEST_F(RunCommand, StepsRunInOrderAndStopAtTheFirstFailure) {
  auto spec = nlohmann::json{{"type", "command"},
                             {"steps",
                              {{{"name", "one"}, {"run", "echo one > order.txt"}},
                               {{"name", "two"}, {"run", "cat order.txt; exit 3"}},
                               {{"name", "three"}, {"run", "echo never"}}}}};
  auto result = run_json({task_file(spec)}, 1);
  ASSERT_EQ(result["steps"].size(), 2u);
  EXPECT_EQ(result["steps"][0]["status"], "succeeded");
  EXPECT_EQ(result["steps"][1]["stdout"], "one\n");
  EXPECT_EQ(result["steps"][1]["exitCode"], 3);
}

// A step's script runs as GitHub Actions runs one (docs/task-spec.md): bash with -e and
// -o pipefail, so a pipeline fails with its first failing command (yes, killed by SIGPIPE:
// 141), a failed command stops the script, and bash syntax works.
TEST_F(RunCommand, AStepRunsUnderBashWithErrexitAndPipefail) {
  ASSERT_EQ(::access("/bin/bash", X_OK), 0) << "bash is part of every Debian system";
  auto spec = nlohmann::json{
      {"type", "command"},
      {"steps",
       {{{"name", "arrays"}, {"run", "a=(x y); echo ${#a[@]} $BASH_VERSION | cut -c1-2"}},
        {{"name", "pipe"}, {"run", "yes | head -n 3; echo not reached"}}}}};
  auto result = run_json({task_file(spec)}, 1);
  ASSERT_EQ(result["steps"].size(), 2u) << result.dump(2);
  EXPECT_EQ(result["steps"][0]["stdout"], "2 \n");
  EXPECT_EQ(result["steps"][1]["stdout"], "y\ny\ny\n");
  EXPECT_EQ(result["steps"][1]["exitCode"], 141);
}

// A script that is one plain command runs without bash (ADR 0034), and nothing a user can
// see changes: the command gets the environment bash would have exported, ...
TEST_F(RunCommand, ALoneCommandRunsWithoutBashAndSeesWhatBashWouldHaveExported) {
  const std::vector<std::string> bash{"/bin/bash", "--noprofile", "--norc",
                                      "-eo",       "pipefail",    "-c"};
  auto through_bash = [&](const std::string& script) {
    auto argv = bash;
    argv.push_back(script);
    return argv;
  };
  auto spec = nlohmann::json{{"type", "command"},
                             {"workdir", "sub/dir"},
                             {"steps",
                              {{{"name", "lone"}, {"run", "env"}},
                               {{"name", "bash"}, {"argv", through_bash("env")}},
                               {{"name", "lone-status"}, {"run", "false"}}}}};
  ProcessResult r = run({"--json", "--log-level", "debug", task_file(spec)});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto result = nlohmann::json::parse(r.out);
  ASSERT_EQ(result["steps"].size(), 3u) << result.dump(2);
  auto lines = [](std::string text) {
    std::vector<std::string> out;
    for (std::size_t at; (at = text.find('\n')) != std::string::npos; text.erase(0, at + 1)) {
      out.push_back(text.substr(0, at));
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto lone = lines(result["steps"][0]["stdout"]);
  EXPECT_EQ(lone, lines(result["steps"][1]["stdout"]));
  EXPECT_NE(std::find(lone.begin(), lone.end(), "PWD=/workspace/sub/dir"), lone.end());
  EXPECT_NE(std::find(lone.begin(), lone.end(), "SHLVL=0"), lone.end());
  EXPECT_NE(std::find(lone.begin(), lone.end(), "_=/usr/bin/env"), lone.end());
  EXPECT_EQ(result["steps"][2]["exitCode"], 1);
  // The debug log says which steps went without bash: the two lone ones.
  EXPECT_NE(r.err.find("step 'lone' ran in"), std::string::npos) << r.err;
  std::size_t said = 0;
  for (std::size_t at = 0; (at = r.err.find("a lone command", at)) != std::string::npos; ++at) {
    ++said;
  }
  EXPECT_EQ(said, 2u) << r.err;
}

// ... and what cannot be exec'ed is bash's to answer, as before: not found (127 and bash's
// message), not executable (126), a file without #! (bash runs it as a script).
TEST_F(RunCommand, ALoneCommandThatCannotBeExecedIsAnsweredByBash) {
  auto spec =
      nlohmann::json{{"type", "command"},
                     {"steps",
                      {{{"name", "write"},
                        {"run",
                         "printf 'echo from the script\\n' > noshebang && chmod +x noshebang && "
                         "echo data > plain.txt"}},
                       {{"name", "script"}, {"run", "./noshebang"}},
                       {{"name", "missing"}, {"run", "no-such-command-here --flag"}}}}};
  auto result = run_json({task_file(spec)}, 1);
  ASSERT_EQ(result["steps"].size(), 3u) << result.dump(2);
  EXPECT_EQ(result["steps"][1]["stdout"], "from the script\n");
  EXPECT_EQ(result["steps"][2]["exitCode"], 127);
  EXPECT_NE(result["steps"][2]["stderr"].get<std::string>().find(
                "no-such-command-here: command not found"),
            std::string::npos)
      << result["steps"][2].dump();

  auto denied = nlohmann::json{{"type", "command"},
                               {"steps",
                                {{{"name", "write"}, {"run", "echo data > plain.txt"}},
                                 {{"name", "denied"}, {"run", "./plain.txt"}}}}};
  result = run_json({task_file(denied)}, 1);
  ASSERT_EQ(result["steps"].size(), 2u) << result.dump(2);
  EXPECT_EQ(result["steps"][1]["exitCode"], 126);
  EXPECT_NE(result["steps"][1]["stderr"].get<std::string>().find("Permission denied"),
            std::string::npos)
      << result["steps"][1].dump();
}

// A start-up file named by BASH_ENV is bash's: the command after it runs as bash would run it.
TEST_F(RunCommand, BashEnvInTheTaskEnvironmentKeepsTheScriptInBash) {
  auto spec =
      nlohmann::json{{"type", "command"},
                     {"env", {{"BASH_ENV", "/workspace/startup.sh"}}},
                     {"steps",
                      {{{"name", "write"},
                        {"argv", {"/bin/sh", "-c", "echo 'export FROM_STARTUP=yes' > startup.sh"}}},
                       {{"name", "read"}, {"run", "printenv FROM_STARTUP"}}}}};
  auto result = run_json({task_file(spec)}, 0);
  ASSERT_EQ(result["steps"].size(), 2u) << result.dump(2);
  EXPECT_EQ(result["steps"][1]["stdout"], "yes\n");
}

TEST_F(RunCommand, SignalledTaskIsReportedWithItsSignal) {
  auto result = run_json({"--", "/bin/sh", "-c", "kill -SEGV $$"}, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["signal"], SIGSEGV);
  EXPECT_TRUE(result["exitCode"].is_null());
}

TEST_F(RunCommand, InvalidSpecExitsWith2ListingEveryProblemWithItsPath) {
  auto spec = nlohmann::json{{"type", "command"},
                             {"timeout", "10x"},
                             {"steps", {{{"name", "a"}}, {{"run", 5}}}},
                             {"resources", {{"memory", "lots"}}}};
  ProcessResult r = run({task_file(spec)});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("$.timeout"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("$.steps[0]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("$.steps[1]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("$.resources.memory"), std::string::npos) << r.err;
}

TEST_F(RunCommand, BadUsageExitsWith2) {
  EXPECT_EQ(run({}).exit_code, 2);
  EXPECT_EQ(run({"--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(run({"/nonexistent/task.json"}).exit_code, 2);
  ProcessResult r = run({"--memory", "plenty", "--", "/bin/true"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("memory"), std::string::npos) << r.err;
  ProcessResult unknown = run({"--type", "no_such_type", "--", "/bin/true"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("no_such_type"), std::string::npos) << unknown.err;
}

TEST_F(RunCommand, ResultFileIsWrittenEvenForInvalidUsage) {
  auto path = files_.path() / "result.json";
  ProcessResult r = run({"--result", path.string(), "--timeout", "forever", "--", "/bin/true"});
  EXPECT_EQ(r.exit_code, 2);
  auto doc = nlohmann::json::parse(read_file(path));
  EXPECT_EQ(doc["status"], "error");
  EXPECT_FALSE(doc["error"]["message"].get<std::string>().empty());
}

TEST_F(RunCommand, TimeoutExitsWith3) {
  auto result = run_json(
      {"--timeout", "1s", "--grace-period", "1s", "--", "/bin/sh", "-c", "sleep 30 # " + marker_},
      3);
  EXPECT_EQ(result["status"], "timeout");
  EXPECT_EQ(result["error"]["code"], "timeout");
  EXPECT_LT(result["durationMs"].get<int>(), 25000);
}

TEST_F(RunCommand, StepTimeoutEndsTheTaskAsTimeout) {
  auto spec = nlohmann::json{
      {"type", "command"},
      {"steps", {{{"name", "slow"}, {"run", "sleep 30 # " + marker_}, {"timeout", "1s"}}}}};
  auto result = run_json({"--grace-period", "1s", task_file(spec)}, 3);
  EXPECT_EQ(result["steps"][0]["status"], "timeout");
}

TEST_F(RunCommand, MemoryLimitExitsWith4) {
  // tail buffers its whole input: an endless line makes it grow until the limit stops it.
  auto result = run_json(
      {"--memory", "32M", "--timeout", "60s", "--", "/bin/sh", "-c", "tail /dev/zero # " + marker_},
      4);
  EXPECT_EQ(result["status"], "limit_exceeded");
  EXPECT_EQ(result["limit"], "memory");
  EXPECT_GE(result["usage"]["oomKills"].get<int>(), 1);
}

TEST_F(RunCommand, ForkRefusedByThePidsLimitExitsWith4) {
  auto result = run_json({"--pids", "8", "--timeout", "60s", "--", "/bin/sh", "-c",
                          "for i in $(seq 20); do sleep 30 & done; wait # " + marker_},
                         4);
  EXPECT_EQ(result["status"], "limit_exceeded");
  EXPECT_EQ(result["limit"], "pids");
  EXPECT_GE(result["usage"]["pidsLimitHits"].get<int>(), 1);
}

// A fork bomb that shrugs off refused forks does not die of the pids limit: it runs into the
// timeout. The status is the timeout (exit 3), and the result names the limit it stalled on.
TEST_F(RunCommand, TaskStalledOnThePidsLimitTimesOutAndNamesTheLimit) {
  auto result =
      run_json({"--pids", "8", "--timeout", "2s", "--grace-period", "1s", "--", "/bin/sh", "-c",
                "for i in $(seq 20); do (sleep 30 &) 2>/dev/null || true; done; "
                "sleep 30 # " +
                    marker_},
               3);
  EXPECT_EQ(result["status"], "timeout");
  EXPECT_EQ(result["error"]["code"], "timeout");
  EXPECT_EQ(result["limit"], "pids");
  EXPECT_GE(result["usage"]["pidsLimitHits"].get<int>(), 1);
}

TEST_F(RunCommand, DiskFillerHitsTheDiskLimitWithExitCode4) {
  auto result = run_json(
      {"--disk", "16M", "--", "/bin/sh", "-c", "head -c 64M /dev/zero > big # " + marker_}, 4);
  EXPECT_EQ(result["status"], "limit_exceeded");
  EXPECT_EQ(result["limit"], "disk");
  EXPECT_GT(result["usage"]["diskBytes"].get<std::uint64_t>(), 8u << 20);
}

TEST_F(RunCommand, WorkerKilledMidTaskLeavesNothingAfterTheNextStart) {
  ChildProcess child(worker({"--", "/bin/sh", "-c", "echo started; sleep 600 # " + marker_}));
  ASSERT_TRUE(child.wait_for_output("started", 30s));
  child.send_signal(SIGKILL);
  child.wait(30s);
  // The task's PID 1 dies with the worker (parent-death signal), taking the task with it.
  for (int i = 0; i < 100 && !testing::processes_with(marker_).empty(); ++i) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(testing::processes_with(marker_).empty()) << "task outlived its killed worker";
  // The next worker start sweeps the workspace the dead one left.
  EXPECT_EQ(run({"--quiet", "--", "/bin/true"}).exit_code, 0);
}

TEST_F(RunCommand, SigtermMidStepCancelsWithExitCode5) {
  ChildProcess child(
      worker({"--json", "--", "/bin/sh", "-c", "echo started; sleep 60; echo never # " + marker_}));
  ASSERT_TRUE(child.wait_for_output("started", 30s));
  child.send_signal(SIGTERM);
  ProcessResult r = child.wait(60s);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 5) << r.err;
  auto result = nlohmann::json::parse(r.out);
  EXPECT_EQ(result["status"], "cancelled");
  EXPECT_EQ(result["steps"][0]["stdout"], "started\n");
}

// A package manager in a task without network retries until it gives up or the timeout ends
// it, and says nothing a user would connect with the missing network: the result does.
TEST_F(RunCommand, ATaskThatFailedReachingOutWithoutNetworkIsToldItHasNone) {
  // Like npm: a name lookup (glibc, through the host's resolv.conf) and a connection to a
  // registry address, three times, then an error of its own.
  const std::string fetch =
      "for i in 1 2 3; do getent hosts registry.npmjs.org && exit 0; "
      "(echo > /dev/tcp/104.16.0.35/443) 2>/dev/null && exit 0; sleep 0.1; done; "
      "echo 'npm ERR! network request failed' >&2; exit 1 # " +
      marker_;
  auto failed = run({"--json", "--", "/bin/bash", "-c", fetch});
  ASSERT_EQ(failed.exit_code, 1) << failed.err;
  auto result = nlohmann::json::parse(failed.out);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_GE(result["usage"]["networkUnreachable"].get<std::uint64_t>(), 6u)
      << "3 lookups and 3 connections";
  ASSERT_EQ(result["hints"].size(), 1u) << result.dump(2);
  const auto hint = result["hints"][0].get<std::string>();
  EXPECT_NE(hint.find("the task has no network (\"network\": \"none\")"), std::string::npos)
      << hint;
  EXPECT_NE(hint.find("needs \"network\": \"host\""), std::string::npos) << hint;
  EXPECT_NE(failed.err.find("tamma-worker: hint: the task has no network"), std::string::npos)
      << failed.err;

  // Retrying until the timeout ends it: the same hint.
  auto timed_out = run_json({"--timeout", "2s", "--grace-period", "1s", "--", "/bin/bash", "-c",
                             "while true; do getent hosts registry.npmjs.org || sleep 0.2; "
                             "done # " +
                                 marker_},
                            3);
  EXPECT_EQ(timed_out["status"], "timeout");
  ASSERT_EQ(timed_out["hints"].size(), 1u) << timed_out.dump(2);

  // Not when the task succeeded anyway (an optional download), nor when a failing task never
  // tried to get out: the count is still there, the hint is not.
  auto succeeded = run_json({"--", "/bin/bash", "-c", "getent hosts example.org || true"}, 0);
  EXPECT_GE(succeeded["usage"]["networkUnreachable"].get<std::uint64_t>(), 1u);
  EXPECT_TRUE(succeeded["hints"].empty());
  auto plain = run_json({"--", "/bin/sh", "-c", "exit 3"}, 1);
  EXPECT_EQ(plain["usage"]["networkUnreachable"], 0);
  EXPECT_TRUE(plain["hints"].empty());
}

TEST_F(RunCommand, TaskIgnoringSigtermIsKilledAfterTheGracePeriod) {
  ChildProcess child(
      worker({"--json", "--grace-period", "1s", "--", "/bin/sh", "-c",
              "trap '' TERM; echo ready; while :; do sleep 0.1; done # " + marker_}));
  ASSERT_TRUE(child.wait_for_output("ready", 30s));
  child.send_signal(SIGINT);
  ProcessResult r = child.wait(60s);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["status"], "cancelled");
}

TEST_F(RunCommand, SecondSignalKillsWithoutWaitingForTheGracePeriod) {
  ChildProcess child(
      worker({"--json", "--grace-period", "10m", "--", "/bin/sh", "-c",
              "trap '' TERM; echo ready; while :; do sleep 0.1; done # " + marker_}));
  ASSERT_TRUE(child.wait_for_output("ready", 30s));
  child.send_signal(SIGTERM);
  ASSERT_TRUE(child.wait_for_output("again to kill now", 30s));
  child.send_signal(SIGTERM);
  ProcessResult r = child.wait(60s);
  EXPECT_FALSE(r.timed_out) << "the second signal did not end the task";
  EXPECT_EQ(r.exit_code, 5);
}

TEST_F(RunCommand, BackgroundChildHoldingThePipeDoesNotHangTheWorker) {
  // The grandchild keeps stdout open for 10 minutes after the main process exits.
  ProcessResult r = testing::run_process(
      worker({"--json", "--", "/bin/sh", "-c", "(sleep 600 # " + marker_ + "\n) & echo done"}), {},
      60s);
  EXPECT_FALSE(r.timed_out) << "the worker waited for the held-open pipe";
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["steps"][0]["stdout"], "done\n");
}

TEST_F(RunCommand, OutputOverTheCapIsDroppedCountedAndSaid) {
  auto result = run_json({"--output-limit", "1K", "--quiet", "--", "/bin/sh", "-c",
                          "head -c 100000 /dev/zero | tr '\\0' x"},
                         0);
  const auto& step = result["steps"][0];
  EXPECT_EQ(step["stdoutBytes"], 100000);
  EXPECT_EQ(step["stdoutDropped"], 100000 - 1024);
  EXPECT_NE(step["stdout"].get<std::string>().find("bytes of output dropped"), std::string::npos);
}

TEST_F(RunCommand, OutputFloodOverTheHardLimitIsKilledWithExitCode4) {
  auto result = run_json({"--quiet", "--", "/bin/sh", "-c", "cat /dev/zero # " + marker_}, 4,
                         {"TAMMA_OUTPUT_HARD_LIMIT=8M"});
  EXPECT_EQ(result["status"], "limit_exceeded");
  EXPECT_EQ(result["limit"], "output");
  EXPECT_GE(result["steps"][0]["stdoutBytes"].get<std::uint64_t>(), 8u << 20);
}

TEST_F(RunCommand, SecretSplitAcrossTwoWritesIsMaskedEverywhere) {
  const std::string secret = "Sup3rS3cretT0ken";
  auto result_path = files_.path() / "result.json";
  ProcessResult r =
      run({"--result", result_path.string(), "--secret-env", "MY_TOKEN", "--", "/bin/sh", "-c",
           "printf 'token=Sup3rS3c'; sleep 0.3; printf 'retT0ken\\n'; "
           "echo \"$MY_TOKEN\" >&2"},
          {"MY_TOKEN=" + secret});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("S3cretT0"), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find(secret), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("token=[MASKED]"), std::string::npos) << r.out;
  std::string document = read_file(result_path);
  EXPECT_EQ(document.find(secret), std::string::npos);
  EXPECT_EQ(document.find("retT0ken"), std::string::npos);
}

TEST_F(RunCommand, ErrorMessagesQuotingASecretAreMasked) {
  const std::string secret = "n0t-in-any-message-42";
  // A command that does not exist is named in the error, and its path holds the secret.
  auto spec = nlohmann::json{{"type", "command"},
                             {"secrets", {{"TOKEN", secret}}},
                             {"steps", {{{"argv", {"/no/such/" + secret}}}}}};
  auto path = files_.path() / "result.json";
  ProcessResult r = run({"--result", path.string(), task_file(spec)});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.out.find(secret), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find(secret), std::string::npos) << r.err;
  EXPECT_EQ(read_file(path).find(secret), std::string::npos);
}

TEST_F(RunCommand, TaskSeesOnlyTheEnvironmentItsSpecGrants) {
  auto spec = nlohmann::json{
      {"type", "command"}, {"env", {{"GIVEN", "yes"}}}, {"steps", {{{"run", "env"}}}}};
  auto result = run_json({task_file(spec)}, 0, {"WORKER_ONLY_SECRET=do-not-leak"});
  const std::string out = result["steps"][0]["stdout"];
  EXPECT_NE(out.find("GIVEN=yes"), std::string::npos) << out;
  EXPECT_EQ(out.find("WORKER_ONLY_SECRET"), std::string::npos) << out;
}

TEST_F(RunCommand, InfrastructureFailureExitsWith6) {
  ProcessResult r = testing::run_process({TAMMA_WORKER_BINARY, "run", "--workspace-root",
                                          "/proc/no-such-place/ws", "--", "/bin/true"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
}

// The sandbox's /tmp is private, so handlers live elsewhere, as an installed one would.
TEST_F(RunCommand, ExternalHandlerAnswersWithAResultDocument) {
  TempDir handlers("/var/tmp");
  auto handler = handlers.path() / "handler.sh";
  write_file(handler,
             "#!/bin/sh\n"
             "read -r task\n"
             "echo \"handler log: got $task\" | head -c 40 >&2\n"
             "case \"$task\" in *'\"type\":\"lint\"'*) ;; *) exit 9;; esac\n"
             "echo '{\"status\":\"failed\",\"exitCode\":1,\"details\":{\"lintErrors\":3}}'\n");
  std::filesystem::permissions(
      handler, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                   std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                   std::filesystem::perms::others_exec);
  std::filesystem::permissions(handlers.path(), std::filesystem::perms::others_exec,
                               std::filesystem::perm_options::add);
  auto spec = nlohmann::json{{"type", "lint"}, {"steps", {{{"run", "unused"}}}}};
  auto result = run_json({"--handler", "lint=" + handler.string(), task_file(spec)}, 1);
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["details"]["lintErrors"], 3);
}

TEST_F(RunCommand, ExternalHandlerWithGarbageOutputIsAnInfrastructureError) {
  TempDir handlers("/var/tmp");
  auto handler = handlers.path() / "bad.sh";
  write_file(handler, "#!/bin/sh\ncat >/dev/null\necho 'this is not json'\n");
  std::filesystem::permissions(handler, std::filesystem::perms::all);
  std::filesystem::permissions(handlers.path(), std::filesystem::perms::others_exec,
                               std::filesystem::perm_options::add);
  auto spec = nlohmann::json{{"type", "bad"}};
  auto result = run_json({"--handler", "bad=" + handler.string(), task_file(spec)}, 6);
  EXPECT_EQ(result["status"], "error");
  EXPECT_EQ(result["error"]["code"], "invalid_handler_result");
}

TEST_F(RunCommand, ArtifactsAreCollectedWithChecksumsAndCopied) {
  TempDir out;
  auto spec = nlohmann::json{{"type", "build"},
                             {"steps", {{{"run", "mkdir -p dist && printf abc > dist/app.bin"}}}},
                             {"artifacts", {"dist/*.bin"}}};
  auto result = run_json({"--artifacts-dir", out.path().string(), task_file(spec)}, 0);
  ASSERT_EQ(result["artifacts"].size(), 1u);
  EXPECT_EQ(result["artifacts"][0]["path"], "dist/app.bin");
  EXPECT_EQ(result["artifacts"][0]["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(read_file(out.path() / "dist/app.bin"), "abc");
}

// A failure of the host is not the task's: it is retryable, so an orchestrator runs the task
// again on another worker (docs/daemon.md, "Faults").
TEST_F(RunCommand, ATaskFailingOnAFullHostDiskIsAHostFailureNotTheTasksOwn) {
  TempDir mount_point;
  testing::SmallTmpfs disk(mount_point.path(), "8m");
  ASSERT_TRUE(disk.mounted()) << "mounting a tmpfs needs root: " << std::strerror(errno);
  disk.fill();
  ProcessResult r = testing::run_process({TAMMA_WORKER_BINARY, "run", "--json", "--workspace-root",
                                          (mount_point.path() / "ws").string(), "--", "/bin/sh",
                                          "-c", "echo built > out.txt # " + marker_});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  const auto result = nlohmann::json::parse(r.out);
  EXPECT_EQ(result["status"], "error") << r.out;
  EXPECT_EQ(result["error"]["code"], "host_failure") << r.out;
  EXPECT_EQ(result["error"]["retryable"], true) << r.out;
  const std::string message = result["error"]["message"];
  EXPECT_NE(message.find("free"), std::string::npos) << "names what ran out: " << message;
  EXPECT_NE(message.find("failed"), std::string::npos) << "and what the task did: " << message;
}

// A memory cgroup around the worker, as a container or a systemd slice puts one: v1 or v2.
class MemoryCage {
 public:
  explicit MemoryCage(std::uint64_t limit) {
    const std::string name = "tamma-test-cage-" + std::to_string(::getpid());
    if (std::filesystem::exists("/sys/fs/cgroup/memory/cgroup.procs")) {
      dir_ = "/sys/fs/cgroup/memory/" + name;
      limit_file_ = "memory.limit_in_bytes";
    } else {
      dir_ = "/sys/fs/cgroup/" + name;
      limit_file_ = "memory.max";
    }
    std::error_code ec;
    if (!std::filesystem::create_directory(dir_, ec)) return;
    std::ofstream(dir_ / limit_file_) << limit;
    std::ofstream(dir_ / "memory.swappiness") << 0;  // v1 only; without swap the limit bites
    ok_ = std::filesystem::exists(dir_ / limit_file_);
  }
  ~MemoryCage() {
    // The worker removed its task groups; give the kernel a moment to let go of the last one.
    for (int i = 0; i < 100 && ::rmdir(dir_.c_str()) != 0 && errno == EBUSY; ++i) {
      std::this_thread::sleep_for(50ms);
    }
  }
  MemoryCage(const MemoryCage&) = delete;
  MemoryCage& operator=(const MemoryCage&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }
  // argv run with its first process moved into the cage.
  [[nodiscard]] std::vector<std::string> wrap(const std::vector<std::string>& argv) const {
    std::vector<std::string> out = {
        "/bin/sh", "-c", "echo $$ > " + (dir_ / "cgroup.procs").string() + " && exec \"$@\"", "sh"};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }

 private:
  std::filesystem::path dir_;
  std::string limit_file_;
  bool ok_ = false;
};

TEST_F(RunCommand, AnOomKillTheTasksOwnLimitDidNotCauseIsTheHostsFailure) {
  // The worker's cgroup allows 384 MiB; the task's own limit is 2 GiB. The task's growth is
  // stopped by the limit above it: the kill is the host's doing, not the task's. (Large enough
  // that the task, not a sanitizer build's worker, is the biggest process in the cgroup and so
  // the one the kernel picks.)
  MemoryCage cage(384ULL << 20);
  ASSERT_TRUE(cage.ok()) << "a writable memory cgroup is needed";
  ProcessResult r =
      testing::run_process(cage.wrap(worker({"--json", "--memory", "2G", "--timeout", "60s", "--",
                                             "/bin/sh", "-c", "tail /dev/zero # " + marker_})));
  EXPECT_EQ(r.exit_code, 6) << r.err;
  const auto result = nlohmann::json::parse(r.out);
  EXPECT_EQ(result["status"], "error") << r.out;
  EXPECT_EQ(result["error"]["code"], "host_failure") << r.out;
  EXPECT_EQ(result["error"]["retryable"], true) << r.out;
  EXPECT_GE(result["usage"]["oomKills"].get<int>(), 1) << r.out;
}

}  // namespace
}  // namespace tamma
