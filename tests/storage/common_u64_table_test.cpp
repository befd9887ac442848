// U64Table against std::unordered_map as the reference: random puts and
// erases over a small key range (long probe runs, erases inside them, wrap
// around the end of the table), the bound, key 0.
#include "common/u64_table.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <unordered_map>

namespace nydus {
namespace {

struct Rec {
  uint64_t a;
  uint32_t b;
};

TEST(U64Table, PutFindReplaceErase) {
  U64Table<Rec> t(100);
  EXPECT_EQ(t.find(7), nullptr);
  EXPECT_TRUE(t.put(7, {70, 1}));
  EXPECT_TRUE(t.put(8, {80, 2}));
  ASSERT_NE(t.find(7), nullptr);
  EXPECT_EQ(t.find(7)->a, 70u);
  EXPECT_TRUE(t.put(7, {71, 3}));  // replaces
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.find(7)->a, 71u);
  EXPECT_TRUE(t.erase(7));
  EXPECT_FALSE(t.erase(7));
  EXPECT_EQ(t.find(7), nullptr);
  EXPECT_EQ(t.find(8)->a, 80u);
  EXPECT_EQ(t.size(), 1u);
  t.clear();
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.find(8), nullptr);
}

TEST(U64Table, KeyZeroAndTheBound) {
  U64Table<Rec> t(10, 2);
  EXPECT_FALSE(t.put(0, {1, 1}));
  EXPECT_EQ(t.find(0), nullptr);
  for (uint64_t k = 1; k <= 10; ++k) EXPECT_TRUE(t.put(k, {k, 0})) << k;
  EXPECT_FALSE(t.put(11, {11, 0}));  // full
  EXPECT_TRUE(t.put(5, {55, 0}));    // a replacement still fits
  EXPECT_EQ(t.size(), 10u);
  for (uint64_t k = 1; k <= 10; ++k) ASSERT_NE(t.find(k), nullptr) << k;
  EXPECT_TRUE(t.erase(3));
  EXPECT_TRUE(t.put(11, {11, 0}));
}

TEST(U64Table, MatchesAMapUnderRandomPutsAndErases) {
  std::mt19937_64 rng(42);
  for (uint64_t range : {16ull, 200ull, 5000ull}) {
    U64Table<Rec> t(1 << 12, 1);
    std::unordered_map<uint64_t, Rec> ref;
    for (int op = 0; op < 60000; ++op) {
      const uint64_t k = 1 + rng() % range;
      if (rng() % 3 == 0) {
        Rec out{};
        auto it = ref.find(k);
        const bool had = it != ref.end();
        const uint64_t want = had ? it->second.a : 0;
        EXPECT_EQ(t.erase(k, op % 2 ? &out : nullptr), had) << "range " << range << " op " << op;
        if (had && op % 2) {
          EXPECT_EQ(out.a, want) << "the erased record, range " << range << " op " << op;
        }
        if (had) ref.erase(it);
      } else {
        const Rec r{rng(), uint32_t(op)};
        const bool fits = ref.contains(k) || ref.size() < (1u << 12);
        EXPECT_EQ(t.put(k, r), fits);
        if (fits) ref[k] = r;
      }
      ASSERT_EQ(t.size(), ref.size()) << "range " << range << " op " << op;
      const uint64_t probe = 1 + rng() % range;
      const Rec* got = t.find(probe);
      auto it = ref.find(probe);
      ASSERT_EQ(got != nullptr, it != ref.end()) << "key " << probe << " range " << range << " op " << op;
      if (got) {
        ASSERT_EQ(got->a, it->second.a);
      }
    }
    std::map<uint64_t, uint64_t> seen;
    t.for_each([&](uint64_t k, const Rec& r) { seen[k] = r.a; });
    ASSERT_EQ(seen.size(), ref.size());
    for (const auto& [k, r] : ref) EXPECT_EQ(seen[k], r.a) << k;
  }
}

}  // namespace
}  // namespace nydus
