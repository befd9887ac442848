// The blob cache over real blobs: byte-exact reads for every compressor,
// persistence across reopen, digest validation, single-fetch under
// concurrency, request merging, distrust of damaged cache files, and the
// write-then-mark ordering that makes a crash harmless.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <map>
#include <thread>

#include "common/test_util.h"
#include "storage/blob_cache.h"
#include "storage/chunk_map.h"
#include "storage/localfs_backend.h"
#include "storage_test_util.h"

namespace nydus::storage {
namespace {

namespace fs = std::filesystem;
using format::Compressor;
using nydus::test::read_file;
using nydus::test::TempDir;
using nydus::test::write_file;
using test::Bytes;
using test::FakeBackend;
using test::TestBlob;

// Mixed chunks: compressible and not, full and partial (so the uncompressed
// layout has zero gaps up to the next 4K boundary).
std::vector<Bytes> sample_chunks() {
  return {test::text_bytes(65536, 1), test::random_bytes(65536, 2), test::text_bytes(10000, 3),
          test::random_bytes(65536, 4), test::text_bytes(65536, 5),  test::text_bytes(5, 6),
          test::random_bytes(30000, 7), test::text_bytes(65536, 8)};
}

struct Env {
  TempDir dir;
  TestBlob blob;
  std::shared_ptr<LocalFsBackend> local;
  std::shared_ptr<FakeBackend> fake;
  CacheConfig cfg;

  explicit Env(Compressor c = Compressor::kZstd, std::vector<Bytes> chunks = sample_chunks()) {
    fs::create_directories(dir / "blobs");
    blob = test::build_test_blob(dir / "blobs", c, chunks);
    local = *LocalFsBackend::create(LocalFsConfig{dir / "blobs", {}, {}});
    fake = std::make_shared<FakeBackend>(local);
    cfg.work_dir = dir / "cache";
    cfg.digest_validate = true;
    cfg.amplify_reads = false;  // most tests count exactly which chunks a read fetches
  }
  std::shared_ptr<BlobCache> open(std::shared_ptr<Backend> b = nullptr, bool digests = true) {
    auto c = BlobCache::open(blob.info, b ? b : fake, cfg, digests ? blob.digests() : std::vector<format::Digest>{});
    EXPECT_TRUE(c.has_value()) << c.error().message;
    return c ? *c : nullptr;
  }
  fs::path file(const char* suffix) const { return cfg.work_dir / (blob.info.blob_id + suffix); }
  uint64_t uoff(size_t i) const { return blob.records[i].uncompressed_offset; }
  uint64_t uend(size_t i) const { return uoff(i) + blob.records[i].uncompressed_size; }
  Bytes expect(uint64_t off, uint64_t len) const {
    return Bytes(blob.layout.begin() + ptrdiff_t(off), blob.layout.begin() + ptrdiff_t(off + len));
  }
};

Bytes read_range(BlobCache& c, uint64_t off, uint64_t len) {
  Bytes out(len);
  auto r = c.read(off, out);
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return out;
}

// ---- (b) whole-blob reads for each compressor ----------------------------------

class CacheCompressors : public testing::TestWithParam<Compressor> {};

TEST_P(CacheCompressors, EveryByteMatchesTheSource) {
  Env env(GetParam());
  ASSERT_EQ(env.blob.records.size(), 8u);
  auto cache = env.open();
  ASSERT_TRUE(cache);
  EXPECT_EQ(cache->chunk_count(), 8u);
  for (size_t i = 0; i < 8; i++) {
    EXPECT_EQ(cache->chunk(uint32_t(i)).uncompressed_offset, env.blob.records[i].uncompressed_offset);
    EXPECT_EQ(cache->chunk(uint32_t(i)).compressed_offset, env.blob.records[i].compressed_offset);
    EXPECT_EQ(cache->chunk(uint32_t(i)).digest, env.blob.records[i].digest);
  }
  EXPECT_FALSE(cache->is_ready(0, env.blob.info.uncompressed_size));
  EXPECT_EQ(read_range(*cache, 0, env.blob.info.uncompressed_size), env.blob.layout);
  EXPECT_TRUE(cache->is_ready(0, env.blob.info.uncompressed_size));
  // The file contents concatenated from the chunk ranges are the source.
  Bytes file;
  for (size_t i = 0; i < 8; i++) {
    Bytes part = read_range(*cache, env.uoff(i), env.blob.records[i].uncompressed_size);
    EXPECT_EQ(part, env.blob.chunks[i]) << "chunk " << i;
  }
  // The cache files: the data file is exactly the uncompressed layout.
  EXPECT_EQ(read_file(cache->data_path()), env.blob.layout);
  EXPECT_EQ(cache->data_path(), env.file(".blob.data"));
  EXPECT_TRUE(fs::exists(env.file(".blob.meta")));
  EXPECT_TRUE(fs::exists(env.file(".chunk_map")));
  auto m = cache->metrics();
  EXPECT_EQ(m.chunks_total, 8u);
  EXPECT_EQ(m.chunks_ready, 8u);
  EXPECT_EQ(m.misses, 8u);
  EXPECT_EQ(m.hits, 8u);
  EXPECT_EQ(m.digest_failures, 0u);
  EXPECT_TRUE(cache->flush().has_value());

  // Piecewise reads on a fresh cache (4 KiB, like the page cache would).
  env.cfg.work_dir = env.dir / "cache2";
  auto c2 = env.open();
  for (uint64_t off = 0; off < env.blob.info.uncompressed_size; off += 4096)
    ASSERT_EQ(read_range(*c2, off, 4096), env.expect(off, 4096)) << off;
}

INSTANTIATE_TEST_SUITE_P(All, CacheCompressors,
                         testing::Values(Compressor::kNone, Compressor::kLz4Block, Compressor::kZstd),
                         [](const auto& p) { return std::string(format::compressor_name(p.param)); });

// ---- (c) partial ranges ------------------------------------------------------

TEST(BlobCache, PartialRangesAcrossChunkBoundaries) {
  Env env;
  auto cache = env.open();
  ASSERT_TRUE(cache);
  const uint64_t size = env.blob.info.uncompressed_size;
  // Across 0|1, 1 byte at each end of chunk 2, inside the zero gap after 2,
  // from the gap into 3, across 4|5|6, the tail.
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {env.uend(0) - 100, 200},    {env.uoff(2), 1},      {env.uend(2) - 1, 1},  {env.uend(2), 100},
      {env.uend(2) + 5, env.uoff(3) - env.uend(2) + 10}, {env.uoff(4) + 1, env.uend(6) - env.uoff(4)},
      {0, 1}};
  for (auto [off, len] : ranges) {
    ASSERT_LE(off + len, size);
    EXPECT_EQ(read_range(*cache, off, len), env.expect(off, len)) << off << "+" << len;
    EXPECT_TRUE(cache->is_ready(off, len));
  }
  // Only the touched chunks were fetched: chunk 1 was only needed for 0|1.
  EXPECT_TRUE(cache->is_ready(env.uoff(1), 1));
  EXPECT_FALSE(cache->is_ready(env.uoff(7), 1)) << "chunk 7 was never read";
  // A gap-only read touches no chunk.
  const int before = env.fake->reads.load();
  EXPECT_EQ(read_range(*cache, env.uend(5), env.uoff(6) - env.uend(5)), Bytes(env.uoff(6) - env.uend(5), 0));
  EXPECT_EQ(env.fake->reads.load(), before);
  // Out of range.
  Bytes out(10);
  EXPECT_FALSE(cache->read(size - 5, out).has_value());
  EXPECT_FALSE(cache->read(UINT64_MAX - 2, out).has_value());
  EXPECT_FALSE(cache->is_ready(size - 5, 10));
  EXPECT_TRUE(cache->read(size, std::span<uint8_t>()).has_value());
  // fetch_range clamps a coarse length; prefetch traffic is counted.
  ASSERT_TRUE(cache->fetch_range(env.uoff(7), UINT64_MAX, true).has_value());
  EXPECT_TRUE(cache->is_ready(env.uoff(7), size - env.uoff(7)));
  EXPECT_EQ(read_range(*cache, size - 1, 1), env.expect(size - 1, 1));
  EXPECT_GT(cache->metrics().prefetch_bytes, 0u);
  EXPECT_FALSE(cache->fetch_range(size + 1, 1).has_value());
}

// ---- (d) persistence ---------------------------------------------------------

TEST(BlobCache, ReadyChunksSurviveReopenWithoutBackend) {
  Env env;
  const uint64_t half = env.uend(3);
  {
    auto cache = env.open();
    ASSERT_TRUE(cache);
    EXPECT_EQ(read_range(*cache, 0, half), env.expect(0, half));
  }
  auto dead = std::make_shared<FakeBackend>(env.local);
  dead->fail = true;
  auto cache = env.open(dead);
  ASSERT_TRUE(cache) << "the blob meta must come from the cache file";
  EXPECT_EQ(dead->reads.load(), 0);
  for (size_t i = 0; i < 8; i++) EXPECT_EQ(cache->is_ready(env.uoff(i), 1), i <= 3) << i;
  EXPECT_EQ(cache->metrics().chunks_ready, 4u);
  EXPECT_EQ(read_range(*cache, 0, half), env.expect(0, half));
  EXPECT_EQ(dead->reads.load(), 0);
  Bytes out(10);
  auto r = cache->read(env.uoff(5), out);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kIo);
  EXPECT_FALSE(cache->is_ready(env.uoff(5), 10));
  // The backend recovers: the same cache fetches now.
  dead->fail = false;
  EXPECT_EQ(read_range(*cache, env.uoff(5), 10), env.expect(env.uoff(5), 10));
}

