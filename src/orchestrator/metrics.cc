#include "orchestrator/metrics.h"

#include <fmt/format.h>

#include "orchestrator/store/store.h"

namespace tamma::orchestrator {
namespace {

// Label values are escaped as the exposition format requires: backslash, quote, newline.
std::string escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

void Metrics::http_request(const std::string& route, const std::string& method, unsigned status) {
  std::lock_guard lock(mutex_);
  ++http_[{route, method, status}];
}

void Metrics::pickup_latency(double seconds) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    if (seconds <= kLatencyBuckets[i]) ++latency_buckets_[i];
  }
  ++latency_count_;
  latency_sum_ += seconds;
}

std::string Metrics::render(const TaskCounts& tasks,
                            const std::map<std::string, std::int64_t>& workers) const {
  std::string out;
  header(out, "tamma_tasks", "gauge", "Tasks by state.");
  for (auto state : {"queued", "running", "succeeded", "failed", "retry_wait", "dead",
                     "cancel_requested", "cancelled"}) {
    auto it = tasks.by_state.find(state);
    out += fmt::format("tamma_tasks{{state=\"{}\"}} {}\n", state,
                       it == tasks.by_state.end() ? 0 : it->second);
  }
  auto queued = tasks.by_state.find("queued");
  header(out, "tamma_queue_depth", "gauge", "Tasks waiting for a worker.");
  out += fmt::format("tamma_queue_depth {}\n", queued == tasks.by_state.end() ? 0 : queued->second);

  header(out, "tamma_workers", "gauge", "Registered workers by state.");
  for (auto state : {"online", "draining", "offline"}) {
    auto it = workers.find(state);
    out += fmt::format("tamma_workers{{state=\"{}\"}} {}\n", state,
                       it == workers.end() ? 0 : it->second);
  }
  header(out, "tamma_waiting_polls", "gauge", "Worker long-polls held open waiting for a task.");
  out += fmt::format("tamma_waiting_polls {}\n", waiting_polls_.load());
  header(out, "tamma_log_followers", "gauge", "Log reads held open waiting for more output.");
  out += fmt::format("tamma_log_followers {}\n", log_followers_.load());
  header(out, "tamma_lease_expiries_total", "counter", "Leases lost because heartbeats stopped.");
  out += fmt::format("tamma_lease_expiries_total {}\n", lease_expiries_.load());
  header(out, "tamma_assignments_unacknowledged_total", "counter",
         "Assignments re-queued because the worker never acknowledged them.");
  out += fmt::format("tamma_assignments_unacknowledged_total {}\n", unacknowledged_.load());
  header(out, "tamma_lease_stall_graces_total", "counter",
         "Times every lease was given one lease TTL because the orchestrator could not serve "
         "(stopped, disk stalled or failing)");
  out += fmt::format("tamma_lease_stall_graces_total {}\n", stall_graces_.load());
  header(out, "tamma_tasks_pruned_total", "counter",
         "Finished tasks removed by retention (--retain-finished), with their logs and artifacts.");
  out += fmt::format("tamma_tasks_pruned_total {}\n", tasks_pruned_.load());
  header(out, "tamma_workers_pruned_total", "counter",
         "Workers gone or silent for longer than the retention, removed once no task named them.");
  out += fmt::format("tamma_workers_pruned_total {}\n", workers_pruned_.load());
  header(out, "tamma_tasks_submitted_total", "counter", "Tasks accepted by submit.");
  out += fmt::format("tamma_tasks_submitted_total {}\n", submitted_.load());
  header(out, "tamma_task_assignments_total", "counter", "Tasks handed to a worker.");
  out += fmt::format("tamma_task_assignments_total {}\n", assigned_.load());

  std::lock_guard lock(mutex_);
  header(out, "tamma_http_requests_total", "counter", "HTTP requests by route, method and status.");
  for (const auto& [key, count] : http_) {
    const auto& [route, method, status] = key;
    out += fmt::format("tamma_http_requests_total{{route=\"{}\",method=\"{}\",code=\"{}\"}} {}\n",
                       escape(route), escape(method), status, count);
  }
  header(out, "tamma_task_pickup_latency_seconds", "histogram",
         "From a task becoming available to a worker receiving it.");
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    out += fmt::format("tamma_task_pickup_latency_seconds_bucket{{le=\"{}\"}} {}\n",
                       kLatencyBuckets[i], latency_buckets_[i]);
  }
  out +=
      fmt::format("tamma_task_pickup_latency_seconds_bucket{{le=\"+Inf\"}} {}\n", latency_count_);
  out += fmt::format("tamma_task_pickup_latency_seconds_sum {}\n", latency_sum_);
  out += fmt::format("tamma_task_pickup_latency_seconds_count {}\n", latency_count_);
  return out;
}

}  // namespace tamma::orchestrator
