#include "worker/secret_masker.h"

#include "common/encoding.h"

#include <gtest/gtest.h>

namespace tamma::worker {
namespace {

std::string feed_all(SecretMasker& masker, const std::vector<std::string>& chunks) {
  std::string out;
  for (const auto& c : chunks) out += masker.feed(c);
  out += masker.finish();
  return out;
}

TEST(SecretMasker, MasksAWholeSecret) {
  SecretMasker masker({"hunter2-secret"});
  EXPECT_EQ(masker.mask("password is hunter2-secret!"), "password is [MASKED]!");
}

TEST(SecretMasker, MasksASecretSplitAcrossTwoWrites) {
  SecretMasker masker({"hunter2-secret"});
  EXPECT_EQ(feed_all(masker, {"token=hunt", "er2-secret done\n"}), "token=[MASKED] done\n");
}

TEST(SecretMasker, MasksASecretSplitByteByByte) {
  const std::string secret = "s3cr3t-value-42";
  SecretMasker masker({secret});
  std::vector<std::string> chunks;
  for (char c : "x=" + secret + ";") chunks.emplace_back(1, c);
  EXPECT_EQ(feed_all(masker, chunks), "x=[MASKED];");
}

TEST(SecretMasker, HoldsBackOnlyAPossiblePrefix) {
  SecretMasker masker({"abcdef"});
  // "abc" may still become the secret: it must not be emitted yet; the rest is.
  EXPECT_EQ(masker.feed("hello abc"), "hello ");
  EXPECT_EQ(masker.feed("xyz"), "abcxyz");
  EXPECT_EQ(masker.finish(), "");
}

TEST(SecretMasker, FlushesAHeldPrefixAtTheEnd) {
  SecretMasker masker({"abcdef"});
  EXPECT_EQ(masker.feed("tail abc"), "tail ");
  EXPECT_EQ(masker.finish(), "abc");
}

TEST(SecretMasker, LongerSecretWinsOverItsPrefix) {
  SecretMasker masker({"abc1", "abc123456"});
  EXPECT_EQ(feed_all(masker, {"x abc1", "23456 y"}), "x [MASKED] y");
  EXPECT_EQ(masker.mask("x abc1 y"), "x [MASKED] y");
}

TEST(SecretMasker, MasksEncodedForms) {
  const std::string secret = "p@ss word/42";
  SecretMasker masker({secret});
  EXPECT_EQ(masker.mask(base64_encode(secret)), "[MASKED]");
  EXPECT_EQ(masker.mask("u=p%40ss%20word%2F42"), "u=[MASKED]");
  SecretMasker quoted({"a\"b\\c"});
  EXPECT_EQ(quoted.mask(R"({"k":"a\"b\\c"})"), R"({"k":"[MASKED]"})");
}

TEST(SecretMasker, MasksEveryOccurrence) {
  SecretMasker masker({"tok"});
  EXPECT_EQ(masker.mask("tok tok-tok"), "[MASKED] [MASKED]-[MASKED]");
}

TEST(SecretMasker, WithoutSecretsPassesEverythingThrough) {
  SecretMasker masker({});
  EXPECT_TRUE(masker.empty());
  EXPECT_EQ(masker.feed("abc"), "abc");
  EXPECT_EQ(masker.finish(), "");
}

TEST(Base64, EncodesAsRfc4648) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
}

}  // namespace
}  // namespace tamma::worker
