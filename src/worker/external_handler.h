#pragma once
// A handler in any language: an executable that receives the task as JSON on stdin and
// answers with a result document on stdout. It runs inside the task's sandbox, with the
// same limits, and its stderr is the task's log.

#include <filesystem>

#include "worker/handler.h"

namespace tamma::worker {

class ExternalHandler : public TaskHandler {
 public:
  explicit ExternalHandler(std::filesystem::path executable);
  void execute(TaskContext& ctx, protocol::TaskResult& result) override;
  [[nodiscard]] std::vector<std::string> readonly_binds() const override;
  [[nodiscard]] const std::filesystem::path& executable() const { return executable_; }

 private:
  std::filesystem::path executable_;
};

}  // namespace tamma::worker
