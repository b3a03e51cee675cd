// The daemon's HTTP client and log shipper: what goes on the wire, how each answer is read,
// and that output reaches the orchestrator exactly once whatever the network does.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <future>
#include <thread>

#include "support/test_support.h"
#include "worker/daemon.h"
#include "worker/daemon_http_responder.h"
#include "worker/log_shipper.h"
#include "worker/orchestrator_client.h"

namespace tamma::worker {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::HttpReply;
using testing::HttpRequest;
using testing::HttpResponder;

const WorkerCredentials kWorker{"wrk_1", "worker-secret-token-0123456789"};

HttpReply error_reply(int status, const std::string& code,
                      std::optional<std::uint64_t> length = {}) {
  json error = {{"code", code}, {"message", "refused: " + code}};
  if (length) error["length"] = *length;
  return {status, json{{"error", error}}.dump(), {{"Content-Type", "application/json"}}};
}

std::map<std::string, std::string> query_of(const std::string& target) {
  std::map<std::string, std::string> out;
  auto q = target.find('?');
  if (q == std::string::npos) return out;
  std::string rest = target.substr(q + 1);
  std::size_t pos = 0;
  while (pos <= rest.size()) {
    auto amp = rest.find('&', pos);
    if (amp == std::string::npos) amp = rest.size();
    auto item = rest.substr(pos, amp - pos);
    auto eq = item.find('=');
    out[item.substr(0, eq)] = eq == std::string::npos ? "" : item.substr(eq + 1);
    pos = amp + 1;
  }
  return out;
}

// The orchestrator's append rules (docs/protocol.md, "Progress and logs"), over a string.
class FakeLog {
 public:
  LogAppendAnswer append(std::uint64_t offset, std::string_view data) {
    std::lock_guard lock(mutex_);
    LogAppendAnswer answer;
    if (offset > stored.size()) {
      answer.kind = LogAppendAnswer::Kind::kRewind;
      answer.length = stored.size();
      return answer;
    }
    const std::size_t overlap = std::min<std::size_t>(stored.size() - offset, data.size());
    if (stored.compare(offset, overlap, data.substr(0, overlap)) != 0) {
      answer.kind = LogAppendAnswer::Kind::kRewind;
      answer.length = stored.size();
      return answer;
    }
    stored.append(data.substr(overlap));
    answer.length = stored.size();
    return answer;
  }
  std::string stored;
  std::mutex mutex_;
};

class FakeSink : public LogSink {
 public:
  explicit FakeSink(FakeLog& log) : log_(log) {}
  LogAppendAnswer append(std::uint64_t offset, std::string_view data) override {
    if (unreachable) throw OrchestratorError(0, "orchestrator_unreachable", "no route", true);
    offsets.push_back(offset);
    sizes.push_back(data.size());
    if (max_piece && data.size() > max_piece) {
      LogAppendAnswer too_large;
      too_large.kind = LogAppendAnswer::Kind::kTooLarge;
      return too_large;
    }
    auto answer = log_.append(offset, data);
    if (lose_next_answer) {
      lose_next_answer = false;
      throw OrchestratorError(0, "orchestrator_unreachable", "answer lost", true);
    }
    return answer;
  }
  std::vector<std::uint64_t> offsets;
  std::vector<std::size_t> sizes;
  bool lose_next_answer = false;
  bool unreachable = false;
  std::size_t max_piece = 0;

