// ScratchPool: buffers shared by the daemon's threads, kept up to a byte
// budget (common/scratch_pool.h).
#include "common/scratch_pool.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

namespace nydus {
namespace {

constexpr size_t kBudget = ScratchPool::kKeepBytes;

// Page-aligned, so that the blob cache can read into a lease with O_DIRECT
// (the classic FUSE transport's READ replies are such leases).
TEST(ScratchPool, BuffersArePageAligned) {
  ScratchPool pool;
  for (size_t n : {size_t(1), size_t(4096), size_t(65536), size_t(128 << 10) + 1, size_t(1) << 20}) {
    ScratchPool::Buffer b = pool.take(n);
    ASSERT_TRUE(b.data);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data.get()) % ScratchPool::kAlign, 0u) << n;
    pool.give(std::move(b));
  }
  Scratch lease;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(lease.get(200000).data()) % ScratchPool::kAlign, 0u);
}

TEST(ScratchPool, AGivenBufferServesTheNextRequestItFits) {
  ScratchPool pool;
  ScratchPool::Buffer a = pool.take(300 << 10);
  ASSERT_GE(a.cap, size_t(300) << 10);
  const uint8_t* p = a.data.get();
  pool.give(std::move(a));
  EXPECT_EQ(pool.kept_bytes(), size_t(320) << 10);  // rounded up to 64 KiB
  ScratchPool::Buffer b = pool.take(100 << 10);  // smaller: the kept one
  EXPECT_EQ(b.data.get(), p);
  EXPECT_EQ(pool.kept_bytes(), 0u);
  ScratchPool::Buffer c = pool.take(100 << 10);  // none kept now: a new one
  EXPECT_NE(c.data.get(), p);
}

TEST(ScratchPool, TakesTheSmallestKeptBufferThatFits) {
  ScratchPool pool;
  ScratchPool::Buffer big = pool.take(1 << 20), small = pool.take(128 << 10);
  const uint8_t *pb = big.data.get(), *ps = small.data.get();
  pool.give(std::move(big));
  pool.give(std::move(small));
  EXPECT_EQ(pool.take(100 << 10).data.get(), ps);
  EXPECT_EQ(pool.take(100 << 10).data.get(), pb);
}

TEST(ScratchPool, KeepsNoMoreThanItsBudget) {
  ScratchPool pool;
  const size_t quarter = kBudget / 4;
  std::vector<ScratchPool::Buffer> out;
  for (int i = 0; i < 6; i++) out.push_back(pool.take(quarter));
  for (auto& b : out) pool.give(std::move(b));
  EXPECT_EQ(pool.kept_bytes(), 4 * quarter);  // two of the six were freed
  // A buffer above the budget is never kept.
  pool.give(pool.take(kBudget + 1));
  EXPECT_EQ(pool.kept_bytes(), 4 * quarter);
}

TEST(ScratchPool, ABiggerBufferReplacesSmallerOnes) {
  ScratchPool pool;
  std::vector<ScratchPool::Buffer> smalls;
  for (size_t kept = 0; kept + (256 << 10) <= kBudget; kept += 256 << 10) smalls.push_back(pool.take(256 << 10));
  for (auto& b : smalls) pool.give(std::move(b));
  ASSERT_GT(pool.kept_bytes(), kBudget - (256 << 10));
  ScratchPool::Buffer big = pool.take(2 << 20);
  const uint8_t* p = big.data.get();
  pool.give(std::move(big));
  EXPECT_LE(pool.kept_bytes(), kBudget);
  EXPECT_EQ(pool.take(2 << 20).data.get(), p);  // kept, at the cost of smaller ones
  // ...but not an equal one: the kept ones stay.
  ScratchPool same, other;
  std::vector<ScratchPool::Buffer> halves;
  for (int i = 0; i < 2; i++) halves.push_back(same.take(kBudget / 2));
  const uint8_t* first = halves[0].data.get();
  for (auto& b : halves) same.give(std::move(b));
  same.give(other.take(kBudget / 2));
  EXPECT_EQ(same.kept_bytes(), kBudget);
  ScratchPool::Buffer x = same.take(1), y = same.take(1);
  EXPECT_TRUE(x.data.get() == first || y.data.get() == first);
}

TEST(ScratchPool, LeasesGoBackToTheProcessPool) {
  ScratchPool& pool = ScratchPool::instance();
  const uint8_t* p;
  {
    Scratch s;
    auto span = s.get(10);
    span[0] = 1;
    p = s.get(200 << 10).data();  // grows: the first buffer goes back
  }
  Scratch again;
  EXPECT_EQ(again.get(200 << 10).data(), p);
  EXPECT_LE(pool.kept_bytes(), kBudget);
}

// A daemon between bursts holds no buffers: they go once the pool was idle
// for its release time, and not while it is in use.
TEST(ScratchPool, IdleBuffersAreReleased) {
  using namespace std::chrono_literals;
  ScratchPool pool(300ms);
  pool.give(pool.take(1 << 20));
  EXPECT_GT(pool.kept_bytes(), 0u);
  // In use every 50 ms for 400 ms: kept throughout.
  for (int i = 0; i < 8; i++) {
    std::this_thread::sleep_for(50ms);
    EXPECT_GT(pool.kept_bytes(), 0u) << i;
    pool.give(pool.take(1 << 20));
  }
  // Then idle: released within a few release times.
  for (int i = 0; i < 100 && pool.kept_bytes() > 0; i++) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(pool.kept_bytes(), 0u);
  // And kept again (and released again) after that.
  pool.give(pool.take(4096));
  EXPECT_GT(pool.kept_bytes(), 0u);
  for (int i = 0; i < 100 && pool.kept_bytes() > 0; i++) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(pool.kept_bytes(), 0u);
}

// Every FUSE reply leases a buffer: a lease must not wake the releaser
// while it already waits out the idle time (it did, once per reply).
TEST(ScratchPool, LeasesDoNotWakeTheReleaserWhileItHoldsBuffers) {
  using namespace std::chrono_literals;
  ScratchPool pool(10s);
  pool.give(pool.take(1 << 20));  // the first buffer kept starts the releaser
  for (int i = 0; i < 1000; i++) pool.give(pool.take(64 << 10));
  // Not even when the releaser looks between a take and its give (nothing
  // kept then): the pool is in use, so it waits out the idle time.
  EXPECT_EQ(pool.releaser_wakeups(), 0u);
}

TEST(ScratchPool, ThreadsShareItWithoutLosingBuffers) {
  ScratchPool pool;
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; t++)
    ts.emplace_back([&pool, t] {
      for (int i = 0; i < 2000; i++) {
        ScratchPool::Buffer b = pool.take(size_t(64 + (i * 7 + t) % 900) << 10);
        b.data[0] = uint8_t(i);
        b.data[b.cap - 1] = uint8_t(t);
        pool.give(std::move(b));
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_GT(pool.kept_bytes(), 0u);
  EXPECT_LE(pool.kept_bytes(), kBudget);
}

}  // namespace
}  // namespace nydus
