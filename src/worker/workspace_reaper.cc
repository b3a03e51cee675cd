#include "worker/workspace_reaper.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

namespace tamma::worker {

WorkspaceReaper::WorkspaceReaper(std::size_t max_pending, std::size_t max_spares)
    : max_pending_(std::max<std::size_t>(max_pending, 1)),
      max_spares_(max_spares),
      thread_([this] { loop(); }) {}

WorkspaceReaper::~WorkspaceReaper() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  changed_.notify_all();
  thread_.join();
  spares_.clear();  // each removes its directories and then its lock
}

std::unique_ptr<sandbox::SpareWorkspace> WorkspaceReaper::take_spare() {
  std::lock_guard lock(mutex_);
  if (spares_.empty()) return nullptr;
  auto spare = std::move(spares_.front());
  spares_.pop_front();
  return spare;
}

void WorkspaceReaper::add(std::unique_ptr<sandbox::Workspace> workspace) {
  if (!workspace) return;
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return queue_.size() + (removing_ ? 1 : 0) < max_pending_; });
  queue_.push_back(std::move(workspace));
  changed_.notify_all();
}

void WorkspaceReaper::wait_idle() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return queue_.empty() && !removing_; });
}

void WorkspaceReaper::wait_until_gone(const std::string& task_id) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !pending(task_id); });
}

bool WorkspaceReaper::pending(const std::string& task_id) const {
  if (removing_ == task_id) return true;
  return std::any_of(queue_.begin(), queue_.end(), [&](const auto& workspace) {
    return workspace->task_dir().filename() == task_id;
  });
}

void WorkspaceReaper::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return closing_ || !queue_.empty(); });
    // Closing drains the queue first: a workspace handed over is always removed.
    if (queue_.empty()) return;
    auto workspace = std::move(queue_.front());
    queue_.pop_front();
    const std::string task = workspace->task_dir().filename().string();
    removing_ = task;
    // Only this thread adds spares: room now is room after the recycling.
    const bool wanted = !closing_ && spares_.size() < max_spares_;
    lock.unlock();
    const auto began = std::chrono::steady_clock::now();
    std::unique_ptr<sandbox::SpareWorkspace> spare;
    if (wanted) {
      spare = sandbox::SpareWorkspace::recycle(std::move(workspace));  // never throws
    } else {
      workspace.reset();  // the destructor unmounts and removes; it never throws
    }
    spdlog::debug(
        "task {}: workspace {} in {:.1f} ms (after the report)", task,
        spare ? "emptied into a spare" : "removed",
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - began)
            .count());
    lock.lock();
    if (spare) spares_.push_back(std::move(spare));
    removing_.reset();
    changed_.notify_all();
  }
}

}  // namespace tamma::worker
