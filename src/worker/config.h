#pragma once
// Worker configuration: defaults < config file < TAMMA_* environment < command-line flags.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "egress/network_policy.h"

namespace tamma::worker {

enum class LogFormat { kText, kJson };

struct Config {
  // Execution
  std::filesystem::path workspace_root;  // default: $TMPDIR/tamma-worker (or /tmp/tamma-worker)
  std::chrono::milliseconds default_timeout{std::chrono::minutes(30)};
  std::chrono::milliseconds grace_period{std::chrono::seconds(10)};  // SIGTERM -> SIGKILL
  std::uint64_t output_limit_bytes = 4ull << 20;  // kept per stream per step; the rest counted
  // Output (stdout + stderr) one step may write before it is killed (limit "output"), as
  // Buildkite's 1 GiB log cap: a flood must not fill the orchestrator's log store.
  std::uint64_t output_hard_limit_bytes = 1ull << 30;
  // Default limits for tasks whose spec does not set them (seed: 4 GiB, 2 cores).
  std::optional<std::uint64_t> default_memory_bytes = 4ull << 30;
  std::optional<double> default_cpus;
  std::optional<std::uint64_t> default_pids = 4096;
  std::optional<std::uint64_t> default_disk_bytes;
  // Artifacts a task may leave: per file, all together, how many (a worker's disk and the
  // result document are finite).
  std::uint64_t artifact_max_file_bytes = 1ull << 30;
  std::uint64_t artifact_max_total_bytes = 2ull << 30;
  std::uint64_t artifact_max_files = 1000;

  // Sandbox
  bool isolate = true;  // namespaces, seccomp, dropped privileges
  // The least isolation tier tasks may run in (sandbox/tier.h): "full", "rootless" or
  // "unprivileged" (no namespaces: Landlock, seccomp and a keeper, for default containers).
  std::string isolation = "rootless";
  bool allow_degraded = false;  // run anyway when the host cannot enforce a limit
  uid_t task_uid = 65534;
  gid_t task_gid = 65534;
  std::uint64_t tmp_bytes = 256ull << 20;  // each tmpfs of a task: /dev/shm, /tmp with tmpOnTmpfs
  // /tmp and /var/tmp as tmpfs of tmp_bytes (charged to the task's memory) instead of
  // directories on the task's disk next to its workspace.
  bool tmp_on_tmpfs = false;
  // Names of the worker's own environment variables every task gets (proxies, CA bundles), set
  // in the worker's environment when the task starts; a variable the spec sets wins.
  std::vector<std::string> pass_env;
  // The operator's bound on tasks' network (egress/network_policy.h): whether "host" may be
  // asked for, which allow-list entries, which addresses the egress proxy never reaches.
  egress::NetworkPolicy network_policy;

  // External handlers: task type -> executable receiving the task JSON on stdin.
  std::map<std::string, std::filesystem::path> handlers;

  // Daemon mode
  std::string orchestrator_url;
  std::filesystem::path ca_file;  // verifies an https:// orchestrator; empty: the system store
  std::string token;              // never logged
  unsigned slots = 1;
  std::map<std::string, std::string> labels;

  // Logging
  std::string log_level = "info";  // trace, debug, info, warn, error, off
  LogFormat log_format = LogFormat::kText;
};

// Settings given on the command line; unset ones do not override.
struct ConfigOverrides {
  std::optional<std::filesystem::path> config_file;
  std::map<std::string, std::string> values;  // setting name (as in the file) -> text
};

// Builds the effective configuration. `environ` is the process environment as NAME=value.
// Throws Error(kConfig) naming the setting and its source when a value is invalid.
Config load_config(const ConfigOverrides& overrides, const std::vector<std::string>& environ);

// The configuration a config file holding `text` gives over the defaults: load_config's file
// layer alone, without the environment, for callers that hold the text (fuzz/). `file` names
// the file in messages. Throws Error(kConfig) as load_config does.
Config config_from_file_text(std::string_view text, const std::string& file);

}  // namespace tamma::worker
