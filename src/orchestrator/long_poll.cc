#include "orchestrator/long_poll.h"

#include <algorithm>

namespace tamma::orchestrator {

bool worker_matches(const wire::Capabilities& capabilities, const std::string& type,
                    const std::map<std::string, std::string>& labels) {
  if (std::find(capabilities.task_types.begin(), capabilities.task_types.end(), type) ==
      capabilities.task_types.end()) {
    return false;
  }
  for (const auto& [key, value] : labels) {
    auto it = capabilities.labels.find(key);
    if (it == capabilities.labels.end() || it->second != value) return false;
  }
  return true;
}

std::uint64_t PollWaiters::add(WorkerInfo worker, ExchangePtr exchange,
                               std::chrono::steady_clock::time_point deadline,
                               std::function<void(std::uint64_t)> on_timeout) {
  std::uint64_t id = next_id_++;
  Waiter w;
  w.id = id;
  w.worker = std::move(worker);
  w.exchange = std::move(exchange);
  w.deadline = deadline;
  w.timer = std::make_unique<asio::steady_timer>(core_, deadline);
  w.timer->async_wait(
      [id, on_timeout = std::move(on_timeout)](const boost::system::error_code& ec) {
        if (!ec) on_timeout(id);
      });
  fifo_.push_back(std::move(w));
  index_[id] = std::prev(fifo_.end());
  return id;
}

std::optional<PollWaiters::Waiter> PollWaiters::take(std::uint64_t id) {
  auto it = index_.find(id);
  if (it == index_.end()) return std::nullopt;
  Waiter w = std::move(*it->second);
  fifo_.erase(it->second);
  index_.erase(it);
  w.timer->cancel();
  return w;
}

const PollWaiters::Waiter* PollWaiters::find_match(const std::string& type,
                                                   const std::map<std::string, std::string>& labels,
                                                   const std::set<std::uint64_t>& tried) const {
  const auto now = std::chrono::steady_clock::now();
  for (const auto& w : fifo_) {
    if (tried.count(w.id) == 0 && w.deadline > now &&
        worker_matches(w.worker.capabilities, type, labels) && !w.exchange->client_gone()) {
      return &w;
    }
  }
  return nullptr;
}

std::vector<PollWaiters::Waiter> PollWaiters::take_all() {
  std::vector<Waiter> out;
  for (auto& w : fifo_) {
    w.timer->cancel();
    out.push_back(std::move(w));
  }
  fifo_.clear();
  index_.clear();
  return out;
}

std::uint64_t LogFollowers::add(const std::string& task_id, std::chrono::milliseconds wait,
                                std::function<void()> wake) {
  std::uint64_t id = next_id_++;
  Follower f;
  f.task_id = task_id;
  f.wake = std::move(wake);
  f.timer = std::make_unique<asio::steady_timer>(core_, wait);
  f.timer->async_wait([this, id](const boost::system::error_code& ec) {
    if (ec) return;
    if (auto wake = take(id)) wake();
  });
  followers_.emplace(id, std::move(f));
  by_task_.emplace(task_id, id);
  return id;
}

std::function<void()> LogFollowers::take(std::uint64_t id) {
  auto it = followers_.find(id);
  if (it == followers_.end()) return {};
  auto wake = std::move(it->second.wake);
  it->second.timer->cancel();
  auto range = by_task_.equal_range(it->second.task_id);
  for (auto b = range.first; b != range.second; ++b) {
    if (b->second == id) {
      by_task_.erase(b);
      break;
    }
  }
  followers_.erase(it);
  return wake;
}

void LogFollowers::cancel(std::uint64_t id) { take(id); }

void LogFollowers::notify(const std::string& task_id) {
  std::vector<std::uint64_t> ids;
  auto range = by_task_.equal_range(task_id);
  for (auto it = range.first; it != range.second; ++it) ids.push_back(it->second);
  for (auto id : ids) {
    if (auto wake = take(id)) wake();
  }
}

void LogFollowers::wake_all() {
  std::vector<std::uint64_t> ids;
  for (const auto& [id, f] : followers_) ids.push_back(id);
  for (auto id : ids) {
    if (auto wake = take(id)) wake();
  }
}

}  // namespace tamma::orchestrator
