#include "worker/step_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <memory>

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/unique_fd.h"
#include "worker/output_capture.h"

namespace tamma::worker {
namespace {

using Clock = std::chrono::steady_clock;

// After the main process is gone and the tree is killed, every writer of the pipes is
// dead, so EOF comes at once; this bound only guards against a kernel surprise.
constexpr auto kDrainBound = std::chrono::seconds(2);

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2 for task output");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

int poll_timeout_ms(Clock::time_point until) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<long long>(left + 1, 60'000));
}

class StepWatch {
 public:
  StepWatch(const StepRequest& request, const StepLimits& limits, const SecretMasker& masker,
            Cancellation& cancellation, const LiveSink& sink)
      : request_(request),
        limits_(limits),
        cancellation_(cancellation),
        out_(masker, limits.keep_bytes,
             request.forward_stdout && sink ? OutputCapture::Sink([&sink](std::string_view s) {
               sink(StreamKind::kStdout, s);
             })
                                            : OutputCapture::Sink()),
        err_(masker, limits.keep_bytes,
             sink ? OutputCapture::Sink(
                        [&sink](std::string_view s) { sink(StreamKind::kStderr, s); })
                  : OutputCapture::Sink()) {}

  StepOutcome run(sandbox::Sandbox& sandbox, const std::string& workspace) {
    const auto started = Clock::now();
    Pipe out = make_pipe();
    Pipe err = make_pipe();
    std::optional<Pipe> in;
    if (!request_.stdin_data.empty()) in = make_pipe();

    sandbox::Command command;
    command.argv = request_.argv;
    command.env = request_.env;
    command.shell_argv = request_.shell_argv;
    command.workspace = workspace;
    command.workdir = request_.workdir;
    command.stdout_fd = out.write.get();
    command.stderr_fd = err.write.get();
    command.stdin_fd = in ? in->read.get() : -1;
    process_ = sandbox.spawn(command);
    // Only the task may hold the write ends now, so EOF means every writer is gone.
    out.write.reset();
    err.write.reset();
    if (in) {
      in->read.reset();
      stdin_fd_ = std::move(in->write);
      ::fcntl(stdin_fd_.get(), F_SETFL, O_NONBLOCK);
    }
    out_fd_ = std::move(out.read);
    err_fd_ = std::move(err.read);

    loop();

    StepOutcome outcome;
    outcome.end = end_;
    outcome.exit = exit_;
    outcome.usage = process_->usage();
    out_.finish();
    err_.finish();
    outcome.out = out_.result();
    outcome.err = err_.result();
    outcome.degradations = process_->degradations();
    outcome.exec_began = process_->exec_began();
    process_.reset();  // removes the cgroup: nothing of the step is left
    outcome.duration_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
    return outcome;
  }

