#include "fuse/read_plan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace nydus::fuse {
namespace {

using format::ChunkRef;
constexpr uint32_t kCs = 0x10000;  // 64 KiB chunks
constexpr uint64_t kBig = uint64_t(1) << 40;

// Chunks laid out contiguously in blob 0 starting at block `first_blk`.
std::vector<ChunkRef> contiguous(size_t n, uint32_t first_blk = 0, uint32_t blob = 0) {
  std::vector<ChunkRef> v;
  for (size_t i = 0; i < n; ++i) v.push_back({blob, uint32_t(i), uint32_t(first_blk + i * (kCs / 4096))});
  return v;
}

TEST(ReadPlan, EmptyReads) {
  auto chunks = contiguous(2);
  std::vector<uint64_t> sizes{kBig};
  for (auto [off, size] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 0}, {2 * kCs, 10}, {2 * kCs + 5, 10}, {std::numeric_limits<uint64_t>::max(), 1}, {100, 0}}) {
    auto p = plan_read(chunks, kCs, 2 * kCs, off, size, sizes);
    ASSERT_TRUE(p) << p.error().message;
    EXPECT_EQ(p->total, 0u) << off;
    EXPECT_TRUE(p->segments.empty());
  }
  // Empty file: no chunks needed.
  auto p = plan_read({}, kCs, 0, 0, 4096, sizes);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->total, 0u);
}

TEST(ReadPlan, WithinOneChunk) {
  auto chunks = contiguous(3, 8);
  std::vector<uint64_t> sizes{kBig};
  auto p = plan_read(chunks, kCs, 3 * kCs, kCs + 100, 200, sizes);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->total, 200u);
  ASSERT_EQ(p->segments.size(), 1u);
  EXPECT_EQ(p->segments[0], (ReadSegment{0, (8 + 16) * 4096ull + 100, 200, 0}));
}

TEST(ReadPlan, ClampsAtEof) {
  auto chunks = contiguous(2);
  std::vector<uint64_t> sizes{kBig};
  const uint64_t fsize = kCs + 10;
  auto p = plan_read(chunks, kCs, fsize, kCs - 5, 1 << 20, sizes);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->total, 15u);
  // Contiguous in the blob: one merged segment.
  ASSERT_EQ(p->segments.size(), 1u);
  EXPECT_EQ(p->segments[0], (ReadSegment{0, kCs - 5, 15, 0}));
  // Huge size with a huge offset inside the file does not overflow.
  p = plan_read(chunks, kCs, fsize, fsize - 1, std::numeric_limits<uint64_t>::max(), sizes);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->total, 1u);
}

TEST(ReadPlan, SplitsAtNonContiguousChunkBoundaries) {
  // Chunk 1 is a dedup of a chunk far away; chunk 2 lives in another blob.
  std::vector<ChunkRef> chunks{{0, 0, 0}, {0, 7, 100}, {1, 0, 16}};
  std::vector<uint64_t> sizes{kBig, kBig};
  auto p = plan_read(chunks, kCs, 3 * kCs, kCs - 1, kCs + 2, sizes);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->total, kCs + 2);
  ASSERT_EQ(p->segments.size(), 3u);
  EXPECT_EQ(p->segments[0], (ReadSegment{0, kCs - 1, 1, 0}));
  EXPECT_EQ(p->segments[1], (ReadSegment{0, 100 * 4096ull, kCs, 1}));
  EXPECT_EQ(p->segments[2], (ReadSegment{1, 16 * 4096ull, 1, kCs + 1}));
}

TEST(ReadPlan, ExactChunkBoundaries) {
  auto chunks = contiguous(4, 0);
  chunks[2].blkaddr = 1000;  // break contiguity between 1 and 2
  std::vector<uint64_t> sizes{kBig};
  auto p = plan_read(chunks, kCs, 4 * kCs, kCs, 2 * kCs, sizes);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->segments.size(), 2u);
  EXPECT_EQ(p->segments[0], (ReadSegment{0, kCs, kCs, 0}));
  EXPECT_EQ(p->segments[1], (ReadSegment{0, 1000 * 4096ull, kCs, kCs}));
}

TEST(ReadPlan, BadImagesAreCorruptNotWrongBytes) {
  std::vector<uint64_t> sizes{4 * kCs};
  // Fewer chunks than the size needs.
  auto p = plan_read(contiguous(1), kCs, 2 * kCs, kCs, 10, sizes);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, Errc::kCorrupt);
  // Chunk points past the blob's uncompressed size.
  p = plan_read(contiguous(1, 64), kCs, kCs, 0, kCs, sizes);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, Errc::kCorrupt);
  // Blob index without a blob.
  p = plan_read(contiguous(1, 0, 3), kCs, kCs, 0, 1, sizes);
  ASSERT_FALSE(p);
  // Huge blkaddr near 2^32 blocks does not wrap.
  std::vector<ChunkRef> c{{0, 0, 0xFFFFFFF0u}};
  p = plan_read(c, kCs, kCs, 0, kCs, sizes);
  ASSERT_FALSE(p);
  // Chunk size 0.
  p = plan_read(contiguous(1), 0, kCs, 0, 1, sizes);
  ASSERT_FALSE(p);
}

}  // namespace
}  // namespace nydus::fuse