// Pages of [off, off+len) of `path` in the kernel's page cache (mincore):
// an independent look at whether a read went through it.
size_t resident_pages(const fs::path& path, uint64_t off, uint64_t len) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return SIZE_MAX;
  const uint64_t size = fs::file_size(path);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return SIZE_MAX;
  std::vector<unsigned char> vec((size + 4095) / 4096);
  size_t n = SIZE_MAX;
  if (::mincore(map, size, vec.data()) == 0) {
    n = 0;
    for (uint64_t p = off / 4096; p < (off + len + 4095) / 4096 && p < vec.size(); p++) n += vec[p] & 1;
  }
  ::munmap(map, size);
  return n;
}

// Drop the file's pages from the page cache (they are clean once synced).
void evict(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// A page-aligned buffer, as the FUSE paths lease them (ScratchPool, the
// io_uring payload); `skew` bytes in, to get an unaligned one.
struct AlignedBuf {
  explicit AlignedBuf(size_t n, size_t skew = 0)
      : mem(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + skew + 4095) / 4096 * 4096))), span(mem + skew, n) {}
  ~AlignedBuf() { std::free(mem); }
  uint8_t* mem;
  std::span<uint8_t> span;
};

TEST(BlobCache, BigReadsOfChunksOnDiskGoAroundThePageCache) {
  Env env;
  const uint64_t big = env.uend(4) / 4096 * 4096;  // > 64 KiB, chunks 0-4
  ASSERT_GE(big, 128u << 10);
  {
    auto cache = env.open();
    ASSERT_TRUE(cache);
    EXPECT_EQ(read_range(*cache, 0, env.uend(7)), env.expect(0, env.uend(7)));
  }  // closed: the bits are persisted
  const fs::path data = env.file(".blob.data");
  evict(data);
  ASSERT_EQ(resident_pages(data, 0, env.uend(7)), 0u) << "the filesystem keeps every page (tmpfs?): cannot tell";

  auto cache = env.open();
  ASSERT_TRUE(cache);
  AlignedBuf direct(big);
  ASSERT_TRUE(cache->read(0, direct.span).has_value());
  EXPECT_TRUE(std::equal(direct.span.begin(), direct.span.end(), env.expect(0, big).begin()));
  EXPECT_EQ(resident_pages(data, 0, big), 0u) << "a big aligned read of synced chunks went through the page cache";

  // Not 4 KiB-aligned in memory, or small: buffered (the kernel sees the pages).
  AlignedBuf skewed(big, 1);
  ASSERT_TRUE(cache->read(0, skewed.span).has_value());
  EXPECT_TRUE(std::equal(skewed.span.begin(), skewed.span.end(), env.expect(0, big).begin()));
  EXPECT_GT(resident_pages(data, 0, big), 0u);
  evict(data);
  AlignedBuf small(8192);
  ASSERT_TRUE(cache->read(env.uoff(4), small.span).has_value());
  EXPECT_TRUE(std::equal(small.span.begin(), small.span.end(), env.expect(env.uoff(4), 8192).begin()));
  EXPECT_GT(resident_pages(data, env.uoff(4), 8192), 0u);

  // An unaligned length: the aligned head direct, the tail buffered.
  evict(data);
  AlignedBuf odd(big - 100);
  ASSERT_TRUE(cache->read(0, odd.span).has_value());
  EXPECT_TRUE(std::equal(odd.span.begin(), odd.span.end(), env.expect(0, big - 100).begin()));
  EXPECT_EQ(resident_pages(data, 0, big - 4096), 0u);
}

