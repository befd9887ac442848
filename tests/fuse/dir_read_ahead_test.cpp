// Read-ahead across a directory's files: a reader going through a directory
// in listing order gets the next files pushed (a growing window, only small
// regular files, never the same file twice); one that picks single files
// out of it gets none, nor does one whose reads jump about.
#include "fuse/dir_read_ahead.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
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
  uint32_t pid = 1;

  void read_all(DRA& ra, Tree& t, uint64_t dir) {
    for (const auto& e : t.dirs.at(dir)) {
      if (!e.regular || pushed.contains(e.ino)) continue;
      reads++;
      for (uint64_t p : ra.on_first_read(e.ino, pid, t.walk())) {
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
  auto p = ra.on_first_read(100, 1, t.walk());
  ASSERT_EQ(p.size(), l.start_window);
  EXPECT_EQ(p.front(), 101u);
  // A file in the middle read first: nothing.
  DRA ra2(l);
  t.list(ra2, 1);
  EXPECT_TRUE(ra2.on_first_read(150, 1, t.walk()).empty());
}

TEST(DirReadAhead, PickingSingleFilesPushesNothing) {
  DRA ra;
  Tree t;
  t.dirs[1] = files(100, 500);
  t.list(ra, 1);
  // An interpreter importing a few modules: far apart, out of order.
  for (uint64_t ino : {340, 120, 480, 130, 260, 110, 400})
    EXPECT_TRUE(ra.on_first_read(ino, 1, t.walk()).empty()) << ino;
}

TEST(DirReadAhead, JumpClosesTheWindow) {
  DRA ra;
  Tree t;
  t.dirs[1] = files(100, 1000);
  t.list(ra, 1);
  EXPECT_TRUE(ra.on_first_read(110, 1, t.walk()).empty());
  EXPECT_FALSE(ra.on_first_read(111, 1, t.walk()).empty()) << "two in order open it";
  EXPECT_TRUE(ra.on_first_read(700, 1, t.walk()).empty()) << "a jump far past the window";
  EXPECT_TRUE(ra.on_first_read(300, 1, t.walk()).empty()) << "and backwards";
  EXPECT_FALSE(ra.on_first_read(301, 1, t.walk()).empty()) << "in order again";
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
  const std::vector<uint64_t> first = ra.on_first_read(100, 1, t.walk());
  EXPECT_EQ(first, (std::vector<uint64_t>{101, 102, 103, 300}));
  // The reader goes on past the push: a bigger window, cut by the byte budget.
  const std::vector<uint64_t> next = ra.on_first_read(301, 1, t.walk());
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
  EXPECT_TRUE(ra.on_first_read(10000, 1, t.walk()).empty());
  EXPECT_TRUE(ra.on_first_read(10001, 1, t.walk()).empty());
  // The newest directory still works.
  EXPECT_FALSE(ra.on_first_read(500000, 1, t.walk()).empty());
}

TEST(DirReadAhead, UnknownFilesAndRereadsPushNothing) {
  DRA ra;
  Tree t;
  t.dirs[1] = files(100, 50);
  EXPECT_TRUE(ra.on_first_read(100, 1, t.walk()).empty()) << "never listed";
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

namespace nydus::fuse {
namespace {

// tar: after it has read directories in listing order, the next directory
// it lists gets its first files pushed at once, and reading that directory
// then pushes nothing twice. Other processes' listings push nothing.
TEST(DirReadAhead, TreeReaderGetsItsNextDirectoryPushedOnListing) {
  DRA::Limits l;
  DRA ra(l);
  Tree t;
  for (uint64_t d = 1; d <= 5; ++d) t.dirs[d] = files(d * 1000, 20);
  Reader tar;
  tar.pid = 7;
  EXPECT_TRUE(ra.on_listing(1, 7, t.walk()).empty()) << "nothing known of pid 7 yet";
  for (uint64_t d = 1; d <= DRA::kTreeReaderAfter; ++d) {
    t.list(ra, d);
    tar.read_all(ra, t, d);
  }
  EXPECT_TRUE(ra.on_listing(4, 9, t.walk()).empty()) << "another process (a stat walk)";
  EXPECT_TRUE(ra.on_listing(1, 7, t.walk()).empty()) << "a directory read already";
  t.list(ra, 3);
  const std::vector<uint64_t> p = ra.on_listing(3, 7, t.walk());
  ASSERT_EQ(p.size(), l.start_window);
  EXPECT_EQ(p.front(), 3000u) << "from the directory's first file";
  EXPECT_TRUE(ra.on_listing(3, 7, t.walk()).empty()) << "once per directory";
  const uint64_t reads_before = tar.reads;
  for (uint64_t ino : p) tar.pushed.insert(ino);
  tar.read_all(ra, t, 3);
  EXPECT_LE(tar.reads - reads_before, 2u) << "the READ past the push, and the one past the next";
  EXPECT_EQ(tar.pushes_of_a_pushed_file, 0u);
  EXPECT_EQ(tar.pushed.size() + tar.reads, 60u);
}

TEST(DirReadAhead, AJumpEndsTheTreeReader) {
  DRA ra;
  Tree t;
  for (uint64_t d = 1; d <= 4; ++d) t.dirs[d] = files(d * 1000, 50);
  Reader tar;
  tar.pid = 7;
  for (uint64_t d = 1; d <= 2; ++d) {
    t.list(ra, d);
    tar.read_all(ra, t, d);
  }
  t.list(ra, 3);
  (void)ra.on_first_read(3010, 7, t.walk());
  (void)ra.on_first_read(3011, 7, t.walk());
  EXPECT_TRUE(ra.on_first_read(3045, 7, t.walk()).empty()) << "a jump";
  EXPECT_TRUE(ra.on_listing(4, 7, t.walk()).empty()) << "pid 7 no longer counts as a tree reader";
}

// A reader that lists directories and reads a file here and there (an
// interpreter) is not taken for a tree reader.
TEST(DirReadAhead, PickingSingleFilesNeverPushesOnListing) {
  DRA ra;
  Tree t;
  for (uint64_t d = 1; d <= 6; ++d) t.dirs[d] = files(d * 1000, 100);
  for (uint64_t d = 1; d <= 5; ++d) {
    t.list(ra, d);
    EXPECT_TRUE(ra.on_listing(d, 5, t.walk()).empty()) << d;
    (void)ra.on_first_read(d * 1000 + 40, 5, t.walk());
    (void)ra.on_first_read(d * 1000 + 12, 5, t.walk());
    (void)ra.on_first_read(d * 1000 + 77, 5, t.walk());
  }
  EXPECT_TRUE(ra.on_listing(6, 5, t.walk()).empty());
}

}  // namespace
}  // namespace nydus::fuse
