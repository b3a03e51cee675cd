#pragma once
// The pieces the fault suite is built from: real processes started with a namespace, an open
// file limit or a cgroup applied in the child before exec; a loop-mounted ext4 that can be
// filled and frozen; a v1 memory cgroup; an admin client that can live in another network
// namespace; the workload (tasks with known output and artifacts) and its verification.
//
// Cleanup is part of correctness: every guard undoes what it did in its destructor, and
// guards are declared so that they are destroyed in a safe order (a frozen filesystem is
// thawed before the processes blocked on it are killed, processes die before their cgroup,
// mount or namespace is removed). Things a killed test could not undo are swept at the next
// start by sweep_stale_resources(); a freeze is also undone by a guardian process the moment
// the test process dies.

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "orchestrator/http_client.h"

namespace tamma::faults {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace fs = std::filesystem;

inline const std::string kAdminToken = "faults-admin-token-0123456789abcdef";
inline const std::string kRegistrationToken = "faults-registration-token-0123456789abcdef";

// Runs `fn` when it goes out of scope: a fault undone (SIGCONT, thaw, heal) even when the
// test leaves early, before the processes and resources it affects are torn down.
class Defer {
 public:
  explicit Defer(std::function<void()> fn) : fn_(std::move(fn)) {}
  ~Defer() {
    if (fn_) fn_();
  }
  Defer(const Defer&) = delete;
  Defer& operator=(const Defer&) = delete;

 private:
  std::function<void()> fn_;
};

// ---- processes ----

struct LaunchOptions {
  std::vector<std::string> argv;
  std::vector<std::string> env;        // added to (or replacing) the test's environment
  fs::path log_file;                   // stdout and stderr, appended
  fs::path netns;                      // empty: the test's network namespace
  std::optional<rlim_t> nofile;        // RLIMIT_NOFILE soft limit (the hard one is kept)
  std::vector<fs::path> cgroup_procs;  // cgroup.procs files the child joins before exec
};

// A real child process. It dies with the test (PR_SET_PDEATHSIG), and the destructor
// SIGCONTs and SIGKILLs it if it still runs.
class Process {
 public:
  explicit Process(LaunchOptions options);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool running();
  void signal(int sig);
  // Waits for exit up to `limit`; false if it still runs.
  bool wait_exit(std::chrono::milliseconds limit);
  // SIGTERM, then SIGKILL after `grace`. The exit status (-signal when killed).
  int stop(std::chrono::milliseconds grace);
  void kill();
  [[nodiscard]] int exit_status() const { return status_; }
  [[nodiscard]] std::string log() const;
  // Waits until the log holds `text` (from byte `from` on), or `limit` passes.
  bool wait_for_log(const std::string& text, std::chrono::milliseconds limit, std::size_t from = 0);
  [[nodiscard]] const fs::path& log_file() const { return options_.log_file; }

 private:
  LaunchOptions options_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// The last `lines` lines of a text.
std::string tail_lines(const std::string& text, std::size_t lines);

// ---- a small ext4 on a loop device ----

class LoopFs {
 public:
  // `work_dir` holds the image and the mount point. Throws when mkfs/losetup/mount fail.
  LoopFs(const fs::path& work_dir, std::uint64_t size_mb);
  ~LoopFs();
  LoopFs(const LoopFs&) = delete;
  LoopFs& operator=(const LoopFs&) = delete;

  [[nodiscard]] const fs::path& path() const { return mount_point_; }
  // Fills every free block (a filler file, fallocate then writes until ENOSPC).
  void fill();
  // Removes the filler.
  void free_space();
  [[nodiscard]] std::uint64_t available_bytes() const;

  // FIFREEZE now; thawed by thaw(), by the destructor, after `longest` whatever happens, and
  // by a guardian process as soon as this test process dies.
  void freeze(std::chrono::milliseconds longest);
  void thaw();

  // A power cut, as far as this filesystem knows: shut down at once without writing the
  // journal (EXT4_IOC_SHUTDOWN, NOLOGFLUSH, as xfstests' "godown" does), so every later call
  // fails with EIO and whatever was not made durable is gone. Call remount() afterwards, once
  // the processes that had files open on it are gone.
  void crash();
  // Unmounts and mounts again: the journal is replayed and the page cache forgotten, so what
  // is read afterwards is what reached the disk.
  void remount();