 private:
  FakeLog& log_;
};

TEST(DaemonLogShipper, ShipsInOrderAndALostAnswerNeverDuplicatesOutput) {
  FakeLog log;
  FakeSink sink(log);
  LogShipper shipper;
  shipper.append("first line\n");
  shipper.flush(sink);
  EXPECT_EQ(shipper.acknowledged(), 11u);
  shipper.append("second line\n");
  sink.lose_next_answer = true;  // stored, but the worker never hears so
  EXPECT_THROW(shipper.flush(sink), OrchestratorError);
  EXPECT_EQ(shipper.acknowledged(), 11u);
  shipper.append("third\n");
  shipper.flush(sink);
  EXPECT_EQ(log.stored, "first line\nsecond line\nthird\n");
  EXPECT_EQ(shipper.acknowledged(), log.stored.size());
  EXPECT_EQ(sink.offsets, (std::vector<std::uint64_t>{0, 11, 11}))
      << "the retry starts where the acknowledged log ends";
}

TEST(DaemonLogShipper, AnOutageKeepsEveryByteOnDiskBeyondTheMemoryCap) {
  FakeLog log;
  FakeSink sink(log);
  tamma::testing::TempDir spill;
  LogShipperLimits limits;
  limits.memory_bytes = 4096;
  limits.spill_dir = spill.path();
  LogShipper shipper(limits);
  // The orchestrator is out of reach while the task writes 3 MiB, far beyond the memory cap.
  sink.unreachable = true;
  std::string expected;
  for (int i = 0; i < 3 * 1024; ++i) {
    std::string line = "line " + std::to_string(i) + " " + std::string(1000, 'a' + i % 26) + "\n";
    expected += line;
    if (shipper.append(line)) {
      EXPECT_THROW(shipper.flush(sink), OrchestratorError);
    }
  }
  EXPECT_EQ(shipper.dropped_bytes(), 0u) << "kept on disk, not dropped";
  std::vector<std::string> visible;
  for (const auto& e : std::filesystem::directory_iterator(spill.path())) {
    visible.push_back(e.path().filename());
  }
  EXPECT_TRUE(visible.empty()) << "the spill file is never linked: " << visible[0];
  // Back: everything arrives, once, in order.
  sink.unreachable = false;
  shipper.flush(sink);
  EXPECT_EQ(log.stored.size(), expected.size());
  EXPECT_TRUE(log.stored == expected) << "the log differs from what the task wrote";
  EXPECT_EQ(shipper.acknowledged(), expected.size());
}

TEST(DaemonLogShipper, RewindsToTheOrchestratorsLengthOnAGap) {
  FakeLog log;
  FakeSink sink(log);
  LogShipper shipper;
  shipper.append("0123456789");
  shipper.flush(sink);
  // The orchestrator lost the tail it had acknowledged (restored from an older state).
  log.stored.resize(4);
  shipper.append("abc");
  shipper.flush(sink);
  EXPECT_EQ(log.stored, "0123456789abc");
  EXPECT_EQ(sink.offsets, (std::vector<std::uint64_t>{0, 10, 4}));
}

TEST(DaemonLogShipper, MovesToTheOrchestratorsLengthOnAMismatch) {
  FakeLog log;
  log.stored = "xyz";  // written by someone else under this attempt
  FakeSink sink(log);
  LogShipper shipper;
  shipper.append("abcdef");
  shipper.flush(sink);
  EXPECT_EQ(sink.offsets, (std::vector<std::uint64_t>{0, 3}));
  EXPECT_EQ(log.stored, "xyzdef");
  EXPECT_EQ(shipper.acknowledged(), 6u);
}

TEST(DaemonLogShipper, HalvesThePieceWhenTheBodyIsTooLargeAndStopsAtTheFloor) {
  FakeLog log;
  FakeSink sink(log);
  sink.max_piece = 3000;
  LogShipper shipper({.flush_bytes = 1 << 20,
                      .max_request_bytes = 10000,
                      .min_request_bytes = 1000,
                      .max_buffered_bytes = 1 << 20,
                      .retained_bytes = 0});
  std::string data;
  for (int i = 0; i < 20000; ++i) data.push_back(static_cast<char>('a' + i % 26));
  shipper.append(data);
  shipper.flush(sink);
  EXPECT_EQ(log.stored, data);
  ASSERT_GE(sink.sizes.size(), 3u);
  EXPECT_EQ(sink.sizes[0], 10000u);
  EXPECT_EQ(sink.sizes[1], 5000u);
  for (std::size_t i = 2; i < sink.sizes.size(); ++i) EXPECT_EQ(sink.sizes[i], 2500u) << i;

  FakeLog refusing_log;
  FakeSink refusing(refusing_log);
  refusing.max_piece = 10;
  LogShipper small({.flush_bytes = 1 << 20,
                    .max_request_bytes = 4000,
                    .min_request_bytes = 1000,
                    .max_buffered_bytes = 1 << 20,
                    .retained_bytes = 0});
  small.append(data);
  small.flush(refusing);
  EXPECT_FALSE(small.stopped_reason().empty()) << "no endless halving";
  EXPECT_EQ(small.dropped_bytes(), data.size());
}

TEST(DaemonLogShipper, BoundsItsMemoryAndSaysWhatItDropped) {
  FakeLog log;
  FakeSink sink(log);
  LogShipper shipper({.flush_bytes = 50,
                      .max_request_bytes = 1 << 20,
                      .min_request_bytes = 1,
                      .max_buffered_bytes = 100,
                      .retained_bytes = 0});
  EXPECT_FALSE(shipper.append(std::string(40, 'a')));
  EXPECT_TRUE(shipper.append(std::string(40, 'b'))) << "over flush_bytes: flush now";
  shipper.append(std::string(30, 'c'));  // would pass 100 unsent bytes: dropped
  EXPECT_EQ(shipper.dropped_bytes(), 30u);
  shipper.flush(sink);
  shipper.append("d");
  shipper.flush(sink);
  EXPECT_EQ(log.stored.substr(0, 80), std::string(40, 'a') + std::string(40, 'b'));
  EXPECT_NE(log.stored.find("30 bytes of output were dropped"), std::string::npos) << log.stored;
  EXPECT_EQ(log.stored.back(), 'd');
}

TEST(DaemonLogShipper, AbandonedShippingCountsLaterOutputAsDropped) {
  FakeLog log;
  FakeSink sink(log);
  LogShipper shipper;
  shipper.append("kept");
  shipper.flush(sink);
  shipper.append("unsent");
  shipper.abandon("log_too_large");
  shipper.append("later");
  shipper.flush(sink);
  EXPECT_EQ(log.stored, "kept");
  EXPECT_EQ(shipper.dropped_bytes(), 11u);
  EXPECT_EQ(shipper.stopped_reason(), "log_too_large");
}

TEST(DaemonClient, AppendsRawBytesWithTheFenceInTheQueryAndReadsEveryKindOfAnswer) {
  std::atomic<int> call{0};
  HttpResponder server([&](const HttpRequest&) -> HttpReply {
    switch (call++) {
      case 0:
        return {200, R"({"length":5})", {{"X-Tamma-Task-State", "running"}}};
      case 1:
        return error_reply(409, "log_mismatch", 3);
      case 2:
        return error_reply(416, "log_offset_gap", 2);
      case 3:
        return error_reply(413, "body_too_large");
      case 4:
        return error_reply(409, "lease_lost");
      case 5:
        return error_reply(413, "log_too_large", 64);
      default:
        return error_reply(503, "database_error");
    }
  });
  OrchestratorClient client(server.url() + "/");
  wire::Fence fence{2, "lease/1"};
  std::string bytes("a\0b\xff\n", 5);
  auto first = client.append_log(kWorker, "tsk_1", fence, 0, bytes);
  EXPECT_EQ(first.kind, LogAppendAnswer::Kind::kAccepted);
  EXPECT_EQ(first.length, 5u);
  EXPECT_EQ(first.task_state, "running");
  auto mismatch = client.append_log(kWorker, "tsk_1", fence, 5, "x");
  EXPECT_EQ(mismatch.kind, LogAppendAnswer::Kind::kRewind);
  EXPECT_EQ(mismatch.length, 3u);
  auto gap = client.append_log(kWorker, "tsk_1", fence, 5, "x");
  EXPECT_EQ(gap.kind, LogAppendAnswer::Kind::kRewind);
  EXPECT_EQ(gap.length, 2u);
  EXPECT_EQ(client.append_log(kWorker, "tsk_1", fence, 5, "x").kind,
            LogAppendAnswer::Kind::kTooLarge);
  try {
    client.append_log(kWorker, "tsk_1", fence, 5, "x");
    ADD_FAILURE() << "409 lease_lost must throw";
  } catch (const OrchestratorError& e) {
    EXPECT_TRUE(e.lease_lost());
    EXPECT_FALSE(e.retryable());
  }
  try {
    client.append_log(kWorker, "tsk_1", fence, 5, "x");
    ADD_FAILURE() << "413 log_too_large must throw";
  } catch (const OrchestratorError& e) {
    EXPECT_EQ(e.code(), "log_too_large");
    EXPECT_FALSE(e.retryable());
  }
  try {
    client.append_log(kWorker, "tsk_1", fence, 5, "x");
    ADD_FAILURE() << "503 must throw";
  } catch (const OrchestratorError& e) {
    EXPECT_EQ(e.status(), 503);
    EXPECT_TRUE(e.retryable());
    EXPECT_EQ(std::string(e.what()).find(kWorker.token), std::string::npos);
  }

  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 7u);
  const auto& r = requests[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target.substr(0, r.target.find('?')), "/api/v1/tasks/tsk_1/logs");
  auto q = query_of(r.target);
  EXPECT_EQ(q["attempt"], "2");
  EXPECT_EQ(q["leaseId"], "lease%2F1");
  EXPECT_EQ(q["offset"], "0");
  EXPECT_EQ(r.body, bytes) << "raw bytes, NUL and invalid UTF-8 included";
  EXPECT_EQ(r.headers.at("content-type"), "application/octet-stream");
  EXPECT_EQ(r.headers.at("authorization"), "Bearer " + kWorker.token);
  EXPECT_EQ(r.target.find(kWorker.token), std::string::npos) << "the token is never in a URL";
}

