#pragma once
// Finished tasks' workspaces, removed on a thread of their own: a daemon reports a task before
// its workspace is gone, since removing a checkout with its dependencies (hundreds of thousands
// of files) takes seconds that nobody waiting for the result needs to spend. Where it can, the
// thread keeps the emptied directories as a spare for a later task (ADR 0038).

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "sandbox/workspace.h"

namespace tamma::worker {

class WorkspaceReaper {
 public:
  // At most `max_pending` workspaces wait for removal (the one being removed included); at
  // most `max_spares` emptied ones wait for take_spare() (none: every workspace is removed).
  explicit WorkspaceReaper(std::size_t max_pending, std::size_t max_spares = 0);
  WorkspaceReaper(const WorkspaceReaper&) = delete;
  WorkspaceReaper& operator=(const WorkspaceReaper&) = delete;
  // Removes everything still queued, and the spares nobody took, before it returns: nothing
  // is left behind.
  ~WorkspaceReaper();

  // Queues `workspace` for removal. Waits while `max_pending` are queued already, so that a
  // slow disk holds the slots back rather than piling up workspaces.
  void add(std::unique_ptr<sandbox::Workspace> workspace);
  // A finished workspace emptied into a spare, if one is ready; never waits.
  std::unique_ptr<sandbox::SpareWorkspace> take_spare();
  // Returns once everything queued so far is removed (or made a spare).
  void wait_idle();
  // Returns once no workspace of this task waits for removal: a task run again on this worker
  // (its next attempt) makes its workspace under the same name, and its lock is held until the
  // old one is gone.
  void wait_until_gone(const std::string& task_id);

 private:
  [[nodiscard]] bool pending(const std::string& task_id) const;  // with mutex_ held
  void loop();

  const std::size_t max_pending_;
  const std::size_t max_spares_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::unique_ptr<sandbox::Workspace>> queue_;
  std::deque<std::unique_ptr<sandbox::SpareWorkspace>> spares_;
  std::optional<std::string> removing_;  // the task whose workspace is being removed
  bool closing_ = false;
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace tamma::worker
