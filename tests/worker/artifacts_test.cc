#include "worker/artifacts.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>

#include "common/error.h"
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
  write_file(ws.path() / "real.txt", "mine");
  auto found = collect_artifacts(ws.path(), {"**"}, std::nullopt);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].path, "real.txt");
  // Matching only links is matching nothing.
  EXPECT_THROW(collect_artifacts(ws.path(), {"leak.txt"}, std::nullopt), Error);
}

// A built library's links (libz.so -> libz.so.1 -> libz.so.1.3) are what a consumer links
// against: recorded as links, made again as links, never followed; a link whose target text
// leads out of the workspace (absolute, or too many ..) still is not matched.
TEST(CollectArtifacts, LinksInsideTheWorkspaceAreRecordedAndCopiedAsLinks) {
  TempDir ws, out, outside;
  namespace fs = std::filesystem;
  fs::create_directories(ws.path() / "lib/sub");
  write_file(ws.path() / "lib/libz.so.1.3", "ELF library");
  fs::create_symlink("libz.so.1.3", ws.path() / "lib/libz.so.1");
  fs::create_symlink("libz.so.1", ws.path() / "lib/libz.so");
  fs::create_symlink("../libz.so.1.3", ws.path() / "lib/sub/up.so");
  fs::create_directory_symlink("sub", ws.path() / "lib/subdir");
  write_file(outside.path() / "secret", "host secret");
  fs::create_symlink(outside.path() / "secret", ws.path() / "lib/abs.so");
  fs::create_symlink("../../secret", ws.path() / "lib/escape.so");
  fs::create_symlink("sub/../../../x", ws.path() / "lib/detour.so");

  auto found = collect_artifacts(ws.path(), {"lib/**"}, out.path());
  std::vector<std::string> paths;
  for (const auto& a : found) paths.push_back(a.path + (a.link.empty() ? "" : " -> " + a.link));
  EXPECT_EQ(paths, (std::vector<std::string>{
                       "lib/libz.so -> libz.so.1", "lib/libz.so.1 -> libz.so.1.3",
                       "lib/libz.so.1.3", "lib/sub/up.so -> ../libz.so.1.3", "lib/subdir -> sub"}));
  for (const auto& a : found) {
    if (a.link.empty()) continue;
    EXPECT_EQ(a.size, 0u);
    EXPECT_EQ(a.sha256.size(), 64u);
    EXPECT_TRUE(fs::is_symlink(out.path() / a.path)) << a.path;
    EXPECT_EQ(fs::read_symlink(out.path() / a.path).string(), a.link);
  }
  // The copies resolve inside the copy, to the copied library.
  EXPECT_EQ(tamma::testing::read_file(out.path() / "lib/libz.so"), "ELF library");
  EXPECT_EQ(tamma::testing::read_file(out.path() / "lib/sub/up.so"), "ELF library");
  EXPECT_FALSE(fs::is_symlink(out.path() / "lib/abs.so"));
  EXPECT_FALSE(fs::is_symlink(out.path() / "lib/escape.so"));
  EXPECT_FALSE(fs::is_symlink(out.path() / "lib/detour.so"));

  // Two links with the same target text have the same digest; a different target another.
  EXPECT_NE(found[0].sha256, found[1].sha256);
  EXPECT_THROW(collect_artifacts(ws.path(), {"lib/escape.so"}, std::nullopt), Error);
}

std::string code_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.code() + ": " + e.what();
  }
  return "";
}

TEST(CollectArtifacts, GlobsMatchingNothingAreNamed) {
  TempDir ws;
  write_file(ws.path() / "a.txt", "a");
  const std::string error = code_of([&] {
    collect_artifacts(ws.path(), {"*.txt", "dist/*.tgz", "*.zip"}, std::nullopt);
  });
  EXPECT_EQ(error,
            "artifacts_missing: artifact globs \"dist/*.tgz\", \"*.zip\" matched no file in the "
            "workspace");
}

TEST(CollectArtifacts, GlobsLeavingTheWorkspaceAreRefused) {
  TempDir ws;
  EXPECT_EQ(code_of([&] { collect_artifacts(ws.path(), {"../x"}, std::nullopt); }),
            "invalid_task_spec: artifact glob \"../x\" has a \"..\" component, which leads out "
            "of the workspace");
  EXPECT_EQ(code_of([&] { collect_artifacts(ws.path(), {"/etc/*"}, std::nullopt); }),
            "invalid_task_spec: artifact glob \"/etc/*\" is absolute; give a glob relative to the "
            "workspace");
}

TEST(CollectArtifacts, LimitsAreCheckedBeforeAnythingIsCopied) {
  TempDir ws, out;
  write_file(ws.path() / "a.bin", std::string(100, 'a'));
  write_file(ws.path() / "b.bin", std::string(200, 'b'));
  ArtifactLimits limits;
  limits.max_file_bytes = 150;
  EXPECT_THAT(code_of([&] { collect_artifacts(ws.path(), {"*.bin"}, out.path(), limits); }),
              ::testing::StartsWith("artifact_limit_exceeded: artifact \"b.bin\" is 200B (200 "
                                    "bytes), more than artifactMaxFileSize"));
  limits = {};
  limits.max_total_bytes = 250;
  EXPECT_THAT(
      code_of([&] { collect_artifacts(ws.path(), {"*.bin"}, out.path(), limits); }),
      ::testing::HasSubstr("together are 300B (300 bytes), more than artifactMaxTotalSize"));
  limits = {};
  limits.max_files = 1;
  EXPECT_THAT(code_of([&] { collect_artifacts(ws.path(), {"*.bin"}, out.path(), limits); }),
              ::testing::HasSubstr("matched 2 files, more than the 1 allowed (artifactMaxFiles)"));
  EXPECT_TRUE(std::filesystem::is_empty(out.path()));
  // Within the limits, the copy keeps the execute bit.
  std::filesystem::permissions(ws.path() / "a.bin", std::filesystem::perms::owner_all);
  auto found = collect_artifacts(ws.path(), {"a.bin"}, out.path(), limits);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].size, 100u);
  EXPECT_EQ(::access((out.path() / "a.bin").c_str(), X_OK), 0);
}

}  // namespace
}  // namespace tamma::worker
