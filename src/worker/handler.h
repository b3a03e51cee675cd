#pragma once
// Task handlers: the code that knows how to carry out one type of task. Built-in handlers
// are C++ classes; external ones are executables speaking JSON (see external_handler.h).

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/task_result.h"
#include "protocol/task_spec.h"
#include "worker/step_runner.h"

namespace tamma::worker {

struct Config;

// What the engine tells the outside world while a task runs (console, orchestrator).
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  virtual void on_step_start(std::size_t /*index*/, std::size_t /*count*/,
                             const std::string& /*name*/) {}
  virtual void on_output(StreamKind /*stream*/, std::string_view /*masked*/) {}
  virtual void on_step_end(std::size_t /*index*/, const protocol::StepResult& /*step*/) {}
};

struct StepCommand {
  std::string name;
  std::vector<std::string> argv;
  // The step's `run` script when argv is bash running it: a lone command in it may run
  // without bash (lone_command.h).
  std::optional<std::string> script;
  std::map<std::string, std::string> env;  // added to the task's environment
  std::string workdir;                     // relative to the workspace; empty = task workdir
  std::optional<std::chrono::milliseconds> timeout;
  std::string stdin_data;
  bool forward_stdout = true;
  // For the one step that fetches untrusted data (the checkout): the host's network and extra
  // read-only binds (host source, path inside) for this step alone.
  bool host_network = false;
  std::vector<std::pair<std::string, std::string>> readonly_binds_at;
};

// Everything a handler may use; owned by the engine for the duration of one task.
class TaskContext {
 public:
  virtual ~TaskContext() = default;
  [[nodiscard]] virtual const protocol::TaskSpec& spec() const = 0;
  [[nodiscard]] virtual const Config& config() const = 0;
  // The workspace as the task sees it ("/workspace" when isolated).
  [[nodiscard]] virtual std::string task_workspace() const = 0;
  [[nodiscard]] virtual const std::filesystem::path& host_workspace() const = 0;
  [[nodiscard]] virtual bool cancel_requested() const = 0;
  [[nodiscard]] virtual std::size_t step_count_hint() const = 0;
  // Masks the task's secrets in text taken from the workspace (reports) before it is reported.
  [[nodiscard]] virtual std::string mask(std::string_view text) const = 0;

  // Runs one command in the sandbox, classifies how it ended, reports it to the observer
  // and appends it to the result. `raw`, when given, receives the unclassified outcome.
  virtual protocol::StepResult run(const StepCommand& command, StepOutcome* raw = nullptr) = 0;
};

class TaskHandler {
 public:
  virtual ~TaskHandler() = default;
  // Fills result.steps (through ctx.run), result.status and, when it has any, result.details.
  // Throws tamma::Error for failures that are not the task's own.
  virtual void execute(TaskContext& ctx, protocol::TaskResult& result) = 0;
  // Host paths the handler needs to see inside the sandbox (bound read-only).
  [[nodiscard]] virtual std::vector<std::string> readonly_binds() const { return {}; }
};

class HandlerRegistry {
 public:
  void add(const std::string& type, std::shared_ptr<TaskHandler> handler);
  [[nodiscard]] TaskHandler* find(std::string_view type) const;
  [[nodiscard]] std::vector<std::string> types() const;

  // command and build run their steps, test and security_scan also read their reports
  // (test_handler.h, scan_handler.h); plus the config's external ones.
  static HandlerRegistry with_builtins(const Config& config);

 private:
  std::map<std::string, std::shared_ptr<TaskHandler>, std::less<>> handlers_;
};

// Runs spec.steps in order and stops at the first one that does not succeed.
class StepsHandler : public TaskHandler {
 public:
  void execute(TaskContext& ctx, protocol::TaskResult& result) override;
};

// Every string in a details document masked with the task's secrets.
nlohmann::json masked_details(const TaskContext& ctx, nlohmann::json details);

// The largest report (JUnit XML, SARIF) the worker reads, so that a runaway report cannot
// exhaust the worker's memory.
inline constexpr std::uint64_t kMaxReportBytes = 64ull << 20;

}  // namespace tamma::worker