TEST(DaemonClient, PollReadsAnAssignmentOrNothingAndRefusalsCarryTheirKind) {
  std::atomic<int> call{0};
  HttpResponder server([&](const HttpRequest&) -> HttpReply {
    switch (call++) {
      case 0:
        return {204, "", {}};
      case 1:
        return {200,
                json{{"task", {{"type", "command"}, {"id", "tsk_9"}}},
                     {"taskId", "tsk_9"},
                     {"attempt", 3},
                     {"leaseId", "L9"},
                     {"leaseTtlMs", 30000}}
                    .dump(),
                {}};
      case 2:
        return {200, R"({"taskId": "tsk_5"})", {}};
      case 3:
        return error_reply(401, "invalid_token");
      default:
        return {502, "<html>bad gateway</html>", {}};
    }
  });
  OrchestratorClient client(server.url());
  EXPECT_FALSE(client.poll(kWorker, 1500ms).has_value());
  auto assignment = client.poll(kWorker, 1500ms);
  ASSERT_TRUE(assignment.has_value());
  EXPECT_EQ(assignment->task_id, "tsk_9");
  EXPECT_EQ(assignment->attempt, 3);
  EXPECT_EQ(assignment->lease_id, "L9");
  EXPECT_EQ(assignment->task["type"], "command");
  try {
    client.poll(kWorker, 0ms);
    ADD_FAILURE() << "a malformed assignment must throw";
  } catch (const OrchestratorError& e) {
    EXPECT_EQ(e.code(), "malformed_answer");
    EXPECT_NE(std::string(e.what()).find("$.task: is required"), std::string::npos) << e.what();
  }
  try {
    client.poll(kWorker, 0ms);
    ADD_FAILURE();
  } catch (const OrchestratorError& e) {
    EXPECT_TRUE(e.unauthorized());
    EXPECT_FALSE(e.retryable());
  }
  try {
    client.poll(kWorker, 0ms);
    ADD_FAILURE();
  } catch (const OrchestratorError& e) {
    EXPECT_EQ(e.status(), 502);
    EXPECT_TRUE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("bad gateway"), std::string::npos) << e.what();
  }
  auto requests = server.requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_EQ(requests[0].target, "/api/v1/workers/wrk_1/poll?waitMs=1500");
}

