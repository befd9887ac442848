// Read-ahead across a directory's files: a reader going through a directory
// in listing order gets the next files pushed (a growing window, only small
// regular files, never the same file twice); one that picks single files
// out of it gets none, nor does one whose reads jump about.
#include "fuse/dir_read_ahead.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

namespace nydus::fuse {
namespace {

using DRA = DirReadAhead;

// A fake directory tree: dir -> entries in listing order.
struct Tree {
  std::map<uint64_t, std::vector<DRA::Entry>> dirs;
  int walks = 0;

  DRA::Walk walk() {
    return [this](uint64_t dir, uint64_t from, const std::function<bool(uint64_t, const DRA::Entry&)>& fn) {
      walks++;
      const auto& es = dirs.at(dir);
      for (uint64_t i = from; i < es.size(); ++i)
        if (!fn(i, es[i])) return;
    };
  }
  // What a READDIRPLUS of `dir` tells the read-ahead.
  void list(DRA& ra, uint64_t dir) {
    bool first = true;
    const auto& es = dirs.at(dir);
    for (uint64_t i = 0; i < es.size(); ++i)
      if (es[i].regular) {
        ra.listed(dir, i, es[i].ino, first);
        first = false;
      }
  }
};

// `n` small regular files, inodes base+0 .. base+n-1.
std::vector<DRA::Entry> files(uint64_t base, unsigned n, uint64_t size = 4096) {
  std::vector<DRA::Entry> v;
  for (unsigned i = 0; i < n; ++i) v.push_back({base + i, true, size});
  return v;
}

// Read every regular file of `dir` in listing order, as tar does; files
// pushed earlier are served by the page cache and send no READ.
struct Reader {
  std::set<uint64_t> pushed;
  uint64_t reads = 0;
  uint64_t pushes_of_a_pushed_file = 0;