// Extents of `path` the filesystem has not allocated yet (FIEMAP's
// delayed-allocation flag: written, not yet written back). ext4 writes the
// file back as it answers, so this looks once.
size_t delalloc_extents(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return SIZE_MAX;
  constexpr unsigned kMax = 64;
  std::vector<uint8_t> mem(sizeof(fiemap) + kMax * sizeof(fiemap_extent));
  auto* fm = reinterpret_cast<fiemap*>(mem.data());
  fm->fm_start = 0;
  fm->fm_length = FIEMAP_MAX_OFFSET;
  fm->fm_extent_count = kMax;
  size_t n = SIZE_MAX;
  if (::ioctl(fd, FS_IOC_FIEMAP, fm) == 0) {
    n = 0;
    for (unsigned i = 0; i < fm->fm_mapped_extents; i++) n += (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_DELALLOC) != 0;
  }
  ::close(fd);
  return n;
}

// Chunks fetched by this process are read buffered until their bits are
// persisted: a direct read would first write their dirty pages back.
TEST(BlobCache, FreshlyFetchedChunksAreReadThroughThePageCache) {
  Env env;
  auto cache = env.open();
  ASSERT_TRUE(cache);
  const uint64_t big = env.uend(4) / 4096 * 4096;
  // Whether this filesystem shows delayed allocation at all (FIEMAP of a
  // file writes it back, so the probe is another file).
  const fs::path probe = env.dir / "probe";
  write_file(probe, std::string(65536, 'x'));
  ASSERT_GT(delalloc_extents(probe), 0u) << "the filesystem allocates at once (no delayed allocation): cannot tell";
  ASSERT_TRUE(cache->fetch_range(0, big, false).has_value());
  const fs::path data = env.file(".blob.data");
  AlignedBuf buf(big);
  ASSERT_TRUE(cache->read(0, buf.span).has_value());
  EXPECT_TRUE(std::equal(buf.span.begin(), buf.span.end(), env.expect(0, big).begin()));
  EXPECT_GT(delalloc_extents(data), 0u) << "the read wrote the fetched chunks back";
}

TEST(BlobCache, BlobWithoutMetaIsUnsupported) {
  Env env;
  format::BlobInfo b = env.blob.info;
  b.ci_compressed_size = b.ci_uncompressed_size = 0;
  auto r = BlobCache::open(b, env.fake, env.cfg);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kUnsupported);
  b = env.blob.info;
  b.blob_id = "../evil";
  EXPECT_FALSE(BlobCache::open(b, env.fake, env.cfg).has_value());
  b = env.blob.info;
  b.chunk_count += 1;  // the table disagrees with the blob meta
  EXPECT_FALSE(BlobCache::open(b, env.fake, env.cfg).has_value());
}

// ---- (e) digest validation -----------------------------------------------------

