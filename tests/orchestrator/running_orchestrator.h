#pragma once
// The tamma-orchestrator binary run as users run it, on a free loopback port: for the tests
// that need a real process (signals, stops, restarts).

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace tamma::orchestrator::testing {

inline const std::string kBinary = TAMMA_ORCHESTRATOR_BINARY;

class RunningOrchestrator {
 public:
  RunningOrchestrator(const std::filesystem::path& dir, std::vector<std::string> env,
                      std::vector<std::string> extra = {})
      : port_(tamma::testing::free_port()) {
    std::vector<std::string> argv = {kBinary,          "serve",
                                     "--listen",       "127.0.0.1:" + std::to_string(port_),
                                     "--db",           "sqlite:" + (dir / "db.sqlite").string(),
                                     "--poll-timeout", "20s"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    child_ = std::make_unique<tamma::testing::ChildProcess>(argv, env);
    ready_ = child_->wait_for_output("listening on", std::chrono::seconds(20));
  }
  ~RunningOrchestrator() {
    if (child_) stop();
  }
  tamma::testing::ProcessResult stop() {
    child_->send_signal(SIGTERM);
    auto r = child_->wait(std::chrono::seconds(20));
    child_.reset();
    return r;
  }
  [[nodiscard]] bool ready() const { return ready_; }
  [[nodiscard]] int pid() const { return child_->pid(); }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // SIGSTOP / SIGCONT: the whole process stands still, as under a debugger or a frozen VM.
  void pause() { child_->send_signal(SIGSTOP); }
  void resume() { child_->send_signal(SIGCONT); }
  // What it logged so far.
  std::string log() {
    child_->drain_output();
    return child_->err_so_far();
  }

 private:
  int port_;
  bool ready_ = false;
  std::unique_ptr<tamma::testing::ChildProcess> child_;
};

}  // namespace tamma::orchestrator::testing
