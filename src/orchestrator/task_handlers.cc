// The worker's writes about a task it holds: started, progress, logs, artifacts, complete, fail.
// Every one is fenced by (attempt, leaseId): a worker whose lease was lost gets 409 and stops.

#include <fstream>

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include "orchestrator/core.h"

namespace tamma::orchestrator {
namespace {

constexpr const char* kTasks = "/api/v1/tasks";

// The state rides along on every fenced answer, so a worker streaming logs learns of a cancel
// request without waiting for its next heartbeat.
Response fenced_ok(unsigned status, const nlohmann::json& body, const FenceOutcome& outcome) {
  Response r = Response::json(status, body);
  r.headers.emplace_back("X-Tamma-Task-State", std::string(wire::to_string(outcome.state)));
  return r;
}

std::uint64_t query_uint(const Request& request, const std::string& name, bool required,
                         std::uint64_t fallback = 0) {
  auto it = request.query.find(name);
  if (it == request.query.end()) {
    if (required) throw wire::WireError(name, "is required in the query string");
    return fallback;
  }
  try {
    std::size_t used = 0;
    auto value = std::stoull(it->second, &used);
    if (used != it->second.size() || it->second.front() == '-') throw std::invalid_argument(name);
    return value;
  } catch (const std::exception&) {
    throw wire::WireError(name, "expected a non-negative integer, got '" + it->second + "'");
  }
}

// The fence of a request whose body is not JSON (raw logs, artifacts): from the query string.
wire::Fence query_fence(const Request& request) {
  wire::Fence fence;
  auto attempt = query_uint(request, "attempt", true);
  if (attempt < 1 || attempt > 1'000'000) throw wire::WireError("attempt", "must be at least 1");
  fence.attempt = static_cast<int>(attempt);
  auto it = request.query.find("leaseId");
  if (it == request.query.end() || it->second.empty()) {
    throw wire::WireError("leaseId", "is required in the query string");
  }
  fence.lease_id = it->second;
  return fence;
}

void started(Core& core, Request& request, const ExchangePtr& exchange) {
  std::string worker = core.require_worker(request);
  Store::ActorScope as(core.store, Actor::worker(worker, request.remote_address));
  const std::string& id = request.params.at(0);
  auto body = wire::started_request_from_json(json_body(request));
  auto outcome = core.store.started(id, worker, body.fence);
  Core::check_fence(outcome, id);
  exchange->reply(fenced_ok(200, {{"state", wire::to_string(outcome.state)}}, outcome));
}

void progress(Core& core, Request& request, const ExchangePtr& exchange) {
  std::string worker = core.require_worker(request);
  Store::ActorScope as(core.store, Actor::worker(worker, request.remote_address));
  const std::string& id = request.params.at(0);
  auto body = wire::progress_request_from_json(json_body(request));
  auto outcome = core.store.progress(id, worker, body);
  Core::check_fence(outcome, id);
  exchange->reply(fenced_ok(200, {{"state", wire::to_string(outcome.state)}}, outcome));
}

bool is_json(const Request& request) {
  return request.content_type.rfind("application/json", 0) == 0;
}

// "bytes START-END/TOTAL" or "bytes START-END/*": the offset GitLab-style clients send.
std::optional<std::uint64_t> content_range_start(const std::string& header) {
  constexpr std::string_view kUnit = "bytes ";
  if (header.rfind(kUnit, 0) != 0) {
    throw wire::WireError("Content-Range", "expected 'bytes START-END/TOTAL'");
  }
  std::string rest = header.substr(kUnit.size());
  auto dash = rest.find('-');
  try {
    std::size_t used = 0;
    auto start = std::stoull(rest.substr(0, dash), &used);
    if (used != dash) throw std::invalid_argument("start");
    return start;
  } catch (const std::exception&) {
    throw wire::WireError("Content-Range", "expected 'bytes START-END/TOTAL'");
  }
}

void append_log(Core& core, Request& request, const ExchangePtr& exchange) {
  std::string worker = core.require_worker(request);
  Store::ActorScope as(core.store, Actor::worker(worker, request.remote_address));
  const std::string& id = request.params.at(0);
  wire::Fence fence;
  std::uint64_t offset = 0;
  std::string json_data;
  std::string_view data;
  if (is_json(request)) {
    auto body = wire::log_append_request_from_json(json_body(request));
    fence = body.fence;
    offset = body.offset;
    json_data = std::move(body.data);
    data = json_data;
  } else {
    fence = query_fence(request);
    if (request.query.count("offset")) {
      offset = query_uint(request, "offset", true);
    } else if (!request.content_range.empty()) {
      offset = *content_range_start(request.content_range);
    } else {
      throw wire::WireError("offset", "is required in the query string (or Content-Range)");
    }
    data = request.body;
  }
  auto outcome = core.store.append_log(id, worker, fence, offset, data, core.config.max_log_bytes);
  Core::check_fence(outcome.fence, id);
  using Kind = LogAppendOutcome::Kind;
  std::string length = std::to_string(outcome.length);
  auto refusal = [&](unsigned status, const char* code, const std::string& message) {
    wire::ErrorBody body;
    body.code = code;
    body.message = message;
    body.length = outcome.length;
    HttpError error(status, std::move(body));
    error.headers.emplace_back("X-Tamma-Log-Length", length);
    // The write passed the fence: like every fenced answer, it says the task's state.
    error.headers.emplace_back("X-Tamma-Task-State",
                               std::string(wire::to_string(outcome.fence.state)));
    // As GitLab answers a trace PATCH that does not continue the trace: what is held.
    error.headers.emplace_back("Range", "0-" + length);
    return error;
  };
  switch (outcome.kind) {
    case Kind::kGap:
      throw refusal(416, "log_offset_gap",
                    "offset " + std::to_string(offset) + " is past the log's end at " + length +
                        "; resend from there");
    case Kind::kMismatch:
      throw refusal(409, "log_mismatch",
                    "the bytes from offset " + std::to_string(offset) +
                        " differ from those already stored; resend from " + length);
    case Kind::kTooLarge:
      throw refusal(413, "log_too_large",
                    "the log of one attempt is limited to " +
                        std::to_string(core.config.max_log_bytes) + " bytes");
    case Kind::kAppended:
      core.log_followers.notify(id);
      core.update_gauges();
      break;
    case Kind::kDuplicate:
      break;
  }
  Response r =
      fenced_ok(200, wire::to_json(wire::LogAppendResponse{outcome.length}), outcome.fence);
  r.headers.emplace_back("X-Tamma-Log-Length", length);
  exchange->reply(std::move(r));
}

// A result closes its attempt's log for good: while the log is shorter than the worker says
// it sent (an append lost on the way, an orchestrator restored from an older state), the
// result waits, 409 log_incomplete with the length held, and the worker sends the rest first.
// Only the running attempt is judged; a stale fence gets its own answer from the store.
void require_whole_log(Core& core, const std::string& id, const wire::Fence& fence,
                       const wire::LogSummary& log) {
  if (!log.bytes) return;
  auto held = core.store.read_log(id, fence.attempt, 0, 0);
  if (!held || !held->open || held->attempt != fence.attempt || held->length >= *log.bytes) {
    return;
  }
  const std::string length = std::to_string(held->length);
  wire::ErrorBody body;
  body.code = "log_incomplete";
  body.message = "the log of attempt " + std::to_string(fence.attempt) + " holds " + length +
                 " of the " + std::to_string(*log.bytes) +
                 " bytes sent; append the rest from there, then report again";
  body.length = held->length;
  HttpError error(409, std::move(body));
  error.headers.emplace_back("X-Tamma-Log-Length", length);
  // Like every answer to a fenced write: what the task does now (a cancel may be pending).
  if (auto task = core.store.task(id)) {
    error.headers.emplace_back("X-Tamma-Task-State", std::string(wire::to_string(task->state)));
  }
  throw error;
}

// A report that asks for the worker's next task ("next": true) claims it in the report's own
// transaction, unless the worker may not take tasks now (draining, gone, this process
// shutting down); the slot count is checked again inside that transaction.
std::optional<NextClaim> next_claim_for(Core& core, const std::string& worker, bool asked) {
  if (!asked || core.shutting_down) return std::nullopt;
  auto info = core.store.worker(worker);
  if (!info || info->gone || info->draining || info->drain_requested) return std::nullopt;
  return NextClaim{std::move(*info), random_hex(16), core.config.lease_ttl};
}

// The report's answer, with the next assignment when one was claimed.
void reply_to_report(Core& core, const ExchangePtr& exchange, const FenceOutcome& outcome) {
  wire::ReportAnswer answer{outcome.state, std::nullopt};
  if (outcome.next) answer.next = outcome.next->assignment;
  Response response = fenced_ok(200, wire::to_json(answer), outcome);
  if (outcome.next) {
    core.send_assignment(exchange, std::move(response), *outcome.next);
  } else {
    exchange->reply(std::move(response));
  }
}

void complete(Core& core, Request& request, const ExchangePtr& exchange) {
  std::string worker = core.require_worker(request);
  Store::ActorScope as(core.store, Actor::worker(worker, request.remote_address));
  const std::string& id = request.params.at(0);
  auto body = wire::complete_request_from_json(json_body(request));
  require_whole_log(core, id, body.fence, body.log);
  const auto next = next_claim_for(core, worker, body.next);
  auto outcome = core.store.complete(id, worker, body, next ? &*next : nullptr);
  Core::check_fence(outcome, id);
  spdlog::info("task {} attempt {} {} on worker {}", id, outcome.attempt,
               wire::to_string(outcome.state), worker);
  core.log_followers.notify(id);
  core.update_gauges();
  reply_to_report(core, exchange, outcome);
}

void fail(Core& core, Request& request, const ExchangePtr& exchange) {
  std::string worker = core.require_worker(request);
  Store::ActorScope as(core.store, Actor::worker(worker, request.remote_address));
  const std::string& id = request.params.at(0);
  auto body = wire::fail_request_from_json(json_body(request));
  require_whole_log(core, id, body.fence, body.log);
  const auto next = next_claim_for(core, worker, body.next);
  auto outcome = core.store.fail(id, worker, body, core.retry_policy(), next ? &*next : nullptr);
  Core::check_fence(outcome, id);
  spdlog::info("task {} attempt {} failed on worker {} ({}): now {}", id, outcome.attempt, worker,
               body.error.code, wire::to_string(outcome.state));
  core.log_followers.notify(id);
  if (outcome.state == wire::TaskState::kRetryWait && core.poke_reaper) core.poke_reaper();
  core.update_gauges();
  reply_to_report(core, exchange, outcome);
}

// An artifact is named by its path relative to the task's workspace ("dist/app.tar.gz"):
// segments of letters, digits and . _ -, none of them "." or "..", so nothing can climb out.
std::string checked_artifact_name(const Request& request) {
  auto it = request.query.find("name");
  if (it == request.query.end() || it->second.empty()) {
    throw wire::WireError("name", "is required in the query string");
  }
  const std::string& name = it->second;
  if (name.size() > 1024) throw wire::WireError("name", "must be at most 1024 characters");
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = name.find('/', start);
    const std::string_view segment =
        std::string_view(name).substr(start, slash == std::string::npos ? slash : slash - start);
    if (segment.empty() || segment == "." || segment == ".." || segment.size() > 200) {
      throw wire::WireError("name",
                            "must be a relative path of non-empty segments (not . or ..) of at "
                            "most 200 characters each");
    }
    for (char c : segment) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-';
      if (!ok) throw wire::WireError("name", "may contain only letters, digits, . _ - and /");
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return name;
}

std::string file_sha256(const std::filesystem::path& file, std::uint64_t* size) {
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw Error(ErrorKind::kInfrastructure, "storage_unavailable", "cannot read the staged upload",
                true);
  std::unique_ptr<EVP_MD_CTX, decltype(&::EVP_MD_CTX_free)> ctx(::EVP_MD_CTX_new(),
                                                                ::EVP_MD_CTX_free);
  ::EVP_DigestInit_ex(ctx.get(), ::EVP_sha256(), nullptr);
  std::vector<char> buffer(1 << 16);
  *size = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    auto got = in.gcount();
    if (got > 0) {
      ::EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<std::size_t>(got));
      *size += static_cast<std::uint64_t>(got);
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  ::EVP_DigestFinal_ex(ctx.get(), digest, &length);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kDigits[digest[i] >> 4]);
    out.push_back(kDigits[digest[i] & 0xf]);
  }
  return out;
}

