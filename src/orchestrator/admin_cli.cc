#include "orchestrator/admin_cli.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "common/encoding.h"
#include "common/error.h"
#include "common/json_parse.h"
#include "orchestrator/http_client.h"
#include "protocol/wire.h"

namespace tamma::orchestrator {
namespace {

namespace wire = tamma::protocol::wire;
using nlohmann::json;

struct Connection {
  std::string url = "http://127.0.0.1:8080";
  std::string token;
  std::string ca_file;
};

void add_connection_options(CLI::App* cmd, Connection& c) {
  cmd->add_option("--url", c.url, "orchestrator base URL")
      ->envname("TAMMA_ORCHESTRATOR_URL")
      ->capture_default_str();
  cmd->add_option("--token", c.token, "admin token")->envname("TAMMA_TOKEN");
  cmd->add_option("--ca-file", c.ca_file, "PEM CA certificates for an https:// URL")
      ->envname("TAMMA_CA_FILE");
}

std::unique_ptr<HttpClient> client(const Connection& c) {
  if (c.token.empty()) {
    throw Error(ErrorKind::kConfig, "missing_token", "--token or TAMMA_TOKEN is required");
  }
  auto http = std::make_unique<HttpClient>(c.url, c.token);
  http->set_ca_file(c.ca_file);
  return http;
}

// A refused request as an Error carrying the orchestrator's own words.
[[noreturn]] void refused(const HttpResult& r) {
  std::string message = "HTTP " + std::to_string(r.status);
  try {
    auto body = wire::error_body_from_json(parse_json_text(r.body));
    message += " " + body.code + ": " + body.message;
    for (const auto& p : body.problems) message += "\n  " + p.path + ": " + p.message;
  } catch (const std::exception&) {
    if (!r.body.empty()) message += ": " + r.body.substr(0, 500);
  }
  throw Error(ErrorKind::kTaskFailed, "request_refused", message);
}

HttpResult expect(HttpResult r, std::initializer_list<long> ok) {
  for (long s : ok) {
    if (r.status == s) return r;
  }
  refused(r);
}

std::string read_input(const std::string& file) {
  if (file == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), {});
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::kConfig, "unreadable_task_file", "cannot read " + file);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void print_task(const wire::TaskView& t) {
  std::cout << "id:        " << t.id << "\n"
            << "type:      " << t.type << "\n"
            << "state:     " << wire::to_string(t.state) << "\n"
            << "attempt:   " << t.attempt << " (max retries " << t.max_retries << ")\n"
            << "priority:  " << t.priority << "\n";
  if (t.worker_id) std::cout << "worker:    " << *t.worker_id << "\n";
  if (t.progress.percent || t.progress.step) {
    std::cout << "progress:  "
              << (t.progress.percent ? fmt::format("{:.0f}% ", *t.progress.percent) : "")
              << t.progress.step.value_or("") << " " << t.progress.message.value_or("") << "\n";
  }
  if (t.retry_in_ms) std::cout << "retry in:  " << *t.retry_in_ms << " ms\n";
  std::cout << "created:   " << t.created_at << "\n";
  if (t.started_at) std::cout << "started:   " << *t.started_at << "\n";
  if (t.finished_at) std::cout << "finished:  " << *t.finished_at << "\n";
  if (t.error) {
    std::cout << "error:     " << t.error->code << ": " << t.error->message
              << (t.error->retryable ? " (retryable)" : "") << "\n";
  }
  for (const auto& a : t.artifacts) {
    std::cout << "artifact:  " << a.name << " (attempt " << a.attempt << ", " << a.size
              << " bytes, sha256 " << a.sha256 << ")\n";
  }
  if (t.result) std::cout << "result:\n" << t.result->dump(2) << "\n";
}

wire::TaskView wait_final(HttpClient& http, const std::string& id) {
  auto delay = std::chrono::milliseconds(50);
  while (true) {
    auto task = wire::task_view_from_json(
        expect(http.get("/api/v1/tasks/" + url_encode(id)), {200}).json());
    if (wire::is_final(task.state)) return task;
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(1000));
  }
}

}  // namespace

