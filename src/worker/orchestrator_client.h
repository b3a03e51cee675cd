#pragma once
// The worker's side of the orchestrator protocol (docs/protocol.md): typed calls over libcurl,
// one client per thread (a client is not shared: it owns one curl handle and its connection).
//
// Every call throws OrchestratorError when it does not succeed, with the HTTP status (0 when
// no answer came back) and whether trying again can help; Interrupted when the StopSignal it
// was given fired first. Tokens go in the Authorization header only: never in a URL, an
// error message or a log line.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "protocol/wire.h"
#include "worker/backoff.h"

namespace tamma::worker {

namespace wire = protocol::wire;

// A request the orchestrator refused, or one that got no answer.
class OrchestratorError : public Error {
 public:
  OrchestratorError(long status, std::string code, const std::string& message, bool retryable,
                    std::optional<std::uint64_t> log_length = std::nullopt);

  [[nodiscard]] long status() const { return status_; }  // 0: no HTTP answer
  // 401/403: the token is not (or no longer) good for this.
  [[nodiscard]] bool unauthorized() const { return status_ == 401 || status_ == 403; }
  // 409 lease_lost: the attempt is no longer ours; stop working on it.
  [[nodiscard]] bool lease_lost() const { return status_ == 409 && code() == "lease_lost"; }
  // Lease lost, token refused, or the task gone (404): retrying this attempt is pointless.
  [[nodiscard]] bool ends_the_attempt() const {
    return lease_lost() || unauthorized() || status_ == 404;
  }
  // The log length the orchestrator holds, on a log append it refused.
  [[nodiscard]] std::optional<std::uint64_t> log_length() const { return log_length_; }

 private:
  long status_;
  std::optional<std::uint64_t> log_length_;
};

// A StopSignal fired while the request was in flight (or before it started).
class Interrupted : public Error {
 public:
  Interrupted() : Error(ErrorKind::kCancelled, "interrupted", "interrupted by shutdown") {}
};

struct WorkerCredentials {
  std::string worker_id;
  std::string token;  // the per-worker token from registration; never logged
};

// The state a fenced write was accepted in ("running", "cancel_requested"): a cancel request
// is seen on the next log flush instead of waiting for a heartbeat.
struct FencedAnswer {
  std::string task_state;
  // complete/fail sent with "next": the worker's next task, claimed with the report.
  std::optional<wire::Assignment> next;
};

struct LogAppendAnswer {
  enum class Kind {
    kAccepted,  // `length` is the log's new length
    kRewind,    // the orchestrator holds other bytes at that offset, or fewer than it: resend
                // from `length`
    kTooLarge,  // the body was over its limit; send smaller pieces
  } kind = Kind::kAccepted;
  std::uint64_t length = 0;
  std::string task_state;
};

struct ClientTimeouts {
  std::chrono::milliseconds connect{10000};
  std::chrono::milliseconds request{30000};
  std::chrono::milliseconds poll_margin{15000};  // on top of the long-poll wait
};

// The orchestrators a worker may talk to: one URL, or several replicas on one database as
// "URL1,URL2,...". Every client made from the same list follows the same one; a call that could
// not reach it, or that a proxy answered 502/503/504 for, moves them all on to the next, so the
// retry (with backoff, as for any unreachable orchestrator) goes elsewhere. Thread-safe.
class OrchestratorEndpoints {
 public:
  // The shared instance for this list; throws Error(kConfig) when it holds no URL.
  static std::shared_ptr<OrchestratorEndpoints> shared(const std::string& list);
  explicit OrchestratorEndpoints(std::vector<std::string> urls);

  [[nodiscard]] std::string current() const;
  // `url` failed: when it is still the current one, the next becomes current.
  void failed(const std::string& url);
  [[nodiscard]] std::size_t size() const { return urls_.size(); }

 private:
  std::vector<std::string> urls_;
  mutable std::mutex mutex_;
  std::size_t current_ = 0;
};

class OrchestratorClient {
 public:
  // `base_url`: one URL or a comma-separated list (OrchestratorEndpoints). `ca_file`: PEM
  // certificates an https:// orchestrator's chain must lead to; empty: the system's store. The
  // orchestrator's certificate and name are always verified.
  explicit OrchestratorClient(std::string base_url, ClientTimeouts timeouts = {},
                              std::string ca_file = {});
  ~OrchestratorClient();
  OrchestratorClient(const OrchestratorClient&) = delete;
  OrchestratorClient& operator=(const OrchestratorClient&) = delete;

  // The orchestrator the next call goes to.
  [[nodiscard]] std::string base_url() const { return endpoints_->current(); }

  wire::RegisterResponse register_worker(const std::string& registration_token,
                                         const wire::Capabilities& capabilities,
                                         const StopSignal* stop = nullptr);
  wire::HeartbeatResponse heartbeat(const WorkerCredentials& worker,
                                    const wire::HeartbeatRequest& request,
                                    const StopSignal* stop = nullptr);
  // A long poll: the assignment, or nullopt when `wait` passed with nothing to do.
  std::optional<wire::Assignment> poll(const WorkerCredentials& worker,
                                       std::chrono::milliseconds wait,
                                       const StopSignal* stop = nullptr);
  void unregister(const WorkerCredentials& worker, const StopSignal* stop = nullptr);

  FencedAnswer started(const WorkerCredentials& worker, const std::string& task_id,
                       const wire::Fence& fence, const StopSignal* stop = nullptr);
  FencedAnswer progress(const WorkerCredentials& worker, const std::string& task_id,
                        const wire::ProgressRequest& request, const StopSignal* stop = nullptr);
  // Appends raw bytes at `offset`; a mismatch or a gap is an answer (kRewind), not an error.
  LogAppendAnswer append_log(const WorkerCredentials& worker, const std::string& task_id,
                             const wire::Fence& fence, std::uint64_t offset, std::string_view data,
                             const StopSignal* stop = nullptr);
  FencedAnswer complete(const WorkerCredentials& worker, const std::string& task_id,
                        const wire::CompleteRequest& request, const StopSignal* stop = nullptr);
  FencedAnswer fail(const WorkerCredentials& worker, const std::string& task_id,
                    const wire::FailRequest& request, const StopSignal* stop = nullptr);
  // Uploads one artifact of the attempt as raw bytes; `name` is its path relative to the
  // workspace. Returns the SHA-256 the orchestrator computed of what it stored.
  std::string upload_artifact(const WorkerCredentials& worker, const std::string& task_id,
                              const wire::Fence& fence, const std::string& name, std::string bytes,
                              const StopSignal* stop = nullptr);

 private:
  struct Answer {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // names in lower case
  };
  struct Call {
    const char* method = "POST";
    std::string path;  // after the base URL, with its query string
    std::string body;
    const char* content_type = "application/json";
    const std::string* bearer = nullptr;
    std::chrono::milliseconds timeout{0};
  };

  Answer send(const Call& call, const StopSignal* stop);
  // Throws OrchestratorError for anything but 2xx.
  Answer expect_success(const Call& call, const StopSignal* stop);
  FencedAnswer fenced_json(const WorkerCredentials& worker, const std::string& task_id,
                           const char* what, const nlohmann::json& body, const StopSignal* stop);
  std::string escape(std::string_view text);

  std::shared_ptr<OrchestratorEndpoints> endpoints_;
  ClientTimeouts timeouts_;
  std::string ca_file_;
  void* easy_ = nullptr;   // CURL*
  void* multi_ = nullptr;  // CURLM*
};

// Builds the OrchestratorError for an answer that is not a success.
OrchestratorError refusal_from(long status, const std::string& body);

}  // namespace tamma::worker
