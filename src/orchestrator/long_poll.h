#pragma once
// Requests held open on the core thread until something happens: worker polls waiting for a
// task, and admin log reads waiting for more output. Only the core thread touches these, so a
// waiter is answered by exactly one of: a task arriving, its timer, a disconnect, or shutdown —
// whichever takes it out of the registry first.

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "orchestrator/http_types.h"
#include "orchestrator/store/store.h"

namespace tamma::orchestrator {

namespace asio = boost::asio;

class PollWaiters {
 public:
  struct Waiter {
    std::uint64_t id = 0;
    WorkerInfo worker;
    ExchangePtr exchange;
    std::unique_ptr<asio::steady_timer> timer;
    // Past this its client has given up: it is never handed a task (answered 204 instead).
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  };

  explicit PollWaiters(asio::io_context& core) : core_(core) {}

  // Parks a poll until `deadline`; `on_timeout(id)` runs on the core thread then unless taken
  // first.
  std::uint64_t add(WorkerInfo worker, ExchangePtr exchange,
                    std::chrono::steady_clock::time_point deadline,
                    std::function<void(std::uint64_t)> on_timeout);
  // Removes and returns a waiter (its timer cancelled); nullopt when already taken.
  std::optional<Waiter> take(std::uint64_t id);
  // The longest-waiting waiter whose worker can run a task of this type and labels, skipping
  // ids in `tried`, waiters past their deadline (their timer, late after a stall, has not run
  // yet) and waiters whose client is already gone (its disconnect not yet handled); nullptr
  // when none.
  const Waiter* find_match(const std::string& type,
                           const std::map<std::string, std::string>& labels,
                           const std::set<std::uint64_t>& tried) const;
  std::vector<Waiter> take_all();
  [[nodiscard]] std::size_t size() const { return index_.size(); }

 private:
  asio::io_context& core_;
  std::uint64_t next_id_ = 1;
  std::list<Waiter> fifo_;  // oldest first: the fairest worker to wake
  std::unordered_map<std::uint64_t, std::list<Waiter>::iterator> index_;
};

class LogFollowers {
 public:
  explicit LogFollowers(asio::io_context& core) : core_(core) {}

  // Runs `wake` once, on the core thread: at the next notify(task_id), after `wait`, or at
  // shutdown, whichever comes first. Returns an id for cancel().
  std::uint64_t add(const std::string& task_id, std::chrono::milliseconds wait,
                    std::function<void()> wake);
  void cancel(std::uint64_t id);
  void notify(const std::string& task_id);
  void wake_all();
  [[nodiscard]] std::size_t size() const { return followers_.size(); }

 private:
  struct Follower {
    std::string task_id;
    std::function<void()> wake;
    std::unique_ptr<asio::steady_timer> timer;
  };
  std::function<void()> take(std::uint64_t id);

  asio::io_context& core_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, Follower> followers_;
  std::multimap<std::string, std::uint64_t> by_task_;
};

// Whether a worker offering `capabilities` may run a task of `type` requiring `labels`.
bool worker_matches(const wire::Capabilities& capabilities, const std::string& type,
                    const std::map<std::string, std::string>& labels);

}  // namespace tamma::orchestrator