TEST(DaemonClient, AStopSignalAbortsAHeldPollPromptly) {
  std::promise<void> release;
  auto released = release.get_future().share();
  HttpResponder server([&](const HttpRequest&) -> HttpReply {
    released.wait_for(10s);  // a parked long poll
    return {204, "", {}};
  });
  OrchestratorClient client(server.url());
  StopSignal stop;
  auto started = std::chrono::steady_clock::now();
  std::thread firer([&] {
    std::this_thread::sleep_for(300ms);
    stop.fire();
  });
  EXPECT_THROW(client.poll(kWorker, 20s, &stop), Interrupted);
  const auto took = std::chrono::steady_clock::now() - started;
  firer.join();
  release.set_value();
  // The parked poll would hold 10 s (the responder), the poll's own timeout is 20 s.
  EXPECT_LT(took, 5s) << "a drain must not wait for the poll to time out";
  EXPECT_THROW(client.poll(kWorker, 20s, &stop), Interrupted) << "fired before it started";
}

TEST(DaemonClient, NoAnswerIsStatusZeroAndRetryable) {
  int port;
  {
    HttpResponder gone([](const HttpRequest&) { return HttpReply{}; });
    port = std::stoi(gone.url().substr(gone.url().rfind(':') + 1));
  }
  OrchestratorClient client("http://127.0.0.1:" + std::to_string(port));
  try {
    client.heartbeat(kWorker, {});
    ADD_FAILURE() << "nothing listens there";
  } catch (const OrchestratorError& e) {
    EXPECT_EQ(e.status(), 0);
    EXPECT_TRUE(e.retryable());
    EXPECT_EQ(e.code(), "orchestrator_unreachable");
  }
}