  void read_all(DRA& ra, Tree& t, uint64_t dir) {
    for (const auto& e : t.dirs.at(dir)) {
      if (!e.regular || pushed.contains(e.ino)) continue;
      reads++;
      for (uint64_t p : ra.on_first_read(e.ino, t.walk())) {
        if (!pushed.insert(p).second) pushes_of_a_pushed_file++;
      }
    }
  }
};

TEST(DirReadAhead, ReaderInListingOrderGetsTheRestPushed) {
  DRA ra;
  Tree t;
  t.dirs[1] = files(100, 2000);
  t.list(ra, 1);
  Reader r;
  r.read_all(ra, t, 1);
  // The first read pushes a few, the READ at the end of each push a bigger
  // window: a handful of READs for 2,000 files.
  EXPECT_LE(r.reads, 8u);
  EXPECT_EQ(r.pushed.size() + r.reads, 2000u);
  EXPECT_EQ(r.pushes_of_a_pushed_file, 0u);
}

TEST(DirReadAhead, FirstFileOpensASmallWindowOnly) {
  DRA::Limits l;
  DRA ra(l);
  Tree t;
  t.dirs[1] = files(100, 100);
  t.list(ra, 1);
  auto p = ra.on_first_read(100, t.walk());
  ASSERT_EQ(p.size(), l.start_window);
  EXPECT_EQ(p.front(), 101u);
  // A file in the middle read first: nothing.
  DRA ra2(l);
  t.list(ra2, 1);
  EXPECT_TRUE(ra2.on_first_read(150, t.walk()).empty());
}

TEST(DirReadAhead, PickingSingleFilesPushesNothing) {
  DRA ra;
  Tree t;
  t.dirs[1] = files(100, 500);
  t.list(ra, 1);
  // An interpreter importing a few modules: far apart, out of order.
  for (uint64_t ino : {340, 120, 480, 130, 260, 110, 400})
    EXPECT_TRUE(ra.on_first_read(ino, t.walk()).empty()) << ino;
}

TEST(DirReadAhead, JumpClosesTheWindow) {
  DRA ra;
  Tree t;
  t.dirs[1] = files(100, 1000);
  t.list(ra, 1);
  EXPECT_TRUE(ra.on_first_read(110, t.walk()).empty());
  EXPECT_FALSE(ra.on_first_read(111, t.walk()).empty()) << "two in order open it";
  EXPECT_TRUE(ra.on_first_read(700, t.walk()).empty()) << "a jump far past the window";
  EXPECT_TRUE(ra.on_first_read(300, t.walk()).empty()) << "and backwards";
  EXPECT_FALSE(ra.on_first_read(301, t.walk()).empty()) << "in order again";
}

TEST(DirReadAhead, OnlySmallRegularFilesWithinTheByteBudget) {
  DRA::Limits l;
  l.max_file = 64 * 1024;
  l.max_bytes = 256 * 1024;
  l.start_window = 4;
  DRA ra(l);
  Tree t;
  auto& es = t.dirs[1];
  es = files(100, 4);                   // 0..3: small
  es.push_back({200, false, 0});        // 4: a subdirectory
  es.push_back({201, true, 1 << 20});   // 5: too big
  es.push_back({202, true, 0});         // 6: empty: nothing to push
  for (auto e : files(300, 100, 60 * 1024)) es.push_back(e);  // 7..: 60 KiB each
  t.list(ra, 1);
  // The first file: the start window (4 files) skips the subdirectory, the
  // big file and the empty one.
  const std::vector<uint64_t> first = ra.on_first_read(100, t.walk());
  EXPECT_EQ(first, (std::vector<uint64_t>{101, 102, 103, 300}));
  // The reader goes on past the push: a bigger window, cut by the byte budget.
  const std::vector<uint64_t> next = ra.on_first_read(301, t.walk());
  ASSERT_FALSE(next.empty());
  EXPECT_EQ(next.front(), 302u);
  EXPECT_EQ(next.size(), 5u) << "256 KiB of 60 KiB files: the fifth crosses the budget";
}

TEST(DirReadAhead, SubdirectoriesBetweenFilesKeepTheOrder) {
  DRA ra;
  Tree t;
  auto& es = t.dirs[1];
  for (unsigned i = 0; i < 300; ++i) {
    es.push_back({1000 + i, true, 100});
    if (i % 3 == 0) es.push_back({5000 + i, false, 0});  // a subdirectory, handled elsewhere
  }
  t.list(ra, 1);
  Reader r;
  r.read_all(ra, t, 1);
  EXPECT_LE(r.reads, 10u);
}

TEST(DirReadAhead, MemoryIsBoundedAndOldDirectoriesForgotten) {
  DRA::Limits l;
  l.max_entries = 1000;
  DRA ra(l);
  Tree t;
  for (uint64_t d = 1; d <= 50; ++d) {
    t.dirs[d] = files(d * 10000, 100);
    t.list(ra, d);
  }
  // Directory 1's entries went with an old generation: its reads push nothing.
  EXPECT_TRUE(ra.on_first_read(10000, t.walk()).empty());
  EXPECT_TRUE(ra.on_first_read(10001, t.walk()).empty());
  // The newest directory still works.
  EXPECT_FALSE(ra.on_first_read(500000, t.walk()).empty());
}

// Every file of the listings within the budget is found again, whatever
// slots their inode numbers hash to (a reader's first file of a directory
// opens the small window: its listing record was found).
TEST(DirReadAhead, EveryRecentlyListedFileIsRemembered) {
  DRA::Limits l;
  l.max_entries = 2048;  // a generation holds 1024
  DRA ra(l);
  Tree t;
  // Scattered inode numbers (a regular sequence hashes without a collision).
  std::mt19937_64 rng(17);
  for (uint64_t d = 1; d <= 500; ++d) {
    const uint64_t a = rng() | 1, b = a + 1;
    t.dirs[d] = {{a, true, 4096}, {b, true, 4096}};
    t.list(ra, d);
  }
  int found = 0;
  for (uint64_t d = 1; d <= 500; ++d) {
    const uint64_t a = t.dirs[d][0].ino;
    if (ra.on_first_read(a, t.walk()) == std::vector<uint64_t>{a + 1}) found++;
  }
  EXPECT_EQ(found, 500);
}

TEST(DirReadAhead, UnknownFilesAndRereadsPushNothing) {
  DRA ra;
  Tree t;
  t.dirs[1] = files(100, 50);
  EXPECT_TRUE(ra.on_first_read(100, t.walk()).empty()) << "never listed";
  t.list(ra, 1);
  Reader r;
  r.read_all(ra, t, 1);
  // The same reader again (a second tar): starts over, pushes again.
  Reader r2;
  r2.read_all(ra, t, 1);
  EXPECT_LE(r2.reads, 4u);
  EXPECT_EQ(r2.pushed.size() + r2.reads, 50u);
}

}  // namespace
}  // namespace nydus::fuse
