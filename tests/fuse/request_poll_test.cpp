#include "fuse/request_poll.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace nydus::fuse {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;

// A clock that moves only when the fake yield says so: each yield lasts the
// next of `yields` (the last one repeats).
struct FakeCpu {
  std::vector<microseconds> yields;
  Clock::time_point t{};
  size_t yielded = 0;
  int tries = 0;
  int take_on = -1;  // try number that finds a request (-1: none arrives)

  bool run(PollLimits limits) {
    return poll_for_request(
        [&] { return ++tries == take_on; },
        [&] { t += yields[std::min(yielded++, yields.size() - 1)]; }, [&] { return t; }, limits);
  }
};

TEST(RequestPoll, PollsUntilTheBudgetWhileYieldsReturnAtOnce) {
  FakeCpu cpu{.yields = {microseconds(1)}};
  EXPECT_FALSE(cpu.run({.budget = microseconds(200), .yield_cap = microseconds(20)}));
  EXPECT_EQ(cpu.tries, 200);
  EXPECT_EQ(cpu.t - Clock::time_point{}, microseconds(200));
}

TEST(RequestPoll, ARequestEndsThePollAtTheTryThatFindsIt) {
  FakeCpu cpu{.yields = {microseconds(1)}, .take_on = 3};
  EXPECT_TRUE(cpu.run({.budget = microseconds(200), .yield_cap = microseconds(20)}));
  EXPECT_EQ(cpu.tries, 3);
}

// Another thread ran during the third yield: this CPU is contended, and a
// poller that went on would keep a share of it. One more try (a request may
// have come meanwhile), then stop.
TEST(RequestPoll, AYieldThatGaveTheCpuAwayEndsThePoll) {
  FakeCpu cpu{.yields = {microseconds(1), microseconds(1), microseconds(4000), microseconds(1)}};
  EXPECT_FALSE(cpu.run({.budget = microseconds(200'000), .yield_cap = microseconds(20)}));
  EXPECT_EQ(cpu.tries, 3);
}

TEST(RequestPoll, TheTryAfterALongYieldStillTakesARequest) {
  FakeCpu cpu{.yields = {microseconds(4000)}, .take_on = 1};
  EXPECT_TRUE(cpu.run({.budget = microseconds(200'000), .yield_cap = microseconds(20)}));
  EXPECT_EQ(cpu.tries, 1);
}

TEST(RequestPoll, NoBudgetMeansNoPoll) {  // NYDUS_FUSE_SPIN_US=0
  FakeCpu cpu{.yields = {microseconds(1)}, .take_on = 1};
  EXPECT_FALSE(cpu.run({.budget = microseconds(0), .yield_cap = microseconds(20)}));
  EXPECT_EQ(cpu.tries, 0);
}

}  // namespace
}  // namespace nydus::fuse