 private:
  void loop() {
    bool cancel_seen = false;
    while (!exit_ || out_fd_ || err_fd_) {
      const auto now = Clock::now();
      if (!exit_ && !terminating_ && now >= request_.deadline) begin_termination(StepEnd::kTimeout);
      if (terminating_ && !killed_ && now >= kill_at_) kill_everything();
      if (exit_ && !drain_started_) {
        // The task's tree dies with its main process: nothing may keep the pipes open.
        kill_everything();
        drain_started_ = true;
        drain_until_ = Clock::now() + kDrainBound;
      }
      if (drain_started_ && Clock::now() >= drain_until_) {
        spdlog::warn("task output pipes still open {} s after the task was killed; closing them",
                     std::chrono::duration_cast<std::chrono::seconds>(kDrainBound).count());
        break;
      }

      std::array<pollfd, 5> fds{};
      nfds_t n = 0;
      auto add = [&](int fd, short events) {
        fds[n].fd = fd;
        fds[n].events = events;
        fds[n].revents = 0;
        return n++;
      };
      const nfds_t out_i = out_fd_ ? add(out_fd_.get(), POLLIN) : 99;
      const nfds_t err_i = err_fd_ ? add(err_fd_.get(), POLLIN) : 99;
      const nfds_t exit_i = !exit_ ? add(process_->exit_fd(), POLLIN) : 99;
      const nfds_t cancel_i = !killed_ && !exit_ ? add(cancellation_.fd(), POLLIN) : 99;
      const nfds_t in_i = stdin_fd_ ? add(stdin_fd_.get(), POLLOUT) : 99;

      Clock::time_point wake = Clock::now() + std::chrono::seconds(60);
      if (!exit_ && !terminating_) wake = std::min(wake, request_.deadline);
      if (terminating_ && !killed_) wake = std::min(wake, kill_at_);
      if (drain_started_) wake = std::min(wake, drain_until_);

      int ready = ::poll(fds.data(), n, poll_timeout_ms(wake));
      if (ready < 0) {
        if (errno == EINTR) continue;
        throw_errno("poll on task pipes");
      }
      if (out_i != 99 && fds[out_i].revents) read_from(out_fd_, out_);
      if (err_i != 99 && fds[err_i].revents) read_from(err_fd_, err_);
      if (in_i != 99 && fds[in_i].revents) write_stdin();
      if (cancel_i != 99 && fds[cancel_i].revents) {
        // Reading resets the eventfd, so a pending request does not spin the loop; the
        // request itself stays recorded in the Cancellation.
        std::uint64_t count;
        [[maybe_unused]] auto n_read = ::read(cancellation_.fd(), &count, sizeof count);
      }
      if (cancellation_.requested() && !exit_) {
        if (!cancel_seen && !terminating_) begin_termination(StepEnd::kCancelled);
        cancel_seen = true;
        if (cancellation_.immediate()) kill_everything();
      }
      if (exit_i != 99 && fds[exit_i].revents) {
        exit_ = process_->poll_exit();
      }
      if (!exit_ && killed_) {
        // kill_all() has returned: the main process is dead, its status is ready.
        exit_ = process_->poll_exit();
        if (!exit_) exit_ = sandbox::ExitStatus{.signaled = true, .code = 0, .signal = SIGKILL};
      }
      if (out_.total_bytes() + err_.total_bytes() > limits_.hard_limit_bytes && !killed_) {
        end_ = StepEnd::kOutputLimit;
        kill_everything();
      }
    }
    stdin_fd_.reset();
  }

  void begin_termination(StepEnd why) {
    end_ = why;
    terminating_ = true;
    kill_at_ = Clock::now() + limits_.grace;
    if (limits_.grace.count() == 0 || cancellation_.immediate()) {
      kill_everything();
      return;
    }
    process_->signal_all(SIGTERM);
  }

  void kill_everything() {
    if (killed_) return;
    process_->kill_all();
    killed_ = true;
  }

  void read_from(UniqueFd& fd, OutputCapture& capture) {
    char buffer[65536];
    ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
    if (got > 0) {
      capture.append(std::string_view(buffer, static_cast<std::size_t>(got)));
    } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
      fd.reset();
    }
  }

  void write_stdin() {
    std::string_view rest = std::string_view(request_.stdin_data).substr(stdin_written_);
    ssize_t put = ::write(stdin_fd_.get(), rest.data(), rest.size());
    if (put > 0) stdin_written_ += static_cast<std::size_t>(put);
    // A reader that went away (EPIPE) simply does not get the rest; SIGPIPE is ignored.
    if (stdin_written_ >= request_.stdin_data.size() || (put < 0 && errno != EAGAIN)) {
      stdin_fd_.reset();
    }
  }

  const StepRequest& request_;
  const StepLimits& limits_;
  Cancellation& cancellation_;
  OutputCapture out_;
  OutputCapture err_;
  std::unique_ptr<sandbox::Process> process_;
  UniqueFd out_fd_, err_fd_, stdin_fd_;
  std::size_t stdin_written_ = 0;
  std::optional<sandbox::ExitStatus> exit_;
  StepEnd end_ = StepEnd::kExited;
  bool terminating_ = false;
  bool killed_ = false;
  bool drain_started_ = false;
  Clock::time_point kill_at_{};
  Clock::time_point drain_until_{};
};

}  // namespace

StepOutcome run_step(sandbox::Sandbox& sandbox, const std::string& workspace,
                     const StepRequest& request, const StepLimits& limits,
                     const SecretMasker& masker, Cancellation& cancellation, const LiveSink& sink) {
  StepWatch watch(request, limits, masker, cancellation, sink);
  return watch.run(sandbox, workspace);
}

}  // namespace tamma::worker
