#include "worker/orchestrator_client.h"
#include "common/json_parse.h"

#include "worker/curl_library.h"

#include <algorithm>
#include <cctype>
#include <mutex>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace tamma::worker {
namespace {

using nlohmann::json;

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  std::string_view line(data, size * count);
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return size * count;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) {
    value.remove_suffix(1);
  }
  (*static_cast<std::map<std::string, std::string>*>(user))[name] = std::string(value);
  return size * count;
}

bool retryable_status(long status) {
  // No answer, a timeout, throttling or a server-side fault: the same request may succeed later.
  return status == 0 || status == 408 || status == 429 || status >= 500;
}

json parse_answer(const std::string& body, long status, const char* what) {
  try {
    return parse_json_text(body);
  } catch (const JsonTextError& e) {
    throw OrchestratorError(
        status, "malformed_answer",
        fmt::format("the orchestrator answered {} to {} with a body that is not "
                    "JSON: {}",
                    status, what, e.what()),
        true);
  }
}

// A wire document that does not match its schema is the orchestrator's fault, and a newer or
// restarted one may answer properly: retryable, with the member named.
template <typename Fn>
auto decode(const char* what, long status, Fn fn) {
  try {
    return fn();
  } catch (const wire::WireError& e) {
    throw OrchestratorError(status, "malformed_answer",
                            fmt::format("the orchestrator's answer to {} does not match the "
                                        "protocol: {}",
                                        what, e.what()),
                            true);
  }
}

std::string header_or_empty(const std::map<std::string, std::string>& headers,
                            const std::string& name) {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

}  // namespace

OrchestratorError::OrchestratorError(long status, std::string code, const std::string& message,
                                     bool retryable, std::optional<std::uint64_t> log_length)
    : Error(status == 401 || status == 403 ? ErrorKind::kConfig : ErrorKind::kInfrastructure,
            std::move(code), message, retryable),
      status_(status),
      log_length_(log_length) {}

OrchestratorError refusal_from(long status, const std::string& body) {
  std::string code = "http_" + std::to_string(status);
  std::string message = "HTTP " + std::to_string(status);
  std::optional<std::uint64_t> length;
  try {
    auto error = wire::error_body_from_json(parse_json_text(body));
    code = error.code;
    message += " " + error.code + ": " + error.message;
    length = error.length;
  } catch (const std::exception&) {
    // Not the protocol's error body (a proxy's page, say): quote the start of it instead.
    if (!body.empty()) message += ": " + body.substr(0, 200);
  }
  return OrchestratorError(status, std::move(code), message, retryable_status(status), length);
}

std::shared_ptr<OrchestratorEndpoints> OrchestratorEndpoints::shared(const std::string& list) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<OrchestratorEndpoints>> known;
  std::lock_guard lock(mutex);
  if (auto existing = known[list].lock()) return existing;
  std::vector<std::string> urls;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = list.find(',', start);
    std::string url = list.substr(start, comma == std::string::npos ? comma : comma - start);
    while (!url.empty() && (url.back() == ' ' || url.back() == '/')) url.pop_back();
    while (!url.empty() && url.front() == ' ') url.erase(url.begin());
    if (!url.empty()) urls.push_back(std::move(url));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (urls.empty()) {
    throw Error(ErrorKind::kConfig, "missing_orchestrator_url", "no orchestrator URL given");
  }
  auto endpoints = std::make_shared<OrchestratorEndpoints>(std::move(urls));
  known[list] = endpoints;
  return endpoints;
}

OrchestratorEndpoints::OrchestratorEndpoints(std::vector<std::string> urls)
    : urls_(std::move(urls)) {}

std::string OrchestratorEndpoints::current() const {
  std::lock_guard lock(mutex_);
  return urls_[current_];
}

void OrchestratorEndpoints::failed(const std::string& url) {
  std::lock_guard lock(mutex_);
  if (urls_.size() < 2 || urls_[current_] != url) return;  // another call moved on already
  current_ = (current_ + 1) % urls_.size();
  spdlog::warn("orchestrator {} unreachable; trying {} next", url, urls_[current_]);
}

