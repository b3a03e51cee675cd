// The host check a worker makes before it blames a failure on its host, and before it takes
// tasks again after standing down.


#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "support/test_support.h"
#include "worker/host_check.h"

namespace tamma::worker {
namespace {

using tamma::testing::TempDir;

TEST(HostCheck, AHealthyWorkspaceRootPasses) {
  TempDir dir;
  EXPECT_EQ(host_problem(dir.path() / "not-made-yet"), std::nullopt)
      << "the nearest existing directory is checked";
}

TEST(HostCheck, AFullWorkspaceFilesystemIsAProblemNamingWhatIsLeft) {
  TempDir dir;
  tamma::testing::SmallTmpfs disk(dir.path(), "4m");
  ASSERT_TRUE(disk.mounted()) << "mounting a tmpfs needs root: " << std::strerror(errno);
  // 4 MiB is below the 32 MiB a task is owed, even empty.
  auto problem = host_problem(dir.path());
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("free"), std::string::npos) << *problem;
  // With a threshold it meets, it passes; filled, it fails again, and nothing is left behind.
  HostCheckLimits small;
  small.min_free_disk_bytes = 1 << 20;
  EXPECT_EQ(host_problem(dir.path(), small), std::nullopt);
  disk.fill();
  EXPECT_TRUE(host_problem(dir.path(), small).has_value());
  disk.empty();
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) left.push_back(e.path());
  EXPECT_TRUE(left.empty()) << "the write probe is removed: " << left[0];
}

TEST(HostCheck, TooFewFreeDescriptorsIsAProblem) {
  TempDir dir;
  HostCheckLimits limits;
  limits.min_free_descriptors = 1ULL << 40;
  auto problem = host_problem(dir.path(), limits);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("file descriptors"), std::string::npos) << *problem;
}

TEST(HostCheck, ErrnoTextsOfHostFailuresAreRecognised) {
  EXPECT_TRUE(mentions_host_errno("write out.txt: No space left on device"));
  EXPECT_TRUE(mentions_host_errno("pipe2: Too many open files"));
  EXPECT_TRUE(mentions_host_errno("read: Input/output error"));
  EXPECT_FALSE(mentions_host_errno("open spec.json: No such file or directory"));
  EXPECT_FALSE(mentions_host_errno("exit code 1"));
}

}  // namespace
}  // namespace tamma::worker
