// `tamma-worker doctor`: what this host offers for isolation, and what a missing piece costs.

#include <cstdio>

#include "cli/worker_cli.h"
#include "common/error.h"
#include "common/log.h"
#include "egress/listener.h"
#include "sandbox/host.h"
#include "sandbox/net.h"
#include "sandbox/tier.h"
#include "worker/config.h"
#include "worker/engine.h"
#include "worker/host_check.h"

extern char** environ;

namespace tamma::cli {
namespace {

// Whether tasks with a network allow-list can run here: the same steps a task's start takes
// (a loopback-only namespace, the proxy's listener made inside it), for real. Empty when
// they can, else why not.
std::string egress_problem(const sandbox::HostCapabilities& caps) {
  if (!caps.root) return "the worker is not root (the proxy listens in a namespace it makes)";
  if (!caps.net_ns) return "no network namespaces";
  try {
    UniqueFd ns = sandbox::make_loopback_net_namespace();
    (void)egress::listen_in_namespace(ns.get());
    return {};
  } catch (const Error& e) {
    return e.what();
  }
}

}  // namespace

Subcommand add_doctor_command(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  auto workspace_root = std::make_shared<std::string>();
  auto* doctor = app.add_subcommand("doctor", "Report what this host offers for sandboxing");
  doctor->add_flag("--json", *json, "Print the report as JSON");
  doctor->add_option("--workspace-root", *workspace_root,
                     "Where task workspaces are made (its disk is checked)");
  return {doctor, [json, workspace_root]() {
            // Warnings on the way (a worker moving itself into a leaf cgroup, say) go to
            // stderr: the report on stdout stays one JSON document.
            setup_logging("warn", "text");
            sandbox::HostCapabilities caps = sandbox::probe_host();
            // What a task needs from the host right now: the same check a daemon makes before
            // it takes tasks again after standing down.
            worker::ConfigOverrides overrides;
            if (!workspace_root->empty()) overrides.values["workspaceRoot"] = *workspace_root;
            std::vector<std::string> env;
            for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
            const auto config = worker::load_config(overrides, env);
            const auto root = config.workspace_root;
            const auto problem = worker::host_problem(root);
            // The tier (ADR 0030): the best this host offers against the configured minimum.
            const sandbox::Tier best = sandbox::choose_tier(caps);
            const sandbox::Tier minimum =
                sandbox::parse_tier(config.isolation).value_or(sandbox::Tier::kRootless);
            const bool meets = best >= minimum;
            const auto tier_missing = sandbox::tier_missing(caps);
            if (problem) {
              caps.missing.push_back(
                  {"host resources (" + root.string() + ")",
                   *problem + ": tasks would fail here; a daemon stands down", ""});
            }
            const std::string egress = egress_problem(caps);
            if (!egress.empty()) {
              caps.missing.push_back(
                  {"network allow-lists (egress proxy)",
                   egress + ": tasks with \"network\": {\"allow\": [...]} are refused"});
            }
            if (*json) {
              auto report = sandbox::to_json(caps);
              report["egressProxy"] = egress.empty();
              report["tier"] = sandbox::to_string(best);
              report["minimumTier"] = sandbox::to_string(minimum);
              report["meetsMinimum"] = meets;
              nlohmann::json tiers = nlohmann::json::object();
              for (auto t :
                   {sandbox::Tier::kFull, sandbox::Tier::kRootless, sandbox::Tier::kUnprivileged}) {
                tiers[sandbox::to_string(t)] = {{"available", best >= t}};
              }
              report["tiers"] = tiers;
              for (const auto& m : tier_missing) {
                report["missing"].push_back({{"tier", m.tier},
                                             {"what", m.what},
                                             {"consequence", m.consequence},
                                             {"fix", m.fix}});
              }
              std::printf("%s\n", report.dump(2).c_str());
            } else {
              auto yes = [](bool b) { return b ? "yes" : "NO"; };
              std::printf("kernel           %s\n", caps.kernel.c_str());
              std::printf("user             uid %u%s\n", caps.uid, caps.root ? " (root)" : "");
              std::printf("cgroup           %s at %s\n", caps.cgroup_version.c_str(),
                          caps.cgroup_root.c_str());
              std::string controllers;
              for (const auto& c : caps.controllers) controllers += c + " ";
              std::printf("controllers      %s\n", controllers.c_str());
              std::printf("namespaces       user %s, pid %s, mount %s, net %s, ipc %s, uts %s\n",
                          yes(caps.user_ns), yes(caps.pid_ns), yes(caps.mount_ns), yes(caps.net_ns),
                          yes(caps.ipc_ns), yes(caps.uts_ns));
              std::printf("seccomp          %s\n", yes(caps.seccomp));
              std::printf("clone into cgroup %s\n", yes(caps.clone_into_cgroup));
              std::printf("disk limits      %s\n", caps.disk_limit_method.c_str());
              std::printf("landlock         %s\n",
                          caps.landlock_abi > 0 ? ("ABI " + std::to_string(caps.landlock_abi) +
                                                   (caps.landlock_scopes ? ", signal scoping" : ""))
                                                      .c_str()
                                                : "NO");
              std::printf("isolation tier   %s (minimum %s: %s)\n", sandbox::to_string(best),
                          sandbox::to_string(minimum), meets ? "met" : "NOT MET");
              for (auto t :
                   {sandbox::Tier::kFull, sandbox::Tier::kRootless, sandbox::Tier::kUnprivileged}) {
                std::printf("  %-13s %s\n", sandbox::to_string(t),
                            best >= t ? "available" : "not available");
              }
              std::printf("host resources   %s\n", problem ? problem->c_str() : "ok");
              std::printf("egress proxy     %s\n",
                          egress.empty() ? "yes (network allow-lists can be enforced)" : "NO");
              for (const auto& m : tier_missing) {
                std::printf("\nFor the %s tier: %s\n  consequence: %s\n  fix: %s\n", m.tier.c_str(),
                            m.what.c_str(), m.consequence.c_str(), m.fix.c_str());
              }
              if (caps.missing.empty()) {
                std::printf("\nEverything tamma-worker uses is available.\n");
              } else {
                std::printf("\nMissing:\n");
                for (const auto& m : caps.missing) {
                  std::printf("  - %s: %s\n", m.what.c_str(), m.consequence.c_str());
                  if (!m.fix.empty()) std::printf("    fix: %s\n", m.fix.c_str());
                }
              }
            }
            // Something missing within the tier costs only the tasks that need it (they are
            // refused by name); a host below the configured tier refuses every task.
            return meets && !problem ? worker::kExitSucceeded : worker::kExitInfrastructure;
          }};
}

}  // namespace tamma::cli