OrchestratorClient::OrchestratorClient(std::string base_url, ClientTimeouts timeouts,
                                       std::string ca_file)
    : endpoints_(OrchestratorEndpoints::shared(base_url)),
      timeouts_(timeouts),
      ca_file_(std::move(ca_file)) {
  const CurlLibrary& curl = curl_library();
  easy_ = curl.easy_init();
  multi_ = curl.multi_init();
  if (easy_ == nullptr || multi_ == nullptr) {
    if (easy_ != nullptr) curl.easy_cleanup(easy_);
    if (multi_ != nullptr) curl.multi_cleanup(multi_);
    throw Error(ErrorKind::kInfrastructure, "curl_init_failed", "libcurl could not start");
  }
}

OrchestratorClient::~OrchestratorClient() {
  curl_library().multi_cleanup(multi_);
  curl_library().easy_cleanup(easy_);
}

std::string OrchestratorClient::escape(std::string_view text) {
  char* escaped = curl_library().easy_escape(easy_, text.data(), static_cast<int>(text.size()));
  if (escaped == nullptr) throw std::bad_alloc();
  std::string out(escaped);
  curl_library().free(escaped);
  return out;
}

OrchestratorClient::Answer OrchestratorClient::send(const Call& call, const StopSignal* stop) {
  if (stop != nullptr && stop->fired()) throw Interrupted();
  Answer answer;
  CURL* curl = easy_;
  curl_library().easy_reset(curl);
  const std::string base_url = endpoints_->current();
  const std::string url = base_url + call.path;
  curl_library().easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_library().easy_setopt(curl, CURLOPT_CUSTOMREQUEST, call.method);
  curl_library().easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_library().easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                             static_cast<long>(timeouts_.connect.count()));
  auto timeout = call.timeout.count() > 0 ? call.timeout : timeouts_.request;
  curl_library().easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_library().easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_library().easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_library().easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!ca_file_.empty()) curl_library().easy_setopt(curl, CURLOPT_CAINFO, ca_file_.c_str());
  curl_library().easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_library().easy_setopt(curl, CURLOPT_WRITEDATA, &answer.body);
  curl_library().easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_library().easy_setopt(curl, CURLOPT_HEADERDATA, &answer.headers);
  if (std::string_view(call.method) == "POST" || !call.body.empty()) {
    curl_library().easy_setopt(curl, CURLOPT_POSTFIELDS, call.body.data());
    curl_library().easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                               static_cast<curl_off_t>(call.body.size()));
  }
  curl_slist* headers = nullptr;
  std::string authorization;
  if (call.bearer != nullptr) authorization = "Authorization: Bearer " + *call.bearer;
  std::string content_type = std::string("Content-Type: ") + call.content_type;
  for (const std::string* h : {&authorization, &content_type}) {
    if (!h->empty()) headers = curl_library().slist_append(headers, h->c_str());
  }
  // A large body would otherwise wait for "100 Continue" first, a round trip for nothing.
  headers = curl_library().slist_append(headers, "Expect:");
  headers = curl_library().slist_append(headers, "Accept: application/json");
  curl_library().easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  struct Cleanup {
    curl_slist* headers;
    std::string* authorization;
    ~Cleanup() {
      curl_library().slist_free_all(headers);
      // The header text held a credential; do not leave it in freed heap memory.
      std::fill(authorization->begin(), authorization->end(), '\0');
    }
  } cleanup{headers, &authorization};

  if (curl_library().multi_add_handle(multi_, curl) != CURLM_OK) {
    throw Error(ErrorKind::kInfrastructure, "curl_failed", "curl_multi_add_handle failed");
  }
  CURLM* multi = multi_;
  std::uint64_t waker = 0;
  if (stop != nullptr) waker = stop->attach([multi] { curl_library().multi_wakeup(multi); });
  struct Detach {
    const StopSignal* stop;
    std::uint64_t id;
    CURLM* multi;
    CURL* curl;
    ~Detach() {
      if (stop != nullptr && id != 0) stop->detach(id);
      curl_library().multi_remove_handle(multi, curl);
    }
  } detach{stop, waker, multi, curl};

  int running = 1;
  for (;;) {
    CURLMcode mc = curl_library().multi_perform(multi, &running);
    if (mc != CURLM_OK) {
      throw Error(ErrorKind::kInfrastructure, "curl_failed",
                  std::string("curl_multi_perform: ") + curl_library().multi_strerror(mc));
    }
    if (running == 0) break;
    if (stop != nullptr && stop->fired()) throw Interrupted();
    mc = curl_library().multi_poll(multi, nullptr, 0, 1000, nullptr);
    if (mc != CURLM_OK) {
      throw Error(ErrorKind::kInfrastructure, "curl_failed",
                  std::string("curl_multi_poll: ") + curl_library().multi_strerror(mc));
    }
  }
  CURLcode rc = CURLE_OK;
  int left = 0;
  while (CURLMsg* msg = curl_library().multi_info_read(multi, &left)) {
    if (msg->msg == CURLMSG_DONE && msg->easy_handle == curl) rc = msg->data.result;
  }
  if (rc != CURLE_OK) {
    endpoints_->failed(base_url);
    throw OrchestratorError(
        0, "orchestrator_unreachable",
        fmt::format("{} {}{}: {}", call.method, base_url, call.path.substr(0, call.path.find('?')),
                    curl_library().easy_strerror(rc)),
        true);
  }
  curl_library().easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer.status);
  // A proxy in front that lost its upstream, or a replica that cannot reach the database.
  if (answer.status == 502 || answer.status == 503 || answer.status == 504) {
    endpoints_->failed(base_url);
  }
  return answer;
}

