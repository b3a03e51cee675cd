#include "worker/external_handler.h"
#include "common/json_parse.h"

#include <fmt/format.h>

#include "common/error.h"

namespace tamma::worker {

using protocol::TaskStatus;

ExternalHandler::ExternalHandler(std::filesystem::path executable)
    : executable_(std::move(executable)) {}

std::vector<std::string> ExternalHandler::readonly_binds() const {
  return {executable_.parent_path().string()};
}

void ExternalHandler::execute(TaskContext& ctx, protocol::TaskResult& result) {
  nlohmann::json request = {
      {"protocolVersion", 1},
      {"task", protocol::to_json(ctx.spec())},
      {"workspace", ctx.task_workspace()},
  };
  StepCommand command;
  command.name = "handler:" + ctx.spec().type;
  command.argv = {executable_.string()};
  command.stdin_data = request.dump() + "\n";
  command.forward_stdout = false;  // stdout is the answer, stderr is the log
  protocol::StepResult step = ctx.run(command);

  result.exit_code = step.exit_code;
  result.signal = step.signal;
  if (step.status != TaskStatus::kSucceeded && step.status != TaskStatus::kFailed) {
    // Timeout, cancel or a limit ended the handler: that is the task's outcome.
    result.status = step.status;
    result.limit = step.limit;
    return;
  }
  const std::string& answer = step.stdout_capture.text;
  if (answer.find_first_not_of(" \t\r\n") == std::string::npos) {
    result.status = step.status == TaskStatus::kSucceeded ? TaskStatus::kError : TaskStatus::kFailed;
    result.error = protocol::TaskError{
        "handler_no_result",
        fmt::format("external handler {} {} without writing a result document on stdout",
                    executable_.string(),
                    step.signal ? fmt::format("was killed by signal {}", *step.signal)
                                : fmt::format("exited with code {}", step.exit_code.value_or(-1))),
        false};
    return;
  }
  nlohmann::json document;
  try {
    document = parse_json_text(answer);
  } catch (const JsonTextError& e) {
    throw Error(ErrorKind::kInfrastructure, "invalid_handler_result",
                fmt::format("external handler {} wrote something other than a JSON result on "
                            "stdout: {}",
                            executable_.string(), e.what()));
  }
  protocol::TaskResult answered = protocol::task_result_from_json(document);
  result.status = answered.status;
  if (answered.exit_code) result.exit_code = answered.exit_code;
  if (answered.error) result.error = answered.error;
  if (!answered.details.is_null()) result.details = answered.details;
  for (auto& s : answered.steps) result.steps.push_back(std::move(s));
  if (answered.limit != protocol::LimitKind::kNone) result.limit = answered.limit;
  // A handler that says "succeeded" but exited non-zero is not believed.
  if (step.status == TaskStatus::kFailed && result.status == TaskStatus::kSucceeded) {
    result.status = TaskStatus::kFailed;
  }
}

}  // namespace tamma::worker