 private:
  void cleanup() noexcept;
  void attach();  // the image on a free loop device, into device_
  fs::path image_;
  fs::path mount_point_;
  std::string device_;
  bool mounted_ = false;
  int guardian_pipe_ = -1;  // write end; closing it thaws
  pid_t guardian_ = -1;
};

// ---- a v1 memory cgroup ----

class MemoryCgroup {
 public:
  explicit MemoryCgroup(std::uint64_t limit_bytes);
  ~MemoryCgroup();
  MemoryCgroup(const MemoryCgroup&) = delete;
  MemoryCgroup& operator=(const MemoryCgroup&) = delete;
  [[nodiscard]] fs::path procs_file() const { return dir_ / "cgroup.procs"; }
  [[nodiscard]] const fs::path& dir() const { return dir_; }
  [[nodiscard]] std::string read(const std::string& file) const;

 private:
  fs::path dir_;
};

// Removes what a test killed before its destructors left: netns, mounts (thawed first), loop
// devices and cgroups named after a process that is gone.
void sweep_stale_resources();

// ---- the admin API, from the test or from inside a network namespace ----

// Requests run one at a time on a thread of their own, which joins `netns` first when given
// (setns only moves the calling thread): the orchestrator then listens on an address only that
// namespace reaches. One keep-alive connection, made again after a failure.
class Api {
 public:
  Api(std::string url, std::string token, fs::path netns = {});
  ~Api();
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  // Throws tamma::Error when no answer came within `timeout`.
  orchestrator::HttpResult call(const std::string& method, const std::string& path,
                                const std::string& body = {}, std::vector<std::string> headers = {},
                                std::chrono::milliseconds timeout = 30s);
  // The same, retried while nothing answers, for up to `patience`.
  orchestrator::HttpResult call_retrying(const std::string& method, const std::string& path,
                                         const std::string& body = {},
                                         std::vector<std::string> headers = {},
                                         std::chrono::milliseconds patience = 60s);
  [[nodiscard]] const std::string& url() const { return url_; }

 private:
  void loop();
  std::string url_;
  std::string token_;
  fs::path netns_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::packaged_task<void()>> jobs_;
  bool stopping_ = false;
  std::string netns_error_;
  std::unique_ptr<orchestrator::HttpClient> client_;  // used on the thread only
  std::thread thread_;
};

// ---- the workload ----

// One task: prints `begin-I`, a first block of numbered lines, sleeps, a second block,
// writes out/art-I.txt, prints `end-I` and exits. Everything it prints and writes is known.
struct TaskPlan {
  int index = 0;
  std::size_t first_lines = 0;
  std::size_t second_lines = 0;
  int sleep_s = 0;
  std::size_t artifact_lines = 0;
  std::size_t alloc_mb = 0;  // memory held for a moment (worker_memory_pressure), 0: none

  [[nodiscard]] json spec() const;
  [[nodiscard]] std::string expected_log() const;
  [[nodiscard]] std::string artifact_name() const;
  [[nodiscard]] std::string expected_artifact() const;
};

// `count` tasks: every fourth prints 4 MiB at once and exits; the others print 150-600 KiB
// around a sleep of `min_sleep`..`min_sleep`+2 s.
std::vector<TaskPlan> make_plans(int count, int min_sleep_s);

std::string sha256_hex(const std::string& bytes);

// ---- the result of one fault ----

struct Tally {
  int submitted = 0;
  int succeeded = 0;
  int retried = 0;          // tasks whose final attempt is above 1
  int lost = 0;             // not in a final state at the deadline
  int doubled = 0;          // two accepted completions, or two runs in one log
  int logs_incomplete = 0;  // succeeded tasks whose log is not exactly their output
  int artifacts_bad = 0;
  std::int64_t recovery_ms = -1;      // from the heal until every task ended; -1: never
  std::vector<std::string> problems;  // one line per task that is not right, for the failure
  std::map<std::string, int> states;  // final states seen
  std::map<std::string, int> attempt_outcomes;  // the attempts table, by outcome

  [[nodiscard]] std::string line(const std::string& name) const;
};

bool is_final_state(const std::string& state);

// Every byte of one attempt's log, read through the admin API a piece at a time.
std::string read_log(Api& api, const std::string& task_id, int attempt);

// Adds `plans` (submitted as `ids`) to `tally`: each task's final state and attempt, its log
// against the expected bytes, its artifact (task view, result and download) against the
// expected SHA-256, and the orchestrator's attempts table (read from `db_file`, which SQLite's
// WAL lets a reader open while the orchestrator runs) for a second accepted completion.
void verify_tasks(Api& api, const std::vector<TaskPlan>& plans, const std::vector<std::string>& ids,
                  const fs::path& db_file, Tally& tally);

// Every artifact row in the orchestrator's database whose file is missing, or whose bytes
// (read from the disk, not from the API) do not hash to the recorded SHA-256: one line each.
// `rows` is set to how many rows there are.
std::vector<std::string> stored_artifact_problems(const fs::path& db_file, int& rows);

}  // namespace tamma::faults