OrchestratorClient::Answer OrchestratorClient::expect_success(const Call& call,
                                                              const StopSignal* stop) {
  Answer answer = send(call, stop);
  if (answer.status >= 200 && answer.status < 300) return answer;
  auto error = refusal_from(answer.status, answer.body);
  // Say which call was refused: the orchestrator's words alone do not.
  throw OrchestratorError(
      error.status(), error.code(),
      fmt::format("{} {}: {}", call.method, call.path.substr(0, call.path.find('?')), error.what()),
      error.retryable(), error.log_length());
}

wire::RegisterResponse OrchestratorClient::register_worker(const std::string& registration_token,
                                                           const wire::Capabilities& capabilities,
                                                           const StopSignal* stop) {
  Call call;
  call.path = "/api/v1/workers/register";
  call.body = wire::to_json(wire::RegisterRequest{capabilities}).dump();
  call.bearer = &registration_token;
  auto answer = expect_success(call, stop);
  auto document = parse_answer(answer.body, answer.status, "register");
  return decode("register", answer.status,
                [&] { return wire::register_response_from_json(document); });
}

wire::HeartbeatResponse OrchestratorClient::heartbeat(const WorkerCredentials& worker,
                                                      const wire::HeartbeatRequest& request,
                                                      const StopSignal* stop) {
  Call call;
  call.path = "/api/v1/workers/" + escape(worker.worker_id) + "/heartbeat";
  call.body = wire::to_json(request).dump();
  call.bearer = &worker.token;
  auto answer = expect_success(call, stop);
  auto document = parse_answer(answer.body, answer.status, "heartbeat");
  return decode("heartbeat", answer.status,
                [&] { return wire::heartbeat_response_from_json(document); });
}

std::optional<wire::Assignment> OrchestratorClient::poll(const WorkerCredentials& worker,
                                                         std::chrono::milliseconds wait,
                                                         const StopSignal* stop) {
  Call call;
  call.path = "/api/v1/workers/" + escape(worker.worker_id) +
              "/poll?waitMs=" + std::to_string(std::max<std::int64_t>(wait.count(), 0));
  call.bearer = &worker.token;
  call.timeout = wait + timeouts_.poll_margin;
  auto answer = expect_success(call, stop);
  if (answer.status == 204) return std::nullopt;
  auto document = parse_answer(answer.body, answer.status, "poll");
  return decode("poll", answer.status, [&] { return wire::assignment_from_json(document); });
}

void OrchestratorClient::unregister(const WorkerCredentials& worker, const StopSignal* stop) {
  Call call;
  call.method = "DELETE";
  call.path = "/api/v1/workers/" + escape(worker.worker_id);
  call.bearer = &worker.token;
  expect_success(call, stop);
}

