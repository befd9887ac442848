// The bounded nid -> decoded file cache that replaced per-open handles.
#include "fuse/open_file_cache.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace nydus::fuse {
namespace {

TEST(OpenFileCache, GetPutAndFirstWriterWins) {
  OpenFileCache<int> c;
  EXPECT_EQ(c.get(7), nullptr);
  auto a = c.put(7, std::make_shared<int>(1));
  EXPECT_EQ(*a, 1);
  auto b = c.put(7, std::make_shared<int>(2));
  EXPECT_EQ(b, a) << "a racing second decode is dropped, both readers share one window";
  EXPECT_EQ(*c.get(7), 1);
}

TEST(OpenFileCache, BoundedOldestGoesFirst) {
  OpenFileCache<int> c(OpenFileCache<int>::kShards * 4);
  for (int i = 0; i < 10000; i++) c.put(uint64_t(i), std::make_shared<int>(i));
  EXPECT_LE(c.size(), OpenFileCache<int>::kShards * 4);
  EXPECT_EQ(c.get(0), nullptr);
  ASSERT_NE(c.get(9999), nullptr);
  EXPECT_EQ(*c.get(9999), 9999);
}

TEST(OpenFileCache, ConcurrentUse) {
  OpenFileCache<int> c(64);
  std::vector<std::thread> th;
  for (int k = 0; k < 8; k++)
    th.emplace_back([&c, k] {
      for (int i = 0; i < 5000; i++) {
        const uint64_t nid = uint64_t(i % 300);
        auto v = c.get(nid);
        if (!v) v = c.put(nid, std::make_shared<int>(int(nid)));
        ASSERT_EQ(*v, int(nid)) << k;
      }
    });
  for (auto& x : th) x.join();
  EXPECT_LE(c.size(), 64u);
}

}  // namespace
}  // namespace nydus::fuse