void upload_artifact(Core& core, Request& request, const ExchangePtr& exchange) {
  std::string worker = core.require_worker(request);
  Store::ActorScope as(core.store, Actor::worker(worker, request.remote_address));
  const std::string& id = request.params.at(0);
  wire::Fence fence = query_fence(request);
  wire::ArtifactInfo info;
  info.name = checked_artifact_name(request);
  info.attempt = fence.attempt;
  info.sha256 = file_sha256(request.body_file, &info.size);
  // The store keeps the bytes (a file under the data directory with SQLite, chunks in the
  // database with PostgreSQL) and records them in the fenced transaction: a refused upload
  // leaves nothing behind.
  auto outcome = core.store.put_artifact(id, worker, fence, info, request.body_file);
  Core::check_fence(outcome, id);
  spdlog::info("task {} attempt {}: artifact {} ({} bytes) from worker {}", id, fence.attempt,
               info.name, info.size, worker);
  exchange->reply(fenced_ok(201, wire::to_json(info), outcome));
}

}  // namespace

void add_task_routes(Router& router, Core& core) {
  using V = http::verb;
  auto bind = [&core](void (*fn)(Core&, Request&, const ExchangePtr&)) {
    return [&core, fn](Request& r, const ExchangePtr& e) { fn(core, r, e); };
  };
  std::string base = std::string(kTasks) + "/{id}";
  router.add(V::post, base + "/started", BodyKind::kSmall, Access::kWorker, bind(started));
  router.add(V::post, base + "/progress", BodyKind::kSmall, Access::kWorker, bind(progress));
  router.add(V::post, base + "/logs", BodyKind::kSmall, Access::kWorker, bind(append_log));
  router.add(V::post, base + "/complete", BodyKind::kSmall, Access::kWorker, bind(complete));
  router.add(V::post, base + "/fail", BodyKind::kSmall, Access::kWorker, bind(fail));
  router.add(V::post, base + "/artifacts", BodyKind::kUpload, Access::kWorker,
             bind(upload_artifact));
}

}  // namespace tamma::orchestrator