FencedAnswer OrchestratorClient::fenced_json(const WorkerCredentials& worker,
                                             const std::string& task_id, const char* what,
                                             const json& body, const StopSignal* stop) {
  Call call;
  call.path = "/api/v1/tasks/" + escape(task_id) + "/" + what;
  call.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  call.bearer = &worker.token;
  auto answer = expect_success(call, stop);
  FencedAnswer out{header_or_empty(answer.headers, "x-tamma-task-state"), std::nullopt};
  if (body.contains("next")) {
    // The report is in whatever this answer holds: an unreadable next assignment is only
    // logged (the orchestrator re-queues an assignment nobody acknowledges), never retried.
    try {
      out.next = wire::report_answer_from_json(parse_answer(answer.body, answer.status, what)).next;
    } catch (const std::exception& e) {
      spdlog::error("the answer to {} of task {} has an unreadable next assignment: {}", what,
                    task_id, e.what());
    }
  }
  return out;
}

FencedAnswer OrchestratorClient::started(const WorkerCredentials& worker,
                                         const std::string& task_id, const wire::Fence& fence,
                                         const StopSignal* stop) {
  return fenced_json(worker, task_id, "started", wire::to_json(wire::StartedRequest{fence}), stop);
}

FencedAnswer OrchestratorClient::progress(const WorkerCredentials& worker,
                                          const std::string& task_id,
                                          const wire::ProgressRequest& request,
                                          const StopSignal* stop) {
  return fenced_json(worker, task_id, "progress", wire::to_json(request), stop);
}

FencedAnswer OrchestratorClient::complete(const WorkerCredentials& worker,
                                          const std::string& task_id,
                                          const wire::CompleteRequest& request,
                                          const StopSignal* stop) {
  return fenced_json(worker, task_id, "complete", wire::to_json(request), stop);
}

FencedAnswer OrchestratorClient::fail(const WorkerCredentials& worker, const std::string& task_id,
                                      const wire::FailRequest& request, const StopSignal* stop) {
  return fenced_json(worker, task_id, "fail", wire::to_json(request), stop);
}

LogAppendAnswer OrchestratorClient::append_log(const WorkerCredentials& worker,
                                               const std::string& task_id, const wire::Fence& fence,
                                               std::uint64_t offset, std::string_view data,
                                               const StopSignal* stop) {
  Call call;
  // The raw form: task output is bytes, and JSON would have to escape (and could mangle) them.
  call.path = "/api/v1/tasks/" + escape(task_id) +
              "/logs?attempt=" + std::to_string(fence.attempt) +
              "&leaseId=" + escape(fence.lease_id) + "&offset=" + std::to_string(offset);
  call.body.assign(data);
  call.content_type = "application/octet-stream";
  call.bearer = &worker.token;
  Answer answer = send(call, stop);
  LogAppendAnswer out;
  out.task_state = header_or_empty(answer.headers, "x-tamma-task-state");
  if (answer.status >= 200 && answer.status < 300) {
    auto document = parse_answer(answer.body, answer.status, "a log append");
    out.length = decode("a log append", answer.status,
                        [&] { return wire::log_append_response_from_json(document).length; });
    return out;
  }
  auto error = refusal_from(answer.status, answer.body);
  const bool rewind =
      (answer.status == 409 && error.code() == "log_mismatch") || answer.status == 416;
  if (rewind && error.log_length()) {
    out.kind = LogAppendAnswer::Kind::kRewind;
    out.length = *error.log_length();
    return out;
  }
  if (answer.status == 413 && error.code() != "log_too_large") {
    // The request body was over the endpoint's limit (not the attempt's log): smaller pieces.
    out.kind = LogAppendAnswer::Kind::kTooLarge;
    return out;
  }
  throw OrchestratorError(error.status(), error.code(),
                          fmt::format("POST /api/v1/tasks/{}/logs: {}", task_id, error.what()),
                          error.retryable(), error.log_length());
}

std::string OrchestratorClient::upload_artifact(const WorkerCredentials& worker,
                                                const std::string& task_id,
                                                const wire::Fence& fence, const std::string& name,
                                                std::string bytes, const StopSignal* stop) {
  Call call;
  call.path = "/api/v1/tasks/" + escape(task_id) + "/artifacts?name=" + escape(name) +
              "&attempt=" + std::to_string(fence.attempt) + "&leaseId=" + escape(fence.lease_id);
  call.body = std::move(bytes);
  call.content_type = "application/octet-stream";
  call.bearer = &worker.token;
  auto answer = expect_success(call, stop);
  auto document = parse_answer(answer.body, answer.status, "an artifact upload");
  return decode("an artifact upload", answer.status,
                [&] { return document.at("sha256").get<std::string>(); });
}

}  // namespace tamma::worker
