#pragma once
// The `test` task type: runs the steps, then reads the JUnit XML reports they wrote (spec
// `reports`) into result.details.tests; failed tests fail the task even when every step
// exited 0. Outcomes and error codes: docs/task-spec.md.

#include "worker/handler.h"

namespace tamma::worker {

class TestHandler : public StepsHandler {
 public:
  void execute(TaskContext& ctx, protocol::TaskResult& result) override;
};

}  // namespace tamma::worker
