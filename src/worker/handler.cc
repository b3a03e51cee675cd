#include "worker/handler.h"

#include <unistd.h>

#include <fmt/format.h>

#include "worker/config.h"
#include "worker/external_handler.h"
#include "worker/scan_handler.h"
#include "worker/test_handler.h"

namespace tamma::worker {
namespace {

using protocol::TaskStatus;

std::vector<std::string> shell_argv(const std::string& script) {
  // bash as GitHub Actions runs it (-eo pipefail, no profile); sh where bash is absent.
  if (::access("/bin/bash", X_OK) == 0) {
    return {"/bin/bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script};
  }
  return {"/bin/sh", "-e", "-c", script};
}

}  // namespace

void HandlerRegistry::add(const std::string& type, std::shared_ptr<TaskHandler> handler) {
  handlers_[type] = std::move(handler);
}

TaskHandler* HandlerRegistry::find(std::string_view type) const {
  auto it = handlers_.find(type);
  return it == handlers_.end() ? nullptr : it->second.get();
}

std::vector<std::string> HandlerRegistry::types() const {
  std::vector<std::string> out;
  for (const auto& [type, handler] : handlers_) out.push_back(type);
  return out;
}

void StepsHandler::execute(TaskContext& ctx, protocol::TaskResult& result) {
  const auto& steps = ctx.spec().steps;
  result.status = TaskStatus::kSucceeded;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    if (ctx.cancel_requested()) {
      result.status = TaskStatus::kCancelled;
      return;
    }
    const auto& spec_step = steps[i];
    StepCommand command;
    command.name = spec_step.name.empty() ? fmt::format("step-{}", i + 1) : spec_step.name;
    command.argv = spec_step.run ? shell_argv(*spec_step.run) : spec_step.argv;
    if (spec_step.run && command.argv.front() == "/bin/bash") command.script = *spec_step.run;
    command.env = spec_step.env;
    command.timeout = spec_step.timeout;
    protocol::StepResult step = ctx.run(command);
    if (step.status != TaskStatus::kSucceeded) {
      result.status = step.status;
      result.limit = step.limit;
      result.exit_code = step.exit_code;
      result.signal = step.signal;
      return;
    }
    result.exit_code = step.exit_code;
  }
}

nlohmann::json masked_details(const TaskContext& ctx, nlohmann::json details) {
  if (details.is_string()) return ctx.mask(details.get<std::string>());
  if (details.is_structured()) {
    for (auto& item : details) item = masked_details(ctx, std::move(item));
  }
  return details;
}

HandlerRegistry HandlerRegistry::with_builtins(const Config& config) {
  HandlerRegistry registry;
  auto steps = std::make_shared<StepsHandler>();
  // A build's artifacts are collected by the engine after any type's steps (artifacts.h).
  registry.add("command", steps);
  registry.add("build", steps);
  registry.add("test", std::make_shared<TestHandler>());
  registry.add("security_scan", std::make_shared<ScanHandler>());
  // Configured external handlers may also take over a built-in type.
  for (const auto& [type, executable] : config.handlers) {
    registry.add(type, std::make_shared<ExternalHandler>(executable));
  }
  return registry;
}

}  // namespace tamma::worker
