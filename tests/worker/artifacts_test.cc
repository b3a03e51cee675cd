#include "worker/artifacts.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "support/test_support.h"

namespace tamma::worker {
namespace {

using tamma::testing::TempDir;
using tamma::testing::write_file;

TEST(GlobMatch, MatchesSegmentsAndDoubleStar) {
  EXPECT_TRUE(glob_match("*.txt", "a.txt"));
  EXPECT_FALSE(glob_match("*.txt", "dir/a.txt"));
  EXPECT_TRUE(glob_match("dir/*.txt", "dir/a.txt"));
  EXPECT_TRUE(glob_match("**/*.txt", "a.txt"));
  EXPECT_TRUE(glob_match("**/*.txt", "x/y/z/a.txt"));
  EXPECT_TRUE(glob_match("build/**", "build/bin/app"));
  EXPECT_FALSE(glob_match("build/**", "src/app"));
  EXPECT_TRUE(glob_match("out/app-?.bin", "out/app-1.bin"));
  EXPECT_FALSE(glob_match("*", ".hidden"));
}

TEST(Sha256, HashesAFile) {
  TempDir dir;
  write_file(dir.path() / "f", "abc");
  EXPECT_EQ(sha256_file(dir.path() / "f"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(CollectArtifacts, CollectsMatchesWithSizesAndCopiesThem) {
  TempDir ws, out;
  std::filesystem::create_directories(ws.path() / "build/bin");
  write_file(ws.path() / "build/bin/app", "binary!");
  write_file(ws.path() / "build/log.txt", "log");
  write_file(ws.path() / "src.c", "int main;");
  auto found = collect_artifacts(ws.path(), {"build/**/app", "*.c"}, out.path());
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].path, "build/bin/app");
  EXPECT_EQ(found[0].size, 7u);
  EXPECT_EQ(found[0].sha256, sha256_file(ws.path() / "build/bin/app"));
  EXPECT_EQ(found[1].path, "src.c");
  EXPECT_EQ(tamma::testing::read_file(out.path() / "build/bin/app"), "binary!");
}

TEST(CollectArtifacts, NeverFollowsSymlinksOutOfTheWorkspace) {
  TempDir ws, outside;
  write_file(outside.path() / "secret.txt", "host secret");
  std::filesystem::create_symlink(outside.path() / "secret.txt", ws.path() / "leak.txt");
  std::filesystem::create_directory_symlink(outside.path(), ws.path() / "linkdir");
  auto found = collect_artifacts(ws.path(), {"**"}, std::nullopt);
  EXPECT_TRUE(found.empty());
}

}  // namespace
}  // namespace tamma::worker
