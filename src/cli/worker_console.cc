#include "cli/worker_console.h"

#include <sys/stat.h>

#include <fmt/format.h>

#include <random>

#include "common/units.h"

namespace tamma::cli {
namespace {

using Clock = std::chrono::steady_clock;
using worker::ci::System;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_token() {
  std::random_device rd;
  return fmt::format("tamma-{:08x}{:08x}", rd(), rd());
}

int percent(std::size_t done, std::size_t count) {
  return count == 0 ? 0 : static_cast<int>(100 * done / count);
}

// Whether two streams end in the same place (a terminal, or one pipe or file as with 2>&1,
// which is how CI runners and most users see them): then a line left open on one is open on
// the other too.
bool same_target(FILE* a, FILE* b) {
  struct stat sa {};
  struct stat sb {};
  if (::fstat(::fileno(a), &sa) != 0 || ::fstat(::fileno(b), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino && sa.st_rdev == sb.st_rdev;
}

std::string section_name(std::size_t index) { return fmt::format("tamma_step_{}", index + 1); }

std::string end_text(const protocol::StepResult& step) {
  std::string how(protocol::to_string(step.status));
  if (step.exit_code) how += fmt::format(", exit code {}", *step.exit_code);
  if (step.signal) how += fmt::format(", signal {}", *step.signal);
  if (step.limit != protocol::LimitKind::kNone) {
    how += fmt::format(", {} limit", protocol::to_string(step.limit));
  }
  return fmt::format(
      "{}: {} in {}", step.name, how,
      format_duration(std::chrono::milliseconds(std::max<std::int64_t>(1, step.duration_ms))));
}

}  // namespace

ConsoleObserver::ConsoleObserver(ConsoleOptions options)
    : options_(options),
      out_(options.json ? stderr : stdout),
      shared_target_(out_ == stderr || same_target(stdout, stderr)) {
  if (options_.tty && !options_.quiet) ticker_ = std::thread([this] { tick(); });
}

ConsoleObserver::~ConsoleObserver() { finish(); }

void ConsoleObserver::finish() {
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    clear_progress_locked();
  }
  wake_.notify_all();
  if (ticker_.joinable()) ticker_.join();
}

// The elapsed time on the progress line moves even while a step prints nothing.
void ConsoleObserver::tick() {
  std::unique_lock lock(mutex_);
  while (!stopped_) {
    wake_.wait_for(lock, std::chrono::seconds(1));
    if (!stopped_ && progress_shown_) draw_progress_locked();
  }
}

void ConsoleObserver::draw_progress_locked() {
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - step_started_).count();
  std::fprintf(stderr, "\r\x1b[K[%3d%%] step %zu/%zu: %s (%llds)", percent(index_, count_),
               index_ + 1, count_, name_.c_str(), static_cast<long long>(elapsed));
  std::fflush(stderr);
  progress_shown_ = true;
}

void ConsoleObserver::clear_progress_locked() {
  if (!progress_shown_) return;
  std::fputs("\r\x1b[K", stderr);
  std::fflush(stderr);
  progress_shown_ = false;
}

void ConsoleObserver::write_locked(FILE* stream, std::string_view text) {
  if (text.empty()) return;
  std::fwrite(text.data(), 1, text.size(), stream);
  std::fflush(stream);
  const bool at_start = text.back() == '\n';
  if (stream == stdout || shared_target_) out_at_line_start_ = at_start;
  if (stream == stderr || shared_target_) err_at_line_start_ = at_start;
}

// A marker must start a line of its own, whatever the task printed last.
void ConsoleObserver::end_line_locked(FILE* stream) {
  const bool at_start = stream == stdout ? out_at_line_start_ : err_at_line_start_;
  if (!at_start) write_locked(stream, "\n");
}

void ConsoleObserver::on_step_start(std::size_t index, std::size_t count, const std::string& name) {
  if (options_.quiet) return;
  std::lock_guard lock(mutex_);
  index_ = index;
  count_ = count;
  name_ = name;
  step_started_ = Clock::now();
  const std::string title =
      fmt::format("[{}/{} {}%] {}", index + 1, count, percent(index, count), name);
  clear_progress_locked();
  if (options_.ci == System::kGithub) {
    end_line_locked(out_);
    stop_token_ = random_token();
    write_locked(out_, fmt::format("::group::{}\n::stop-commands::{}\n",
                                   worker::ci::github_escape_data(title), stop_token_));
  } else if (options_.ci == System::kGitlab) {
    end_line_locked(out_);
    write_locked(out_, worker::ci::gitlab_section_start(section_name(index), title, unix_now()));
  }
  if (options_.tty) {
    draw_progress_locked();
  } else {
    end_line_locked(stderr);
    write_locked(stderr, "==> " + title + "\n");
  }
}

void ConsoleObserver::on_output(worker::StreamKind stream, std::string_view text) {
  if (options_.quiet) return;
  std::lock_guard lock(mutex_);
  const bool redraw = progress_shown_;
  clear_progress_locked();
  write_locked(stream == worker::StreamKind::kStdout ? out_ : stderr, text);
  // Redrawn only after a whole line, so a partial line is never overwritten.
  if (redraw && !text.empty() && text.back() == '\n') draw_progress_locked();
}

void ConsoleObserver::on_step_end(std::size_t index, const protocol::StepResult& step) {
  if (options_.quiet) return;
  std::lock_guard lock(mutex_);
  clear_progress_locked();
  end_line_locked(stderr);
  write_locked(stderr, "==> " + end_text(step) + "\n");
  if (options_.ci == System::kGithub) {
    end_line_locked(out_);
    write_locked(out_, fmt::format("::{}::\n::endgroup::\n", stop_token_));
  } else if (options_.ci == System::kGitlab) {
    end_line_locked(out_);
    write_locked(out_, worker::ci::gitlab_section_end(section_name(index), unix_now()));
  }
}

}  // namespace tamma::cli
