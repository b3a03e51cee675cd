// `tamma-worker doctor` against what this host really offers.

#include <gtest/gtest.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>

#include "support/test_support.h"

namespace tamma {
namespace {

TEST(Doctor, JsonReportMatchesThisHost) {
  auto r = testing::run_process({TAMMA_WORKER_BINARY, "doctor", "--json"});
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 6) << r.err;
  auto report = nlohmann::json::parse(r.out);

  utsname uts{};
  ::uname(&uts);
  EXPECT_NE(report.dump().find(uts.release), std::string::npos) << "kernel release missing";

  struct statfs fs {};
  ASSERT_EQ(::statfs("/sys/fs/cgroup", &fs), 0);
  const bool pure_v2 = fs.f_type == 0x63677270;  // CGROUP2_SUPER_MAGIC
  const std::string version = report.value("cgroupVersion", "");
  if (pure_v2) {
    EXPECT_EQ(version, "v2");
  } else {
    EXPECT_TRUE(version == "v1" || version == "hybrid") << version;
  }
  // Every missing feature is named with its consequence; one that keeps the host from a
  // tier names the tier and a fix.
  const auto& missing = report["missing"];
  ASSERT_TRUE(missing.is_array());
  bool host_resources = false;
  for (const auto& m : missing) {
    EXPECT_FALSE(m.value("what", "").empty());
    EXPECT_FALSE(m.value("consequence", "").empty());
    if (m.contains("tier")) {
      EXPECT_FALSE(m.value("fix", "").empty()) << m.dump();
    }
    host_resources |= m.value("what", "").rfind("host resources", 0) == 0;
  }
  // The exit code says whether tasks can run here: the best tier meets the configured
  // minimum (ADR 0030), and the host's resources are fine. A piece missing within the tier
  // only refuses the tasks that need it.
  ASSERT_TRUE(report["meetsMinimum"].is_boolean());
  EXPECT_EQ(r.exit_code, report["meetsMinimum"].get<bool>() && !host_resources ? 0 : 6);
}

// As root on a host with namespaces, cgroups and seccomp (this machine), the full tier; the
// unprivileged case is tested under the container imitation (UnprivilegedTier.*).
TEST(Doctor, NamesTheIsolationTier) {
  auto r = testing::run_process({TAMMA_WORKER_BINARY, "doctor", "--json"});
  auto report = nlohmann::json::parse(r.out);
  const std::string tier = report.value("tier", "");
  EXPECT_TRUE(tier == "full" || tier == "rootless" || tier == "unprivileged" || tier == "none")
      << tier;
  EXPECT_EQ(report.value("minimumTier", ""), "rootless");  // the default
  for (const char* t : {"full", "rootless", "unprivileged"}) {
    EXPECT_TRUE(report["tiers"][t]["available"].is_boolean()) << t;
  }
  EXPECT_EQ(report["tiers"][tier == "none" ? "unprivileged" : tier]["available"], tier != "none");
  EXPECT_TRUE(report["landlock"]["abi"].is_number());
  if (::geteuid() == 0 && report["namespaces"]["pid"] == true &&
      report["cgroupVersion"] != "none" && report["seccomp"] == true) {
    EXPECT_EQ(tier, "full");
  }
  // The VM's non-root job (scripts/vm/guest.sh: a worker in a delegated v2 group) says which
  // tier that host must give.
  if (const char* expected = std::getenv("EXPECT_ISOLATION_TIER")) {
    EXPECT_EQ(tier, expected) << report.dump(2);
    EXPECT_EQ(report["meetsMinimum"], true) << report.dump(2);
  }
}

TEST(Doctor, TextReportNamesEachLayer) {
  auto r = testing::run_process({TAMMA_WORKER_BINARY, "doctor"});
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 6) << r.err;
  for (const char* word : {"cgroup", "namespaces", "seccomp", "disk limits", "isolation tier"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word << " missing from:\n" << r.out;
  }
}

// Tasks with a network allow-list need a root worker that can make a network namespace and
// the egress proxy's listener inside it (issue 15): doctor tries exactly that.
TEST(Doctor, SaysWhetherNetworkAllowListsCanBeEnforced) {
  auto r = testing::run_process({TAMMA_WORKER_BINARY, "doctor", "--json"});
  auto report = nlohmann::json::parse(r.out);
  const bool expected = report["root"].get<bool>() && report["namespaces"]["net"].get<bool>();
  EXPECT_EQ(report["egressProxy"], expected) << report.dump(2);
  bool listed = false;
  for (const auto& m : report["missing"]) {
    listed = listed || m.value("what", "") == "network allow-lists (egress proxy)";
  }
  EXPECT_EQ(listed, !expected);
  auto text = testing::run_process({TAMMA_WORKER_BINARY, "doctor"});
  EXPECT_NE(text.out.find(expected ? "egress proxy     yes" : "egress proxy     NO"),
            std::string::npos)
      << text.out;
}

}  // namespace
}  // namespace tamma
