#pragma once
// The `security_scan` task type: runs the scanner's steps, then reads the SARIF 2.1.0 file it
// wrote (spec `sarif`) into result.details.scan, and fails the task when any finding is at
// the spec's `failOn` level or above. Outcomes and error codes: docs/task-spec.md.

#include "worker/handler.h"

namespace tamma::worker {

class ScanHandler : public StepsHandler {
 public:
  void execute(TaskContext& ctx, protocol::TaskResult& result) override;
};

}  // namespace tamma::worker
