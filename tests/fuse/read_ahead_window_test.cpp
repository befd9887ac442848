// The sequential read-ahead window: opens on consecutive reads, grows only as
// the reader consumes it, never passes EOF, closes on a jump.
#include "fuse/read_ahead_window.h"

#include <gtest/gtest.h>

namespace nydus::fuse {
namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;
using W = ReadAheadWindow;

TEST(ReadAheadWindow, StreamingReaderStaysAheadAndGrowsToTheCap) {
  W w;
  const uint64_t size = 256 * kMiB, step = 128 * kKiB;
  uint64_t issued_end = step;  // what the reader itself asked for
  uint64_t batches = 0, max_ahead = 0;
  for (uint64_t off = 0; off < size; off += step) {
    auto r = w.on_read(off, step, size);
    if (r.len > 0) {
      EXPECT_EQ(r.off, std::max(issued_end, off + step)) << "contiguous, no overlap, nothing skipped";
      issued_end = r.off + r.len;
      batches++;
    }
    ASSERT_LE(issued_end, size);
    if (off + step < size) {
      EXPECT_GT(issued_end, off + step) << "the reader never catches up at " << off;
      max_ahead = std::max(max_ahead, issued_end - (off + step));
    }
  }
  EXPECT_EQ(issued_end, size);
  EXPECT_LE(max_ahead, W::kMax);
  EXPECT_GE(max_ahead, W::kMax / 2) << "the window grew";
  // Batches of at least kMax/4 once grown: a few dozen, not one per read.
  EXPECT_LT(batches, 2 * size / W::kMax + 8);
}

TEST(ReadAheadWindow, GrowsOnlyAsFastAsConsumed) {
  W w;
  const uint64_t size = 1024 * kMiB;
  auto first = w.on_read(0, 128 * kKiB, size);
  EXPECT_EQ(first.off, 128 * kKiB);
  EXPECT_EQ(first.len, W::kInitial);
  // A reader that stops after its first megabyte caused at most two batches.
  uint64_t total = first.len;
  for (uint64_t off = 128 * kKiB; off < kMiB; off += 128 * kKiB) total += w.on_read(off, 128 * kKiB, size).len;
  EXPECT_LE(total, 3 * W::kInitial);
}

TEST(ReadAheadWindow, NeverPastTheEndOfTheFile) {
  W w;
  const uint64_t size = 300 * kKiB;
  auto r = w.on_read(0, 128 * kKiB, size);
  EXPECT_EQ(r.off, 128 * kKiB);
  EXPECT_EQ(r.off + r.len, size);
  EXPECT_EQ(w.on_read(128 * kKiB, 128 * kKiB, size).len, 0u);
  EXPECT_EQ(w.on_read(256 * kKiB, 44 * kKiB, size).len, 0u);
  W tiny;
  EXPECT_EQ(tiny.on_read(0, 100, 100).len, 0u) << "a file read whole by its first read";
}

TEST(ReadAheadWindow, RandomReadsIssueNothing) {
  W w;
  const uint64_t size = 1024 * kMiB;
  EXPECT_EQ(w.on_read(500 * kMiB, 4096, size).len, 0u);
  uint64_t total = 0;
  for (uint64_t i = 1; i < 200; i++) total += w.on_read((i * 7919 % 1000) * kMiB, 4096, size).len;
  EXPECT_EQ(total, 0u);
}

TEST(ReadAheadWindow, AJumpRestartsTheWindowAtTheNewPlace) {
  W w;
  const uint64_t size = 1024 * kMiB;
  for (uint64_t off = 0; off < 32 * kMiB; off += 128 * kKiB) w.on_read(off, 128 * kKiB, size);
  EXPECT_EQ(w.on_read(600 * kMiB, 128 * kKiB, size).len, 0u);
  auto r = w.on_read(600 * kMiB + 128 * kKiB, 128 * kKiB, size);
  EXPECT_EQ(r.off, 600 * kMiB + 256 * kKiB);
  EXPECT_EQ(r.len, W::kInitial) << "back to the initial size";
}

TEST(ReadAheadWindow, SlightlyReorderedReadsStaySequential) {
  W w;
  const uint64_t size = 1024 * kMiB, step = 128 * kKiB;
  uint64_t total = 0;
  // Pairs answered out of order by two FUSE workers.
  for (uint64_t off = 0; off < 64 * kMiB; off += 2 * step) {
    total += w.on_read(off + step, step, size).len;
    total += w.on_read(off, step, size).len;
  }
  EXPECT_GE(total, 64 * kMiB);
}

}  // namespace
}  // namespace nydus::fuse
