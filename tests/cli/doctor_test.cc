// `tamma-worker doctor` against what this host really offers.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

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
  // Every missing feature is named with its consequence, and the exit code says whether any is.
  const auto& missing = report["missing"];
  ASSERT_TRUE(missing.is_array());
  for (const auto& m : missing) {
    EXPECT_FALSE(m.value("what", "").empty());
    EXPECT_FALSE(m.value("consequence", "").empty());
  }
  EXPECT_EQ(r.exit_code, missing.empty() ? 0 : 6);
}

TEST(Doctor, TextReportNamesEachLayer) {
  auto r = testing::run_process({TAMMA_WORKER_BINARY, "doctor"});
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 6) << r.err;
  for (const char* word : {"cgroup", "namespaces", "seccomp", "disk limits"}) {
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