TEST(DaemonClient, FailsOverToTheNextOrchestratorAndEveryClientOfTheListFollows) {
  int dead_port;
  {
    HttpResponder gone([](const HttpRequest&) { return HttpReply{}; });
    dead_port = std::stoi(gone.url().substr(gone.url().rfind(':') + 1));
  }
  HttpResponder overloaded(
      [](const HttpRequest&) { return error_reply(503, "storage_unavailable"); });
  HttpResponder alive([](const HttpRequest& r) -> HttpReply {
    if (r.headers.at("authorization") != "Bearer " + kWorker.token) {
      return error_reply(401, "invalid_token");
    }
    return {200, wire::to_json(wire::HeartbeatResponse{{}, {}, false, 3000}).dump(), {}};
  });
  const std::string dead = "http://127.0.0.1:" + std::to_string(dead_port);
  const std::string list = dead + ", " + overloaded.url() + "/," + alive.url();
  OrchestratorClient client(list);
  OrchestratorClient other(list);  // the daemon's heartbeats use a client of their own
  EXPECT_EQ(client.base_url(), dead);
  // Nothing listens: the call fails (the caller retries with backoff) and the next one goes on.
  EXPECT_THROW(client.heartbeat(kWorker, {}), OrchestratorError);
  EXPECT_EQ(other.base_url(), overloaded.url()) << "every client of the list moved on";
  // A 503 (a replica without its database, or a proxy without upstream) moves on too.
  EXPECT_THROW(other.heartbeat(kWorker, {}), OrchestratorError);
  EXPECT_EQ(client.base_url(), alive.url());
  EXPECT_NO_THROW(client.heartbeat(kWorker, {}));
  EXPECT_NO_THROW(other.heartbeat(kWorker, {}));
  EXPECT_EQ(overloaded.requests().size(), 1u);
  // A refusal that is the orchestrator's own answer (not a fault of the link) does not move it.
  EXPECT_THROW(client.heartbeat({kWorker.worker_id, "revoked-token-0123456789"}, {}),
               OrchestratorError);
  EXPECT_EQ(client.base_url(), alive.url());
  EXPECT_EQ(alive.requests().size(), 3u);
}

