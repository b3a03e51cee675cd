// Unsent task output: memory up to a cap, an unlinked file beyond it, in order.

#include <gtest/gtest.h>

#include <filesystem>

#include "support/test_support.h"
#include "worker/output_spool.h"

namespace tamma::worker {
namespace {

TEST(OutputSpool, MemoryOnlyRefusesBeyondItsCap) {
  OutputSpool spool(8, {});
  EXPECT_TRUE(spool.append("0123"));
  EXPECT_TRUE(spool.append("4567"));
  EXPECT_FALSE(spool.append("8")) << "no spill directory: the caller counts it dropped";
  EXPECT_EQ(spool.read(2, 4), "2345");
  spool.drop_front(3);
  EXPECT_EQ(spool.size(), 5u);
  EXPECT_EQ(spool.read(0, 100), "34567");
}

TEST(OutputSpool, BeyondTheCapBytesGoToDiskAndComeBackInOrder) {
  tamma::testing::TempDir dir;
  OutputSpool spool(6, dir.path());
  EXPECT_TRUE(spool.append("abcd"));
  EXPECT_TRUE(spool.append("efgh")) << "does not fit: to disk";
  EXPECT_TRUE(spool.append("ij")) << "fits in memory, but follows the bytes on disk";
  EXPECT_EQ(spool.on_disk(), 6u);
  EXPECT_EQ(spool.read(0, 100), "abcdefghij");
  EXPECT_EQ(spool.read(3, 3), "def") << "across memory and disk";
  spool.drop_front(5);
  EXPECT_EQ(spool.read(0, 100), "fghij");
  spool.drop_front(5);
  EXPECT_EQ(spool.size(), 0u);
  EXPECT_EQ(spool.on_disk(), 0u) << "the file is emptied once everything in it is gone";
  EXPECT_TRUE(spool.append("kl"));
  EXPECT_EQ(spool.on_disk(), 0u) << "memory again";
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "the file never had a name";
}

}  // namespace
}  // namespace tamma::worker
