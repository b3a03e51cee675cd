#pragma once
// What `tamma-worker run` shows while a task runs: the task's output, progress (a line that
// rewrites itself on a terminal, one line per step start and end otherwise) and, under a CI
// system, its log grouping (GitHub ::group::, GitLab collapsible sections).

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

#include "worker/ci_output.h"
#include "worker/handler.h"

namespace tamma::cli {

struct ConsoleOptions {
  bool quiet = false;  // no task output and no progress
  bool json = false;   // stdout carries only the result document
  bool tty = false;    // stderr is a terminal: the progress line rewrites itself
  worker::ci::System ci = worker::ci::System::kNone;
};

class ConsoleObserver : public worker::RunObserver {
 public:
  explicit ConsoleObserver(ConsoleOptions options);
  ~ConsoleObserver() override;
  ConsoleObserver(const ConsoleObserver&) = delete;
  ConsoleObserver& operator=(const ConsoleObserver&) = delete;

  void on_step_start(std::size_t index, std::size_t count, const std::string& name) override;
  void on_output(worker::StreamKind stream, std::string_view text) override;
  void on_step_end(std::size_t index, const protocol::StepResult& step) override;

  // Clears the progress line: the task is over.
  void finish();

 private:
  void draw_progress_locked();
  void clear_progress_locked();
  void end_line_locked(FILE* stream);
  void write_locked(FILE* stream, std::string_view text);
  void tick();

  ConsoleOptions options_;
  FILE* out_;  // the task's stdout, and GitHub's workflow commands
  // stdout and stderr end in one place: the task's stdout left a line open on stderr too, and
  // a marker on either must end it first.
  bool shared_target_;
  std::mutex mutex_;
  bool progress_shown_ = false;
  bool stopped_ = false;
  std::size_t index_ = 0, count_ = 0;
  std::string name_;
  std::string stop_token_;  // GitHub: the task's own output cannot issue workflow commands
  std::chrono::steady_clock::time_point step_started_;
  bool out_at_line_start_ = true, err_at_line_start_ = true;
  std::condition_variable wake_;
  std::thread ticker_;
};

}  // namespace tamma::cli
