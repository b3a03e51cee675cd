// The NOTIFY payload by which one orchestrator tells the others which tasks wait for a worker
// (postgres_signal.h): what a hearer makes of it decides whether a parked poll gets its task
// without reading it back, or looks at the whole queue.
#include <gtest/gtest.h>

#include <string>

#include "orchestrator/store/postgres_signal.h"

namespace tamma::orchestrator {
namespace {

TEST(QueueAnnouncement, CarriesTypeAndLabelsWhenKnown) {
  const Store::Queued queued{"test", {{"arch", "x86_64"}, {"os", "linux \"deb\",12"}}};
  // Appended piece by piece: `"[" + ...` trips GCC 12's -Wrestrict at -O3.
  std::string payload = "[";
  payload += encode_announcement("t-1", &queued);
  payload += ',';
  payload += encode_announcement("t-2", nullptr);
  payload += ']';
  auto tasks = decode_announcement(payload);
  ASSERT_TRUE(tasks.has_value());
  ASSERT_EQ(tasks->size(), 2U);
  EXPECT_EQ((*tasks)[0].task_id, "t-1");
  ASSERT_TRUE((*tasks)[0].queued.has_value());
  EXPECT_EQ((*tasks)[0].queued->type, "test");
  EXPECT_EQ((*tasks)[0].queued->labels, queued.labels);
  EXPECT_EQ((*tasks)[1].task_id, "t-2");
  EXPECT_FALSE((*tasks)[1].queued.has_value());
}

TEST(QueueAnnouncement, ReadsTheIdsEarlierVersionsSent) {
  // A replica not yet upgraded sends comma-separated ids; empty: look at the whole queue.
  auto tasks = decode_announcement("a,b,,c");
  ASSERT_TRUE(tasks.has_value());
  ASSERT_EQ(tasks->size(), 3U);
  EXPECT_EQ((*tasks)[2].task_id, "c");
  auto whole_queue = decode_announcement("");
  ASSERT_TRUE(whole_queue.has_value());
  EXPECT_TRUE(whole_queue->empty());
}

TEST(QueueAnnouncement, RefusesWhatItDoesNotUnderstand) {
  for (const char* bad : {"[1]", "[[\"id\",\"type\"]]", "[[\"id\",\"type\",{\"k\":1}]]",
                          "[[\"id\",\"type\",{\"k\":{\"deeper\":\"x\"}}]]", "[\"unterminated",
                          "{\"id\":\"x\"}", "[[[[\"x\"]]]]"}) {
    EXPECT_FALSE(decode_announcement(bad).has_value()) << bad;
  }
  EXPECT_FALSE(decode_announcement(std::string(8001, 'a')).has_value()) << "over 8000 bytes";
  std::string many = "[";
  for (int i = 0; i < 300; ++i) many += (i ? ",\"" : "\"") + std::to_string(i) + "\"";
  EXPECT_FALSE(decode_announcement(many + "]").has_value()) << "more than 256 tasks";
}

}  // namespace
}  // namespace tamma::orchestrator
