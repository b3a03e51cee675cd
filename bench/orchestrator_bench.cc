// Orchestrator figures on loopback, each against a fresh orchestrator in a child process (so its
// RSS is its own): pickup latency with an idle parked poller, claim throughput with two pollers
// (SQLite synchronous FULL and NORMAL; WAL checkpoints on the store's own thread, and inside the
// commits as SQLite does by default, ADR 0040), and the memory held by 10,000 idle long-polls.
//
//   orchestrator_bench [--submits N] [--tasks N] [--polls N]

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "orchestrator/http_client.h"
#include "orchestrator/server.h"

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace orch = tamma::orchestrator;

constexpr const char* kAdmin = "bench-admin-token-0123456789";
constexpr const char* kRegistration = "bench-registration-token-0123456789";

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "orchestrator_bench: %s\n", message.c_str());
  std::exit(1);
}

// A fresh orchestrator in a forked child: its own process, its own database in a temp dir.
class ChildServer {
 public:
  ChildServer(orch::SyncMode sync, std::chrono::milliseconds poll_timeout,
              int checkpoint_pages = orch::SqliteStore::kCheckpointPages) {
    char pattern[] = "/tmp/tamma-orch-bench-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) die("mkdtemp failed");
    dir_ = pattern;
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) die("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) die("fork failed");
    if (pid_ == 0) {
      ::close(pipe_fds[0]);
      run_child(pipe_fds[1], sync, poll_timeout, checkpoint_pages);
    }
    ::close(pipe_fds[1]);
    std::uint16_t port = 0;
    if (::read(pipe_fds[0], &port, sizeof port) != sizeof port) die("the server did not start");
    ::close(pipe_fds[0]);
    url_ = "http://127.0.0.1:" + std::to_string(port);
  }

  ~ChildServer() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  [[nodiscard]] const std::string& url() const { return url_; }

  [[nodiscard]] long rss_kib() const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
  }

 private:
  [[noreturn]] void run_child(int ready_fd, orch::SyncMode sync,
                              std::chrono::milliseconds poll_timeout, int checkpoint_pages) {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    spdlog::set_level(spdlog::level::err);
    try {
      orch::raise_open_file_limit();
      orch::ServerConfig config;
      config.listen_port = 0;
      config.db_path = dir_ / "db.sqlite";
      config.data_dir = dir_ / "data";
      config.sync = sync;
      config.sqlite_checkpoint_pages = checkpoint_pages;
      config.poll_timeout = poll_timeout;
      config.admin_token = kAdmin;
      config.registration_token = kRegistration;
      std::ostringstream announce;
      orch::Server server(config, announce);
      server.start();
      std::uint16_t port = server.port();
      if (::write(ready_fd, &port, sizeof port) != sizeof port) std::_Exit(1);
      ::close(ready_fd);
      int sig = 0;
      sigwait(&signals, &sig);
      server.shutdown();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "orchestrator_bench server: %s\n", e.what());
      std::_Exit(1);
    }
    std::_Exit(0);
  }

  std::filesystem::path dir_;
  pid_t pid_ = -1;
  std::string url_;
};

json task_body() {
  return {
      {"task", {{"type", "command"}, {"steps", json::array({{{"name", "x"}, {"run", "true"}}})}}}};
}

struct Worker {
  std::string id;
  std::string token;
};

Worker register_worker(const std::string& url, int slots = 1) {
  orch::HttpClient http(url, kRegistration);
  auto r = http.post_json(
      "/api/v1/workers/register",
      {{"capabilities", {{"taskTypes", json::array({"command"})}, {"slots", slots}}}});
  if (r.status != 201) die("register: " + r.body);
  auto j = r.json();
  return {j["workerId"], j["token"]};
}