TEST(BlobCache, CorruptChunkIsNeverServedOrMarked) {
  Env env(Compressor::kNone);  // raw chunks: a flipped byte is a digest mismatch, not a decode error
  const format::ChunkRecord& bad = env.blob.records[3];
  {
    Bytes blob = read_file(env.blob.path);
    blob[bad.compressed_offset + bad.compressed_size / 2] ^= 0x55;
    write_file(env.blob.path, blob);
  }
  auto cache = env.open();
  ASSERT_TRUE(cache);
  Bytes out(bad.uncompressed_size);
  auto r = cache->read(bad.uncompressed_offset, out);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
  EXPECT_NE(r.error().message.find("chunk digest mismatch"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().to_errno(), EIO);
  EXPECT_EQ(cache->metrics().digest_failures, 1u);
  EXPECT_FALSE(cache->is_ready(bad.uncompressed_offset, 1));
  const Bytes data = read_file(cache->data_path());
  EXPECT_TRUE(std::all_of(data.begin() + ptrdiff_t(bad.uncompressed_offset),
                          data.begin() + ptrdiff_t(bad.uncompressed_offset + bad.uncompressed_size),
                          [](uint8_t b) { return b == 0; }));
  // A range over a good and the bad chunk fails but keeps the good one.
  Bytes both(env.uend(3) - env.uoff(2));
  EXPECT_FALSE(cache->read(env.uoff(2), both).has_value());
  EXPECT_TRUE(cache->is_ready(env.uoff(2), 1));
  EXPECT_FALSE(cache->is_ready(env.uoff(3), 1));
  // Neighbours still read fine.
  EXPECT_EQ(read_range(*cache, env.uoff(4), 100), env.expect(env.uoff(4), 100));
}

// ---- (f) concurrency -------------------------------------------------------------

TEST(BlobCache, ConcurrentReadersFetchEachChunkOnce) {
  Env env;
  env.cfg.amplify_io = 1;  // one request per chunk, so requests map to chunks
  auto cache = env.open();
  ASSERT_TRUE(cache);
  env.fake->requests.clear();
  env.fake->reads = 0;
  // Slow backend: widens the window in which others want the same chunk.
  env.fake->hook = [](uint64_t, uint64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(20)); };
  constexpr int kThreads = 8;
  std::barrier start(kThreads);
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++)
    ts.emplace_back([&, t] {
      start.arrive_and_wait();
      for (size_t k = 0; k < 8; k++) {
        const size_t i = (k + size_t(t) % 3) % 8;  // overlapping orders
        const uint64_t off = env.uoff(i), len = env.uend(i) - off;
        Bytes out(len);
        if (!cache->read(off, out) || out != env.expect(off, len)) bad++;
      }
      // And one big read spanning everything.
      Bytes all(env.blob.info.uncompressed_size);
      if (!cache->read(0, all) || all != env.blob.layout) bad++;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  std::map<uint64_t, int> per_chunk;
  for (auto [off, len] : env.fake->requests) per_chunk[off]++;
  EXPECT_EQ(per_chunk.size(), 8u);
  for (auto [off, n] : per_chunk) EXPECT_EQ(n, 1) << "chunk at " << off;
  EXPECT_EQ(env.fake->reads.load(), 8);
}

TEST(BlobCache, ConcurrentReadersWithFailingBackendDoNotHang) {
  Env env;
  auto cache = env.open();
  ASSERT_TRUE(cache);
  env.fake->fail = true;
  env.fake->hook = [](uint64_t, uint64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(5)); };
  std::vector<std::thread> ts;
  std::atomic<int> errors{0};
  for (int t = 0; t < 8; t++)
    ts.emplace_back([&] {
      Bytes out(1000);
      if (!cache->read(env.uoff(1), out)) errors++;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(errors.load(), 8);
  EXPECT_FALSE(cache->is_ready(env.uoff(1), 1));
}

// ---- (g) request merging -----------------------------------------------------------

TEST(BlobCache, AdjacentMissingChunksMergeIntoOneRequest) {
  Env env;
  auto cache = env.open();
  ASSERT_TRUE(cache);
  env.fake->reads = 0;
  env.fake->requests.clear();
  ASSERT_TRUE(cache->fetch_range(env.uoff(1), env.uend(4) - env.uoff(1)).has_value());
  ASSERT_EQ(env.fake->reads.load(), 1);
  const auto& r1 = env.blob.records[1];
  const auto& r4 = env.blob.records[4];
  EXPECT_EQ(env.fake->requests[0].first, r1.compressed_offset);
  EXPECT_EQ(env.fake->requests[0].second, r4.compressed_offset + r4.compressed_size - r1.compressed_offset);
  EXPECT_EQ(read_range(*cache, env.uoff(1), env.uend(4) - env.uoff(1)), env.expect(env.uoff(1), env.uend(4) - env.uoff(1)));
  EXPECT_EQ(env.fake->reads.load(), 1) << "served from the cache";

  // A hole (ready chunk) in the middle splits the request; amplify_io caps it.
  env.cfg.work_dir = env.dir / "cache2";
  env.cfg.amplify_io = env.blob.records[5].compressed_size + env.blob.records[6].compressed_size;
  auto c2 = env.open();
  ASSERT_TRUE(c2);
  ASSERT_TRUE(c2->fetch_range(env.uoff(2), 1).has_value());
  env.fake->reads = 0;
  ASSERT_TRUE(c2->fetch_range(env.uoff(0), env.uend(7)).has_value());
  // {0,1} hits the cap after... cap = |5|+|6|: count what it must be.
  uint64_t expected = 0;
  {
    std::vector<size_t> missing = {0, 1, 3, 4, 5, 6, 7};
    size_t k = 0;
    while (k < missing.size()) {
      uint64_t total = env.blob.records[missing[k]].compressed_size;
      size_t j = k + 1;
      while (j < missing.size() && missing[j] == missing[j - 1] + 1 &&
             total + env.blob.records[missing[j]].compressed_size <= env.cfg.amplify_io)
        total += env.blob.records[missing[j++]].compressed_size;
      expected++;
      k = j;
    }
  }
  EXPECT_EQ(uint64_t(env.fake->reads.load()), expected);
  EXPECT_GE(expected, 3u);
  EXPECT_EQ(read_range(*c2, 0, env.blob.info.uncompressed_size), env.blob.layout);
}

// A batch (--batch-size) is fetched and decoded whole for any of its chunks:
// the others of that batch come with it (eStargz payloads sharing a gzip
// member are batches too, see Bootstrap::adopt_stargz_chunks).
TEST(BlobCache, ABatchChunkReadBringsItsWholeBatch) {
  TempDir dir;
  fs::create_directories(dir / "blobs");
  format::BlobWriterOptions opts;
  opts.compressor = Compressor::kZstd;
  opts.chunk_size = 64 << 10;
  opts.batch_size = 16 << 10;
  auto w = format::BlobWriter::create(dir / "blob.tmp", opts);
  ASSERT_TRUE(w) << w.error().message;
  std::vector<Bytes> chunks;
  std::vector<format::ChunkRecord> recs;
  for (uint8_t i = 0; i < 12; i++) {  // 12 x 3-4 KiB: batches of four or five
    chunks.push_back(test::text_bytes(3000 + 100 * i, i));
    auto r = (*w)->add_batch_chunk(chunks.back(), format::compute_digest(opts.digester, chunks.back()),
                                   format::crc32c(chunks.back()));
    ASSERT_TRUE(r) << r.error().message;
    recs.push_back(*r);
  }
  ASSERT_TRUE((*w)->finish_meta());
  auto info = (*w)->close();
  ASSERT_TRUE(info) << info.error().message;
  fs::rename(dir / "blob.tmp", dir / "blobs" / info->blob_id);
  auto fake = std::make_shared<FakeBackend>(*LocalFsBackend::create(LocalFsConfig{dir / "blobs", {}, {}}));
  CacheConfig cfg;
  cfg.work_dir = dir / "cache";
  cfg.digest_validate = true;
  cfg.amplify_reads = false;
  std::vector<format::Digest> digests;
  for (const auto& r : recs) digests.push_back(r.digest);
  auto cache = BlobCache::open(*info, fake, cfg, digests);
  ASSERT_TRUE(cache) << cache.error().message;
  fake->reads = 0;  // the blob meta's fetch

  EXPECT_EQ(read_range(**cache, recs[2].uncompressed_offset, chunks[2].size()), chunks[2]);
  EXPECT_EQ(fake->reads.load(), 1);
  size_t ready = 0;
  for (size_t i = 0; i < recs.size(); i++) ready += (*cache)->is_ready(recs[i].uncompressed_offset, chunks[i].size());
  EXPECT_GE(ready, 4u) << "chunk 2's batch, not chunk 2 alone";
  EXPECT_LT(ready, recs.size()) << "the other batch stays where it is";
  const int reads = fake->reads.load();
  for (size_t i = 0; i < recs.size(); i++) {
    if ((*cache)->is_ready(recs[i].uncompressed_offset, chunks[i].size())) {
      EXPECT_EQ(read_range(**cache, recs[i].uncompressed_offset, chunks[i].size()), chunks[i]) << i;
    }
  }
  EXPECT_EQ(fake->reads.load(), reads) << "its batch was served from the cache";

  // A chunk of the batch that fails its digest fails its own reads only.
  cfg.work_dir = dir / "cache2";
  digests[1][0] ^= 1;
  auto c2 = BlobCache::open(*info, fake, cfg, digests);
  ASSERT_TRUE(c2) << c2.error().message;
  EXPECT_EQ(read_range(**c2, recs[2].uncompressed_offset, chunks[2].size()), chunks[2]);
  Bytes out(chunks[1].size());
  EXPECT_FALSE((*c2)->read(recs[1].uncompressed_offset, out)) << "chunk 1's digest is wrong";
  EXPECT_EQ(read_range(**c2, recs[0].uncompressed_offset, chunks[0].size()), chunks[0]);
}

// ---- (h) damaged cache files ---------------------------------------------------------

TEST(BlobCache, CorruptChunkMapIsDiscarded) {
  Env env;
  {
    auto cache = env.open();
    ASSERT_TRUE(cache);
    read_range(*cache, 0, env.blob.info.uncompressed_size);
  }
  const Bytes good_map = read_file(env.file(".chunk_map"));
  ASSERT_EQ(good_map.size(), ChunkMap::file_size_for(8));

  auto expect_discarded = [&](const Bytes& map, const char* what) {
    write_file(env.file(".chunk_map"), map);
    env.fake->reads = 0;
    auto cache = env.open();
    ASSERT_TRUE(cache) << what;
    EXPECT_EQ(cache->metrics().chunks_ready, 0u) << what;
    EXPECT_FALSE(cache->is_ready(0, 1)) << what;
    EXPECT_EQ(read_range(*cache, 0, env.blob.info.uncompressed_size), env.blob.layout) << what;
    EXPECT_GT(env.fake->reads.load(), 0) << what;
  };
  Bytes m = good_map;
  m[0] ^= 1;
  expect_discarded(m, "bad magic");
  m = good_map;
  m[4] = 9;
  expect_discarded(m, "bad version");
  m = good_map;
  m[8] = 7;
  expect_discarded(m, "wrong chunk count");
  m = good_map;
  m.push_back(0);
  expect_discarded(m, "wrong size");
  m = good_map;
  m[ChunkMap::kHeaderSize] |= 0xFF;
  m[ChunkMap::kHeaderSize + 1] = 0x80;  // bit 15: no such chunk
  expect_discarded(m, "stray bits");
  expect_discarded(Bytes{}, "empty");

  // A data file of the wrong size is recreated and its map ignored.
  {
    auto cache = env.open();
    read_range(*cache, 0, env.blob.info.uncompressed_size);
  }
  fs::resize_file(env.file(".blob.data"), 4096);
  env.fake->reads = 0;
  auto cache = env.open();
  EXPECT_EQ(cache->metrics().chunks_ready, 0u);
  EXPECT_EQ(fs::file_size(env.file(".blob.data")), env.blob.info.uncompressed_size);
  EXPECT_EQ(read_range(*cache, 0, env.blob.info.uncompressed_size), env.blob.layout);
}

TEST(BlobCache, CorruptBlobMetaCacheIsDiscarded) {
  Env env;
  { ASSERT_TRUE(env.open()); }
  const Bytes good = read_file(env.file(".blob.meta"));
  ASSERT_EQ(good.size(), 4096u + 4096u);
  auto expect_refetched = [&](const Bytes& meta, const char* what) {
    write_file(env.file(".blob.meta"), meta);
    env.fake->reads = 0;
    env.fake->requests.clear();
    auto cache = env.open();
    ASSERT_TRUE(cache) << what;
    ASSERT_EQ(env.fake->reads.load(), 1) << what;
    EXPECT_EQ(env.fake->requests[0].first, env.blob.info.ci_offset) << what;
    EXPECT_EQ(read_file(env.file(".blob.meta")), good) << what << ": rewritten";
    EXPECT_EQ(read_range(*cache, 0, env.blob.info.uncompressed_size), env.blob.layout) << what;
  };
  Bytes m = good;
  m[m.size() - 4096] ^= 1;
  expect_refetched(m, "header magic");
  m = good;
  m[m.size() - 4096 + 12] = 99;
  expect_refetched(m, "entry count");
  m = good;
  m.pop_back();
  expect_refetched(m, "truncated");
  m = good;
  m[4000] = 1;
  expect_refetched(m, "padding");
  // ci entry 1 moved onto chunk 0's uncompressed range: overlap.
  m = good;
  auto e0 = format::load<format::ChunkInfoV1>(m.data());
  auto e1 = format::load<format::ChunkInfoV1>(m.data() + 16);
  e1.uncomp_info = (e1.uncomp_info & ~0x0000'0FFF'FFFF'F000ull) | (e0.uncomp_info & 0x0000'0FFF'FFFF'F000ull);
  std::memcpy(m.data() + 16, &e1, 16);
  expect_refetched(m, "overlapping entries");
  // ci entry pointing past the chunk data.
  m = good;
  e1 = format::load<format::ChunkInfoV1>(m.data() + 16);
  e1.comp_info = (e1.comp_info & ~0xFF'FFFF'FFFFull) | (env.blob.info.ci_offset + 1);
  std::memcpy(m.data() + 16, &e1, 16);
  expect_refetched(m, "compressed range outside the blob");
}

TEST(BlobCache, UnsortedCiOrderFallsBackToSortedIndex) {
  Env env;
  { ASSERT_TRUE(env.open()); }
  // Swap ci entries 0 and 1 in the cached meta: still a valid blob meta, but
  // ci order no longer follows the uncompressed layout.
  Bytes m = read_file(env.file(".blob.meta"));
  std::swap_ranges(m.begin(), m.begin() + 16, m.begin() + 16);
  write_file(env.file(".blob.meta"), m);
  env.fake->reads = 0;
  auto cache = env.open(nullptr, /*digests=*/false);  // digests are by the original ci order
  ASSERT_TRUE(cache);
  EXPECT_EQ(env.fake->reads.load(), 0) << "the swapped meta is valid and used";
  EXPECT_EQ(cache->chunk(0).uncompressed_offset, env.uoff(1));
  EXPECT_EQ(read_range(*cache, 0, env.blob.info.uncompressed_size), env.blob.layout);
  EXPECT_EQ(read_range(*cache, env.uend(0) - 10, 20), env.expect(env.uend(0) - 10, 20));
}

// ---- (i) write-then-mark ordering (crash safety) ----------------------------------------

TEST(BlobCache, BytesAreWrittenBeforeBitsAreSet) {
  Env env;
  auto cache = env.open();
  ASSERT_TRUE(cache);
  ASSERT_EQ(read_range(*cache, env.uoff(1), 10), env.expect(env.uoff(1), 10));  // chunk 1 ready
  // Persistent bits lag behind (one fdatasync a second at most); flush
  // persists them now.
  ASSERT_TRUE(cache->flush().has_value());

  // Fetch chunks 0 and 2 in one call: not adjacent in the blob, so two
  // requests, 0 first. During the second, chunk 0 is written but unmarked:
  // snapshot the cache dir there, as a crash would leave it.
  const fs::path snap = env.dir / "snap";
  int calls = 0;
  bool bit0_during_first = true, bit2_during_first = true, bit0_during_second = true;
  Bytes chunk0_on_disk;
  env.fake->hook = [&](uint64_t, uint64_t) {
    if (++calls == 1) {
      bit0_during_first = cache->is_ready(env.uoff(0), 1);
      bit2_during_first = cache->is_ready(env.uoff(2), 1);
      return;
    }
    bit0_during_second = cache->is_ready(env.uoff(0), 1);
    const Bytes data = read_file(env.file(".blob.data"));
    chunk0_on_disk.assign(data.begin(), data.begin() + ptrdiff_t(env.uend(0)));
    fs::create_directories(snap);
    for (const char* s : {".blob.data", ".blob.meta", ".chunk_map"})
      fs::copy_file(env.file(s), snap / (env.blob.info.blob_id + s));
  };
  ASSERT_TRUE(cache->fetch_range(0, env.uend(2)).has_value());
  EXPECT_EQ(calls, 2);
  EXPECT_FALSE(bit0_during_first);
  EXPECT_FALSE(bit2_during_first);
  EXPECT_FALSE(bit0_during_second) << "bits are set only after the whole fetch is written and synced";
  EXPECT_EQ(chunk0_on_disk, env.blob.chunks[0]) << "bytes were written before the bits";
  EXPECT_TRUE(cache->is_ready(0, env.uend(2)));

  // The "crashed" state: chunk 1 ready, 0 and 2 not; reopening refetches them.
  env.cfg.work_dir = snap;
  env.fake->hook = nullptr;
  auto dead = std::make_shared<FakeBackend>(env.local);
  dead->fail = true;
  auto after = env.open(dead);
  ASSERT_TRUE(after);
  EXPECT_FALSE(after->is_ready(env.uoff(0), 1));
  EXPECT_TRUE(after->is_ready(env.uoff(1), 1));
  EXPECT_FALSE(after->is_ready(env.uoff(2), 1));
  dead->fail = false;
  EXPECT_EQ(read_range(*after, 0, env.uend(2)), env.expect(0, env.uend(2)));
}

// Bits reach the chunk map on disk about a second after the last write even
// with no further misses: a crash (here: a copy of the files, as a kill -9
// would leave them) keeps them.
TEST(BlobCache, ReadyBitsArePersistedWithoutFurtherMisses) {
  Env env;
  auto cache = env.open();
  ASSERT_TRUE(cache);
  ASSERT_EQ(read_range(*cache, env.uoff(1), 10), env.expect(env.uoff(1), 10));
  auto on_disk = [&] {
    auto m = ChunkMap::open(env.file(".chunk_map"), env.blob.info.chunk_count, false);
    return m && (*m)->is_ready(1);
  };
  bool persisted = false;
  for (int i = 0; i < 40 && !(persisted = on_disk()); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(persisted) << "the ready bit of chunk 1 never reached the chunk map";
}

// A fill that goes on is not synced under the reader's feet: the bits wait
// until writes pause for a second (then they reach the map, as above). A
// sync in mid-fill made the disk write back while the reader waited to read.
TEST(BlobCache, ReadyBitsWaitForTheFillToSettle) {
  using Clock = std::chrono::steady_clock;
  // A slow machine may pause between two of our reads for as long as the
  // quiet window: that attempt proves nothing and is run again.
  bool checked = false;
  for (int attempt = 0; attempt < 3 && !checked; ++attempt) {
    Env env;
    auto cache = env.open();
    ASSERT_TRUE(cache);
    auto on_disk = [&] {
      auto m = ChunkMap::open(env.file(".chunk_map"), env.blob.info.chunk_count, false);
      size_t n = 0;
      for (uint32_t ci = 0; m && ci < env.blob.info.chunk_count; ++ci) n += (*m)->is_ready(ci);
      return n;
    };
    // One new chunk every 200 ms for 1.4 s: longer than the old once-a-second
    // persist, each write well inside the quiet window of the one before.
    auto last = Clock::now();
    auto longest_gap = Clock::duration::zero();
    for (size_t i = 0; i < 8; ++i) {
      if (i) std::this_thread::sleep_for(std::chrono::milliseconds(200));
      ASSERT_EQ(read_range(*cache, env.uoff(i), 5), env.expect(env.uoff(i), 5));
      longest_gap = std::max(longest_gap, Clock::now() - last);
      last = Clock::now();
    }
    const size_t mid_fill = on_disk();
    if (Clock::now() - last + longest_gap > std::chrono::milliseconds(800)) continue;
    checked = true;
    EXPECT_EQ(mid_fill, 0u) << "ready bits were synced while chunks were still being written";
    size_t settled = 0;
    for (int i = 0; i < 40 && (settled = on_disk()) < 8; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(settled, 8u) << "the bits never reached the chunk map once the fill settled";
  }
  EXPECT_TRUE(checked) << "three attempts each paused for a second between two reads";
}

// A data file that is missing or of the wrong size makes the old chunk map
// worthless; the map is removed before the data file is recreated, so no
// crash in between can leave old bits over an emptied file.
TEST(BlobCache, ChunkMapIsDroppedBeforeTheDataFileIsRecreated) {
  Env env;
  {
    auto cache = env.open();
    ASSERT_TRUE(cache);
    ASSERT_EQ(read_range(*cache, 0, env.uend(7)), env.expect(0, env.uend(7)));
    ASSERT_TRUE(cache->flush().has_value());
  }
  fs::remove(env.file(".blob.data"));
  auto cache = env.open();
  ASSERT_TRUE(cache);
  EXPECT_EQ(cache->metrics().chunks_ready, 0u);
  EXPECT_FALSE(cache->is_ready(0, 1));
  EXPECT_EQ(read_range(*cache, 0, env.uend(7)), env.expect(0, env.uend(7)));
}

// Read amplification: after a read that missed, the missing chunks stored
// right after it are fetched in the background, in one request (up to
// amplify_io); it stops at a cached chunk, a cached read stays a hit, and a
// chunk that fails to come along does not fail the read that did not ask
// for it.
TEST(BlobCache, ReadsBringTheFollowingChunksBehindThem) {
  Env env;
  env.cfg.amplify_reads = true;
  auto cache = env.open();
  ASSERT_TRUE(cache);
  auto wait_ready = [&](BlobCache& c, uint64_t off, uint64_t len) {
    for (int i = 0; i < 200 && !c.is_ready(off, len); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return c.is_ready(off, len);
  };
  const int base = env.fake->reads.load();  // the blob meta
  ASSERT_EQ(read_range(*cache, env.uoff(4), 1), env.expect(env.uoff(4), 1));
  ASSERT_TRUE(wait_ready(*cache, env.uoff(5), env.uend(7) - env.uoff(5)));
  EXPECT_EQ(env.fake->reads.load(), base + 2) << "chunk 4, then 5..7 in one request";
  ASSERT_EQ(read_range(*cache, env.uoff(1), 10), env.expect(env.uoff(1), 10));
  ASSERT_TRUE(wait_ready(*cache, env.uoff(2), env.uend(3) - env.uoff(2)));
  EXPECT_EQ(env.fake->reads.load(), base + 4) << "chunk 1, then 2..3, stopping at the cached chunk 4";
  EXPECT_FALSE(cache->is_ready(env.uoff(0), 1));
  EXPECT_EQ(read_range(*cache, env.uoff(2), env.uend(7) - env.uoff(2)), env.expect(env.uoff(2), env.uend(7) - env.uoff(2)));
  EXPECT_EQ(env.fake->reads.load(), base + 4) << "read-ahead chunks are really there";

  Env fresh;
  fresh.cfg.amplify_reads = true;
  auto c2 = fresh.open();
  ASSERT_TRUE(c2);
  const uint64_t bad = fresh.blob.records[6].compressed_offset;
  fresh.fake->hook = [&](uint64_t off, uint64_t len) { fresh.fake->fail = off + len > bad; };
  EXPECT_EQ(read_range(*c2, fresh.uoff(4), 10), fresh.expect(fresh.uoff(4), 10));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(c2->is_ready(fresh.uoff(6), 1));
}

// Read-ahead stays ahead of a reader going through the blob: the first chunk
// of each batch sent ahead is marked, and the read that reaches it sends the
// next batch, once. Here every batch is one chunk (amplify_io is the size of
// the largest), so each step is visible.
TEST(BlobCache, AReadReachingTheReadAheadSendsTheNextBatch) {
  std::vector<Bytes> chunks;
  for (int i = 0; i < 6; i++) chunks.push_back(test::random_bytes(16384, 100 + i));
  Env env(Compressor::kZstd, chunks);
  env.cfg.amplify_reads = true;
  env.cfg.amplify_io = 0;
  for (const auto& r : env.blob.records) env.cfg.amplify_io = std::max<uint64_t>(env.cfg.amplify_io, r.compressed_size);
  auto cache = env.open();
  ASSERT_TRUE(cache);
  auto ready_within = [&](size_t i, int ms) {
    for (int t = 0; t < ms / 10 && !cache->is_ready(env.uoff(i), 1); ++t)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return cache->is_ready(env.uoff(i), 1);
  };
  ASSERT_EQ(read_range(*cache, env.uoff(0), 1), env.expect(env.uoff(0), 1));
  ASSERT_TRUE(ready_within(1, 2000)) << "the miss on chunk 0 brings chunk 1";
  EXPECT_FALSE(ready_within(2, 200)) << "one batch at a time";
  ASSERT_EQ(read_range(*cache, env.uoff(1), 10), env.expect(env.uoff(1), 10));
  EXPECT_TRUE(ready_within(2, 2000)) << "reaching chunk 1 (a hit) sends chunk 2";
  ASSERT_EQ(read_range(*cache, env.uoff(1), 10), env.expect(env.uoff(1), 10));
  EXPECT_FALSE(ready_within(3, 200)) << "a mark fires once";
  ASSERT_EQ(read_range(*cache, env.uoff(2), env.uend(5) - env.uoff(2)), env.expect(env.uoff(2), env.uend(5) - env.uoff(2)));
  EXPECT_TRUE(ready_within(5, 2000));
}

TEST(BlobCache, ReadAheadFetchesMissingChunksSideBySide) {
  Env env;
  // Each request carries one or two chunks, so several run at once.
  env.cfg.amplify_io = env.blob.records[0].compressed_size + env.blob.records[1].compressed_size;
  auto cache = env.open();
  ASSERT_TRUE(cache);
  ASSERT_EQ(read_range(*cache, env.uoff(2), 1), env.expect(env.uoff(2), 1));
  std::atomic<int> in_flight{0}, peak{0};
  env.fake->hook = [&](uint64_t, uint64_t) {
    int now = ++in_flight;
    for (int p = peak.load(); now > p && !peak.compare_exchange_weak(p, now);) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    --in_flight;
  };
  env.fake->reads = 0;
  env.fake->requests.clear();
  cache->read_ahead(0, env.blob.info.uncompressed_size);
  const auto all = env.blob.info.uncompressed_size;
  for (int i = 0; i < 300 && !cache->is_ready(0, all); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(cache->is_ready(0, all));
  EXPECT_GE(peak.load(), 2) << "requests ran side by side";
  for (auto [off, len] : env.fake->requests) {
    EXPECT_LE(len, env.cfg.amplify_io) << "at " << off;
    EXPECT_NE(off, env.blob.records[2].compressed_offset) << "chunk 2 was cached already";
  }
  const int fetched = env.fake->reads.load();
  EXPECT_EQ(read_range(*cache, 0, all), env.blob.layout);
  EXPECT_EQ(env.fake->reads.load(), fetched) << "every byte came from the read-ahead";
  // Out-of-blob ranges are ignored, not fetched.
  cache->read_ahead(all, 1);
  cache->read_ahead(UINT64_MAX - 10, 100);
  EXPECT_EQ(env.fake->reads.load(), fetched);
}

// stop_background_work (a daemon's exit): read-ahead jobs that run finish
// before it returns, queued ones are dropped, later ones refused; reads
// still fetch what they need themselves. In a child process: the threads
// are the process's, shared by every cache.
// The child's side: 0, or which expectation failed.
int stop_background_work_scenario() {
  Env env;
  env.cfg.amplify_io = 1;  // one chunk per read-ahead job: 8 jobs, 4 threads
  auto cache = env.open();
  std::atomic<int> started{0}, finished{0};
  env.fake->hook = [&](uint64_t, uint64_t) {
    started++;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    finished++;
  };
  const uint64_t all = env.blob.info.uncompressed_size;
  cache->read_ahead(0, all);
  for (int i = 0; i < 200 && started.load() == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (started.load() == 0) return 2;
  stop_background_work();
  if (finished.load() != started.load()) return 3;  // returned before a running job ended
  const int after = env.fake->reads.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  if (env.fake->reads.load() != after) return 4;  // a queued job ran after the stop
  if (cache->is_ready(0, all)) return 5;          // nothing was dropped
  cache->read_ahead(0, all);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (env.fake->reads.load() != after) return 6;  // a new job ran
  env.fake->hook = nullptr;
  Bytes out(all);
  if (!cache->read(0, out) || out != env.blob.layout) return 7;
  stop_background_work();  // again: nothing left to do
  return 0;
}

TEST(BlobCacheDeathTest, StoppingBackgroundWorkFinishesRunningJobsAndDropsTheRest) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::_Exit(stop_background_work_scenario()), testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace nydus::storage
