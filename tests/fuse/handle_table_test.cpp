// Handles are keys, not pointers: a key this process did not hand out (one
// made by the daemon we took over from) must come back as "unknown".
#include "fuse/handle_table.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

namespace nydus::fuse {
namespace {

TEST(HandleTable, AddGetRemoveAndUnknownKeys) {
  HandleTable<int> t;
  const uint64_t a = t.add(std::make_shared<int>(1)), b = t.add(std::make_shared<int>(2));
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
  EXPECT_EQ(*t.get(a), 1);
  EXPECT_EQ(*t.get(b), 2);
  EXPECT_EQ(t.get(a ^ 0xdead0000'0000ull), nullptr);
  EXPECT_EQ(t.get(0x7f00'1234'5678ull), nullptr);  // what an old daemon's pointer-like handle looks like
  t.put(0x7f00'1234'5678ull, std::make_shared<int>(3));  // adopted under its old key
  EXPECT_EQ(*t.get(0x7f00'1234'5678ull), 3);
  t.remove(a);
  EXPECT_EQ(t.get(a), nullptr);
  EXPECT_EQ(t.size(), 2u);
}

TEST(HandleTable, TwoProcessesWorthOfTablesDoNotCollide) {
  HandleTable<int> x, y;
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; i++) {
    seen.insert(x.add(std::make_shared<int>(i)));
    seen.insert(y.add(std::make_shared<int>(i)));
  }
  EXPECT_EQ(seen.size(), 2000u);
}

TEST(HandleTable, ConcurrentUse) {
  HandleTable<int> t;
  std::vector<std::thread> th;
  for (int k = 0; k < 8; k++)
    th.emplace_back([&t, k] {
      for (int i = 0; i < 2000; i++) {
        const uint64_t h = t.add(std::make_shared<int>(k));
        ASSERT_EQ(*t.get(h), k);
        t.remove(h);
      }
    });
  for (auto& x : th) x.join();
  EXPECT_EQ(t.size(), 0u);
}

}  // namespace
}  // namespace nydus::fuse