std::vector<AdminCommand> add_admin_commands(CLI::App& app) {
  std::vector<AdminCommand> commands;

  {
    auto* cmd = app.add_subcommand("submit", "submit a task spec; prints the new task id");
    struct Args {
      Connection c;
      std::string file;
      bool wait = false;
      int priority = 0;
      int max_retries = 3;
      std::vector<std::string> labels;
      std::string key;
    };
    auto args = std::make_shared<Args>();
    add_connection_options(cmd, args->c);
    cmd->add_option("TASK_FILE", args->file, "the task spec (JSON; - for stdin)")->required();
    cmd->add_flag("--wait", args->wait,
                  "wait for a final state; exit 0 only if the task succeeded");
    cmd->add_option("--priority", args->priority, "higher runs first")->capture_default_str();
    cmd->add_option("--max-retries", args->max_retries,
                    "re-runs after a lost worker or a retryable failure")
        ->capture_default_str();
    cmd->add_option("--label", args->labels,
                    "a label KEY=VALUE the worker must offer (repeatable)");
    cmd->add_option("--idempotency-key", args->key, "the same key returns the same task");
    commands.push_back(
        {cmd, [args] {
           json spec;
           try {
             spec = parse_json_text(read_input(args->file));
           } catch (const JsonTextError& e) {
             throw Error(ErrorKind::kConfig, "invalid_task_file",
                         args->file + " is not JSON: " + e.what());
           }
           wire::SubmitRequest req;
           req.task = spec;
           req.priority = args->priority;
           req.max_retries = args->max_retries;
           for (const auto& l : args->labels) {
             auto eq = l.find('=');
             if (eq == std::string::npos || eq == 0) {
               throw Error(ErrorKind::kConfig, "invalid_label",
                           "--label '" + l + "' is not KEY=VALUE");
             }
             req.labels[l.substr(0, eq)] = l.substr(eq + 1);
           }
           if (!args->key.empty()) req.idempotency_key = args->key;
           auto http = client(args->c);
           auto r = expect(http->post_json("/api/v1/tasks", wire::to_json(req)), {200, 201});
           auto task = wire::task_view_from_json(r.json());
           std::cout << task.id << std::endl;
           if (!args->wait) return kCliOk;
           auto final = wait_final(*http, task.id);
           std::cerr << "task " << final.id << " " << wire::to_string(final.state) << "\n";
           return final.state == wire::TaskState::kSucceeded ? kCliOk : kCliFailed;
         }});
  }
  {
    auto* cmd = app.add_subcommand("task", "show one task: state, attempt, worker, result");
    struct Args {
      Connection c;
      std::string id;
      bool json_out = false;
    };
    auto args = std::make_shared<Args>();
    add_connection_options(cmd, args->c);
    cmd->add_option("ID", args->id, "task id")->required();
    cmd->add_flag("--json", args->json_out, "print the task as JSON");
    commands.push_back({cmd, [args] {
                          auto http = client(args->c);
                          auto r =
                              expect(http->get("/api/v1/tasks/" + url_encode(args->id)), {200});
                          if (args->json_out) {
                            std::cout << r.json().dump(2) << std::endl;
                          } else {
                            print_task(wire::task_view_from_json(r.json()));
                          }
                          return kCliOk;
                        }});
  }
  {
    auto* cmd = app.add_subcommand("tasks", "list tasks, newest first");
    struct Args {
      Connection c;
      std::string state;
      int limit = 100;
      bool json_out = false;
    };
    auto args = std::make_shared<Args>();
    add_connection_options(cmd, args->c);
    cmd->add_option("--state", args->state, "only tasks in this state");
    cmd->add_option("--limit", args->limit, "at most this many (1-1000)")->capture_default_str();
    cmd->add_flag("--json", args->json_out, "print the list as JSON");
    commands.push_back({cmd, [args] {
                          auto http = client(args->c);
                          std::string path = "/api/v1/tasks?limit=" + std::to_string(args->limit);
                          if (!args->state.empty()) path += "&state=" + url_encode(args->state);
                          auto r = expect(http->get(path), {200});
                          if (args->json_out) {
                            std::cout << r.json().dump(2) << std::endl;
                            return kCliOk;
                          }
                          auto list = wire::task_list_from_json(r.json());
                          std::cout << fmt::format("{:<26} {:<17} {:>7} {:<14} {}\n", "ID", "STATE",
                                                   "ATTEMPT", "TYPE", "WORKER");
                          for (const auto& t : list.tasks) {
                            std::cout << fmt::format("{:<26} {:<17} {:>7} {:<14} {}\n", t.id,
                                                     wire::to_string(t.state), t.attempt, t.type,
                                                     t.worker_id.value_or("-"));
                          }
                          return kCliOk;
                        }});
  }
  {
    auto* cmd = app.add_subcommand("cancel", "cancel a task (a running one at its next heartbeat)");
    struct Args {
      Connection c;
      std::string id;
    };
    auto args = std::make_shared<Args>();
    add_connection_options(cmd, args->c);
    cmd->add_option("ID", args->id, "task id")->required();
    commands.push_back(
        {cmd, [args] {
           auto http = client(args->c);
           auto r =
               expect(http->request("POST", "/api/v1/tasks/" + url_encode(args->id) + "/cancel"),
                      {200, 202});
           auto task = wire::task_view_from_json(r.json());
           std::cout << task.id << " " << wire::to_string(task.state) << std::endl;
           return kCliOk;
         }});
  }
  {
    auto* cmd = app.add_subcommand("workers", "list registered workers");
    struct Args {
      Connection c;
      bool all = false;
      bool json_out = false;
    };
    auto args = std::make_shared<Args>();
    add_connection_options(cmd, args->c);
    cmd->add_flag("--all", args->all, "include unregistered workers");
    cmd->add_flag("--json", args->json_out, "print the list as JSON");
    commands.push_back(
        {cmd, [args] {
           auto http = client(args->c);
           auto r = expect(http->get(std::string("/api/v1/workers") + (args->all ? "?all=1" : "")),
                           {200});
           if (args->json_out) {
             std::cout << r.json().dump(2) << std::endl;
             return kCliOk;
           }
           auto list = wire::worker_list_from_json(r.json());
           std::cout << fmt::format("{:<26} {:<9} {:>5} {:>6} {:>10} {}\n", "ID", "STATE", "SLOTS",
                                    "TASKS", "SEEN(ms)", "TYPES");
           for (const auto& w : list.workers) {
             std::string types;
             for (const auto& t : w.capabilities.task_types) {
               types += (types.empty() ? "" : ",") + t;
             }
             std::cout << fmt::format("{:<26} {:<9} {:>5} {:>6} {:>10} {}\n", w.id,
                                      wire::to_string(w.state), w.capabilities.slots,
                                      w.leases.size(), w.last_seen_ago_ms, types);
           }
           return kCliOk;
         }});
  }
  {
    auto* cmd = app.add_subcommand("logs", "print a task's log (of its current attempt)");
    struct Args {
      Connection c;
      std::string id;
      bool follow = false;
      int attempt = 0;
    };
    auto args = std::make_shared<Args>();
    add_connection_options(cmd, args->c);
    cmd->add_option("ID", args->id, "task id")->required();
    cmd->add_flag("--follow,-f", args->follow, "keep printing until the attempt ends");
    cmd->add_option("--attempt", args->attempt, "an earlier attempt's log");
    commands.push_back({cmd, [args] {
                          auto http = client(args->c);
                          std::uint64_t offset = 0;
                          std::string attempt =
                              args->attempt > 0 ? "&attempt=" + std::to_string(args->attempt) : "";
                          while (true) {
                            std::string path = "/api/v1/tasks/" + url_encode(args->id) +
                                               "/logs?offset=" + std::to_string(offset) + attempt +
                                               (args->follow ? "&wait=1" : "");
                            auto r = expect(http->get(path, std::chrono::minutes(2)), {200});
                            std::fwrite(r.body.data(), 1, r.body.size(), stdout);
                            std::fflush(stdout);
                            offset += r.body.size();
                            // Pin the attempt so a retry's fresh log is not spliced onto this one.
                            if (attempt.empty())
                              attempt = "&attempt=" + r.header("x-tamma-log-attempt");
                            std::uint64_t length = std::stoull(r.header("x-tamma-log-length"));
                            bool open = r.header("x-tamma-log-open") == "true";
                            if (offset >= length && (!args->follow || !open)) return kCliOk;
                          }
                        }});
  }
  {
    auto* cmd = app.add_subcommand("audit", "print the audit trail, oldest first");
    struct Args {
      Connection c;
      std::string task;
      std::string since;
      std::int64_t after = 0;
      int limit = 100;
      bool json_out = false;
    };
    auto args = std::make_shared<Args>();
    add_connection_options(cmd, args->c);
    cmd->add_option("--task", args->task, "only records about this task");
    cmd->add_option("--since", args->since,
                    "only records from this time on (RFC 3339, or milliseconds since the epoch)");
    cmd->add_option("--after", args->after, "only records after this seq (a page's next)");
    cmd->add_option("--limit", args->limit, "at most this many (1-1000)")->capture_default_str();
    cmd->add_flag("--json", args->json_out, "print the page as JSON");
    commands.push_back(
        {cmd, [args] {
           auto http = client(args->c);
           // The orchestrator checks every parameter and names the one it refuses.
           std::string path = "/api/v1/audit?limit=" + std::to_string(args->limit);
           if (!args->task.empty()) path += "&task=" + url_encode(args->task);
           if (!args->since.empty()) path += "&since=" + url_encode(args->since);
           if (args->after > 0) path += "&after=" + std::to_string(args->after);
           auto r = expect(http->get(path), {200});
           if (args->json_out) {
             std::cout << r.json().dump(2) << std::endl;
             return kCliOk;
           }
           auto list = wire::audit_list_from_json(r.json());
           std::cout << fmt::format("{:>6} {:<24} {:<34} {:<20} {:<24} {:>7} {:<24} {}\n", "SEQ",
                                    "AT", "ACTOR", "ACTION", "TASK", "ATTEMPT", "WORKER", "DETAIL");
           for (const auto& rec : list.records) {
             std::string actor(wire::to_string(rec.actor.kind));
             if (rec.actor.id) actor += " " + *rec.actor.id;
             if (rec.actor.address) actor += " " + *rec.actor.address;
             std::cout << fmt::format("{:>6} {:<24} {:<34} {:<20} {:<24} {:>7} {:<24} {}\n",
                                      rec.seq, rec.at, actor, wire::to_string(rec.action),
                                      rec.task_id.value_or("-"),
                                      rec.attempt ? std::to_string(*rec.attempt) : "-",
                                      rec.worker_id.value_or("-"), rec.detail.dump());
           }
           if (list.next) std::cerr << "more: --after " << *list.next << "\n";
           return kCliOk;
         }});
  }
  return commands;
}

}  // namespace tamma::orchestrator