double metric(orch::HttpClient& admin, const std::string& name) {
  auto body = admin.get("/metrics").body;
  auto at = body.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stod(body.substr(at + name.size() + 2));
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

// Submit -> a parked poller's answer, one task at a time so the poller is always idle first.
// "synchronous=FULL, checkpoints off the core thread" and the like.
std::string mode_name(orch::SyncMode sync, int checkpoint_pages) {
  return fmt::format("synchronous={}, checkpoints {}",
                     sync == orch::SyncMode::kFull ? "FULL" : "NORMAL",
                     checkpoint_pages > 0 ? "on their own thread" : "inside commits");
}

void pickup_latency(int submits, orch::SyncMode sync, int checkpoint_pages) {
  ChildServer server(sync, 25s, checkpoint_pages);
  auto worker = register_worker(server.url());
  orch::HttpClient admin(server.url(), kAdmin);
  std::atomic<bool> stop{false};
  std::vector<Clock::time_point> received(static_cast<std::size_t>(submits));
  std::atomic<int> got{0};
  std::thread poller([&] {
    orch::HttpClient http(server.url(), worker.token);
    while (!stop) {
      auto r = http.request("POST", "/api/v1/workers/" + worker.id + "/poll?waitMs=500");
      auto now = Clock::now();
      if (r.status == 204) continue;
      if (r.status != 200) die("poll: " + r.body);
      auto a = r.json();
      auto done = http.post_json("/api/v1/tasks/" + a["taskId"].get<std::string>() + "/complete",
                                 {{"attempt", a["attempt"]},
                                  {"leaseId", a["leaseId"]},
                                  {"result", {{"status", "succeeded"}}}});
      if (done.status != 200) die("complete: " + done.body);
      received[static_cast<std::size_t>(got.load())] = now;
      got.fetch_add(1, std::memory_order_release);
    }
  });
  std::vector<double> latencies;
  for (int i = 0; i < submits; ++i) {
    // The previous task is done and the poller is parked again, for real.
    while (got.load(std::memory_order_acquire) < i) std::this_thread::sleep_for(20us);
    while (metric(admin, "tamma_waiting_polls") < 1) std::this_thread::sleep_for(50us);
    auto sent = Clock::now();
    auto r = admin.post_json("/api/v1/tasks", task_body());
    if (r.status != 201) die("submit: " + r.body);
    while (got.load(std::memory_order_acquire) <= i) std::this_thread::sleep_for(20us);
    latencies.push_back(
        std::chrono::duration<double, std::milli>(received[static_cast<std::size_t>(i)] - sent)
            .count());
  }
  stop = true;
  poller.join();
  fmt::print("pickup latency, submit -> parked poll answered ({} submits, {}):\n", submits,
             mode_name(sync, checkpoint_pages));
  fmt::print("  p50 {:.2f} ms   p90 {:.2f} ms   p99 {:.2f} ms   max {:.2f} ms\n",
             percentile(latencies, 0.5), percentile(latencies, 0.9), percentile(latencies, 0.99),
             *std::max_element(latencies.begin(), latencies.end()));
}

// Trivial tasks through the whole cycle: one submitter, two pollers that complete at once.
void claim_throughput(int tasks, orch::SyncMode sync, int checkpoint_pages) {
  ChildServer server(sync, 25s, checkpoint_pages);
  std::atomic<int> done{0};
  std::atomic<bool> stop{false};
  auto start = Clock::now();
  std::thread submitter([&] {
    orch::HttpClient admin(server.url(), kAdmin);
    for (int i = 0; i < tasks; ++i) {
      auto r = admin.post_json("/api/v1/tasks", task_body());
      if (r.status != 201) die("submit: " + r.body);
    }
  });
  std::vector<std::thread> pollers;
  for (int p = 0; p < 2; ++p) {
    pollers.emplace_back([&] {
      auto worker = register_worker(server.url());
      orch::HttpClient http(server.url(), worker.token);
      while (!stop) {
        auto r = http.request("POST", "/api/v1/workers/" + worker.id + "/poll?waitMs=500");
        if (r.status == 204) continue;
        if (r.status != 200) die("poll: " + r.body);
        auto a = r.json();
        auto c = http.post_json("/api/v1/tasks/" + a["taskId"].get<std::string>() + "/complete",
                                {{"attempt", a["attempt"]},
                                 {"leaseId", a["leaseId"]},
                                 {"result", {{"status", "succeeded"}}}});
        if (c.status != 200) die("complete: " + c.body);
        if (++done >= tasks) stop = true;
      }
    });
  }
  submitter.join();
  for (auto& t : pollers) t.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  fmt::print("claim throughput, {}: {} tasks (submit+poll+complete) in {:.2f} s = {:.0f} tasks/s\n",
             mode_name(sync, checkpoint_pages), tasks, seconds, tasks / seconds);
}

// Raw sockets on epoll: the cheapest client that can hold thousands of requests open.
void idle_polls(int count) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < static_cast<rlim_t>(count) + 100) {
    die(fmt::format("RLIMIT_NOFILE hard limit {} is too low for {} polls", limit.rlim_max, count));
  }
  ChildServer server(orch::SyncMode::kFull, 120s);
  auto worker = register_worker(server.url());
  orch::HttpClient admin(server.url(), kAdmin);
  long rss_before = server.rss_kib();
  std::uint16_t port =
      static_cast<std::uint16_t>(std::stoi(server.url().substr(server.url().rfind(':') + 1)));
  std::string request = fmt::format(
      "POST /api/v1/workers/{}/poll?waitMs=120000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Authorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
      worker.id, worker.token);
  std::vector<int> sockets;
  auto start = Clock::now();
  for (int i = 0; i < count; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die(fmt::format("socket #{}: {}", i, std::strerror(errno)));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      die(fmt::format("connect #{}: {}", i, std::strerror(errno)));
    }
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      die(fmt::format("send #{}: {}", i, std::strerror(errno)));
    }
    sockets.push_back(fd);
  }
  double parked = 0;
  auto deadline = Clock::now() + 60s;
  while ((parked = metric(admin, "tamma_waiting_polls")) < count && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  double open_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  long rss_held = server.rss_kib();
  for (int fd : sockets) ::close(fd);
  // Closing the sockets must release every parked poll (disconnect detection).
  deadline = Clock::now() + 30s;
  double left = 0;
  while ((left = metric(admin, "tamma_waiting_polls")) > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  long rss_after = server.rss_kib();
  fmt::print(
      "idle long-polls: {} parked of {} in {:.2f} s; server RSS {:.1f} MiB before, {:.1f} MiB "
      "holding them ({:.1f} KiB per poll), {:.1f} MiB after the clients left ({} still parked)\n",
      parked, count, open_seconds, rss_before / 1024.0, rss_held / 1024.0,
      static_cast<double>(rss_held - rss_before) / count, rss_after / 1024.0, left);
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  int submits = 1000;
  int tasks = 2000;
  int polls = 10000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    int value = std::stoi(argv[i + 1]);
    if (flag == "--submits")
      submits = value;
    else if (flag == "--tasks")
      tasks = value;
    else if (flag == "--polls")
      polls = value;
    else
      die("unknown flag " + flag);
  }
  try {
    // Each mode beside the same one with SQLite's checkpoints inside the commits, in turn.
    constexpr int kOwnThread = orch::SqliteStore::kCheckpointPages;
    for (auto sync : {orch::SyncMode::kFull, orch::SyncMode::kNormal}) {
      pickup_latency(submits, sync, kOwnThread);
      pickup_latency(submits, sync, 0);
    }
    for (auto sync : {orch::SyncMode::kFull, orch::SyncMode::kNormal}) {
      claim_throughput(tasks, sync, kOwnThread);
      claim_throughput(tasks, sync, 0);
    }
    idle_polls(polls);
  } catch (const std::exception& e) {
    die(e.what());
  }
  return 0;
}