TEST(DaemonClient, RegisterSendsCapabilitiesWithTheRegistrationToken) {
  HttpResponder server([&](const HttpRequest& r) -> HttpReply {
    if (r.headers.at("authorization") != "Bearer registration-token-0123456789") {
      return error_reply(401, "invalid_token");
    }
    return {201,
            json{{"workerId", "wrk_2"},
                 {"token", "t2"},
                 {"heartbeatIntervalMs", 1000},
                 {"leaseTtlMs", 3000},
                 {"pollTimeoutMs", 25000}}
                .dump(),
            {}};
  });
  OrchestratorClient client(server.url());
  Config config;
  config.labels = {{"pool", "large"}};
  config.slots = 3;
  auto caps = detect_capabilities(config);
  auto answer = client.register_worker("registration-token-0123456789", caps);
  EXPECT_EQ(answer.worker_id, "wrk_2");
  EXPECT_EQ(answer.heartbeat_interval_ms, 1000);
  auto sent = json::parse(server.requests().at(0).body);
  EXPECT_EQ(sent["capabilities"]["slots"], 3);
  EXPECT_EQ(sent["capabilities"]["labels"]["pool"], "large");
  EXPECT_NE(std::find(sent["capabilities"]["taskTypes"].begin(),
                      sent["capabilities"]["taskTypes"].end(), "command"),
            sent["capabilities"]["taskTypes"].end());
  try {
    client.register_worker("wrong-token", caps);
    ADD_FAILURE();
  } catch (const OrchestratorError& e) {
    EXPECT_TRUE(e.unauthorized());
    EXPECT_EQ(std::string(e.what()).find("wrong-token"), std::string::npos);
  }
}

// The shipper and the real client together against a server that keeps the append rules and
// refuses bodies over 256 KiB, as an orchestrator started with --max-json-body 256K would.
TEST(DaemonClient, ShipperDeliversMegabytesThroughSmallBodyLimitsExactlyOnce) {
  FakeLog log;
  std::atomic<int> calls{0};
  HttpResponder server([&](const HttpRequest& r) -> HttpReply {
    ++calls;
    if (r.body.size() > (256u << 10)) return error_reply(413, "body_too_large");
    auto answer = log.append(std::stoull(query_of(r.target)["offset"]), r.body);
    if (answer.kind == LogAppendAnswer::Kind::kRewind) {
      return error_reply(409, "log_mismatch", answer.length);
    }
    return {200, json{{"length", answer.length}}.dump(), {}};
  });
  OrchestratorClient client(server.url());
  struct ClientSink : LogSink {
    OrchestratorClient& client;
    explicit ClientSink(OrchestratorClient& c) : client(c) {}
    LogAppendAnswer append(std::uint64_t offset, std::string_view data) override {
      return client.append_log(kWorker, "tsk_1", {1, "L"}, offset, data);
    }
  } sink(client);
  LogShipper shipper;
  std::string expected;
  for (int i = 0; expected.size() < (3u << 20); ++i) {
    std::string line = "line " + std::to_string(i) + " of the build output\n";
    expected += line;
    shipper.append(line);
  }
  shipper.flush(sink);
  EXPECT_EQ(log.stored.size(), expected.size());
  EXPECT_TRUE(log.stored == expected);
  EXPECT_LT(calls.load(), 40) << "pieces as large as the server takes, not one per line";
}

TEST(DaemonResult, FitResultCutsCapturedOutputUntilTheDocumentFits) {
  protocol::TaskResult result;
  result.task_id = "tsk_1";
  result.type = "command";
  for (int i = 0; i < 3; ++i) {
    protocol::StepResult step;
    step.name = "step" + std::to_string(i);
    step.stdout_capture.text = std::string(400000, 'o') + "END-OF-STDOUT";
    step.stdout_capture.total_bytes = step.stdout_capture.text.size();
    step.stderr_capture.text = std::string(1000, '\x01');  // escaped as \u0001: 6x in JSON
    result.steps.push_back(step);
  }
  auto small = fit_result(result, 64 << 10);
  EXPECT_LE(small.dump().size(), 64u << 10);
  const auto& step = small["steps"][0];
  EXPECT_EQ(step["status"], "succeeded");
  EXPECT_GT(step["stdoutDropped"].get<std::uint64_t>(), 380000u);
  const std::string text = step["stdout"];
  EXPECT_EQ(text.substr(text.size() - 13), "END-OF-STDOUT") << "the tail is kept";
  EXPECT_NE(text.find("cut from the result"), std::string::npos);

  auto whole = fit_result(result, 8 << 20);
  EXPECT_EQ(whole, protocol::to_json(result)) << "a document that fits is unchanged";
}

}  // namespace
}  // namespace tamma::worker
