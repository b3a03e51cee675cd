#include "worker/output_capture.h"

#include <gtest/gtest.h>

namespace tamma::worker {
namespace {

TEST(OutputCapture, KeepsEverythingUnderTheCap) {
  SecretMasker masker({});
  std::string live;
  OutputCapture capture(masker, 100, [&](std::string_view s) { live += s; });
  capture.append("hello ");
  capture.append("world\n");
  capture.finish();
  auto r = capture.result();
  EXPECT_EQ(r.text, "hello world\n");
  EXPECT_EQ(r.total_bytes, 12u);
  EXPECT_EQ(r.dropped_bytes, 0u);
  EXPECT_EQ(live, "hello world\n");
}

TEST(OutputCapture, KeepsHeadAndTailAndCountsWhatIsDropped) {
  SecretMasker masker({});
  OutputCapture capture(masker, 10, nullptr);
  capture.append("HEAD1");
  capture.append(std::string(1000, 'x'));
  capture.append("TAIL9");
  capture.finish();
  auto r = capture.result();
  EXPECT_EQ(r.total_bytes, 1010u);
  EXPECT_EQ(r.dropped_bytes, 1000u);
  EXPECT_EQ(r.text.substr(0, 5), "HEAD1");
  EXPECT_EQ(r.text.substr(r.text.size() - 5), "TAIL9");
  EXPECT_NE(r.text.find("1000 bytes of output dropped"), std::string::npos);
}

TEST(OutputCapture, MasksLiveAndKeptOutputAcrossChunks) {
  SecretMasker masker({"topsecret"});
  std::string live;
  OutputCapture capture(masker, 1 << 20, [&](std::string_view s) { live += s; });
  capture.append("key=top");
  capture.append("secret\n");
  capture.finish();
  EXPECT_EQ(live, "key=[MASKED]\n");
  EXPECT_EQ(capture.result().text, "key=[MASKED]\n");
  EXPECT_EQ(live.find("top"), std::string::npos);
}

}  // namespace
}  // namespace tamma::worker
