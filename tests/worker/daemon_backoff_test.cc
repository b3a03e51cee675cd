// Backoff with full jitter and the StopSignal that cuts waits and requests short.

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "worker/backoff.h"

namespace tamma::worker {
namespace {

using namespace std::chrono_literals;

TEST(DaemonBackoff, CeilingDoublesFromTheBaseUpToTheCap) {
  Backoff backoff({200ms, 30s}, 1);
  std::vector<std::int64_t> ceilings;
  for (int i = 0; i < 10; ++i) {
    ceilings.push_back(backoff.ceiling().count());
    backoff.next();
  }
  EXPECT_EQ(ceilings, (std::vector<std::int64_t>{200, 400, 800, 1600, 3200, 6400, 12800, 25600,
                                                 30000, 30000}));
  EXPECT_EQ(backoff.failures(), 10);
  backoff.reset();
  EXPECT_EQ(backoff.ceiling(), 200ms);
}

TEST(DaemonBackoff, EveryWaitIsWithinZeroAndItsCeilingAndTheyAreSpread) {
  Backoff backoff({200ms, 30s}, 42);
  std::set<std::int64_t> seen_at_cap;
  for (int i = 0; i < 200; ++i) {
    const auto ceiling = backoff.ceiling();
    const auto wait = backoff.next();
    ASSERT_GE(wait.count(), 0);
    ASSERT_LE(wait, ceiling);
    if (ceiling == 30s) seen_at_cap.insert(wait.count());
  }
  // Full jitter: workers that failed together do not retry together.
  EXPECT_GT(seen_at_cap.size(), 150u);
  std::int64_t sum = 0;
  for (auto w : seen_at_cap) sum += w;
  const double mean = static_cast<double>(sum) / static_cast<double>(seen_at_cap.size());
  EXPECT_GT(mean, 10000);  // uniform over [0, 30000]: the mean is near 15000
  EXPECT_LT(mean, 20000);
}

TEST(DaemonBackoff, NeverOverflowsAfterManyFailures) {
  Backoff backoff({200ms, 30s}, 7);
  for (int i = 0; i < 10000; ++i) ASSERT_LE(backoff.next(), 30s);
  EXPECT_EQ(backoff.ceiling(), 30s);
}

TEST(DaemonStopSignal, WaitReturnsAtOnceWhenFiredAndRunsAttachedWakers) {
  StopSignal stop;
  EXPECT_FALSE(stop.wait_for(20ms)) << "not fired: the whole wait passes";
  std::atomic<int> woken{0};
  auto id = stop.attach([&] { woken++; });
  auto gone = stop.attach([&] { woken += 100; });
  stop.detach(gone);
  const auto start = std::chrono::steady_clock::now();
  std::thread firer([&] {
    std::this_thread::sleep_for(50ms);
    stop.fire();
  });
  EXPECT_TRUE(stop.wait_for(10s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  firer.join();
  EXPECT_EQ(woken.load(), 1) << "the detached waker is not called";
  stop.detach(id);
  stop.fire();  // a second fire changes nothing
  EXPECT_EQ(woken.load(), 1);
  // Attached after firing: woken at once, so a request started late still stops.
  stop.attach([&] { woken++; });
  EXPECT_EQ(woken.load(), 2);
  EXPECT_TRUE(stop.fired());
}

TEST(DaemonPulse, AFireWakesEveryWaiterWithoutStoppingIt) {
  Pulse pulse;
  StopSignal stop;
  std::atomic<int> woken{0};
  std::atomic<int> stopped{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&] {
      // An hour: only the pulse can end this wait before the test's own time limit.
      stopped += pulse.wait_for(std::chrono::hours(1), stop) ? 1 : 0;
      woken++;
    });
  }
  // Fired until every waiter is out: one that had not started waiting yet catches a later one.
  while (woken.load() < 3) {
    pulse.fire();
    std::this_thread::sleep_for(1ms);
  }
  for (auto& t : waiters) t.join();
  EXPECT_EQ(stopped.load(), 0) << "a pulse is not a stop";
  EXPECT_FALSE(stop.fired());
}

TEST(DaemonPulse, TheStopSignalStillEndsTheWaitAndSaysSo) {
  Pulse pulse;
  StopSignal stop;
  std::atomic<bool> result{false};
  std::thread waiter([&] { result = pulse.wait_for(std::chrono::hours(1), stop); });
  stop.fire();
  waiter.join();
  EXPECT_TRUE(result.load());
  // Already fired: returns at once.
  EXPECT_TRUE(pulse.wait_for(std::chrono::hours(1), stop));
  StopSignal idle;
  EXPECT_FALSE(pulse.wait_for(1ms, idle)) << "neither fired: the whole wait passes";
}

}  // namespace
}  // namespace tamma::worker
