// The blob cache over a ZRAN blob (`create --type targz-ref`): the blob is the
// original gzip layer, the ci array and inflate contexts come from the meta
// blob. Reads equal GNU tar's extraction; one small read fetches one context;
// hostile metas are refused at open or fail the read, never serve wrong bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "format/bootstrap.h"
#include "format/compress.h"
#include "format/digest.h"
#include "format/zran_meta.h"
#include "storage/blob_cache.h"
#include "storage/localfs_backend.h"
#include "storage/zran_fetch.h"
#include "storage_test_util.h"

namespace nydus::storage {
namespace {

namespace fs = std::filesystem;
using nydus::test::read_file;
using nydus::test::TempDir;
using test::Bytes;

// `root` under `dir` as one `tar | gzip <gzip_args>` layer (dir/layer.tar.gz),
// built with `create --type targz-ref` (bootstrap dir/boot, meta blob in
// dir/blobs) and copied into dir/blobs as the data blob: the layer is it.
format::BlobInfo make_zran_image(const fs::path& dir, const fs::path& root, const std::string& gzip_args) {
  const fs::path layer = dir / "layer.tar.gz";
  EXPECT_EQ(std::system(("tar -C " + root.string() + " -cf - . | gzip " + gzip_args + " > " + layer.string()).c_str()), 0);
  builder::CreateOptions o;
  o.source_type = builder::SourceType::kTargzRef;
  o.source = layer;
  o.bootstrap = dir / "boot";
  o.blob_dir = dir / "blobs";
  auto r = builder::create_image(o);
  EXPECT_TRUE(r) << r.error().to_string();
  if (!r) return {};
  const format::BlobInfo info = r->blobs.at(0);
  fs::copy_file(layer, o.blob_dir / info.blob_id);
  return info;
}

struct ZranEnv {
  TempDir dir;
  fs::path layer, blobs, x;
  format::BlobInfo info;
  std::shared_ptr<format::Bootstrap> boot;
  std::vector<format::Digest> digests;

  ZranEnv() {
    const fs::path root = dir / "root";
    fs::create_directories(root / "d");
    for (int i = 0; i < 30; i++) nydus::test::write_file(root / "d" / ("t" + std::to_string(i)), test::text_bytes(3000 + 50000 * i, i));
    nydus::test::write_file(root / "rand", test::random_bytes(1500000, 99));
    info = make_zran_image(dir.path(), root, "-n");
    layer = dir / "layer.tar.gz";
    blobs = dir / "blobs";
    x = dir / "x";
    fs::create_directories(x);
    EXPECT_EQ(std::system(("tar -C " + x.string() + " -xzf " + layer.string()).c_str()), 0);
    boot = *format::Bootstrap::open(dir / "boot");
    auto table = *boot->chunk_table();
    digests.assign(info.chunk_count, {});
    for (const auto& c : table) digests.at(c.ci_index) = c.digest;
  }

  CacheConfig cfg(const char* work = "cache") const {
    CacheConfig c;
    c.work_dir = dir / work;
    c.digest_validate = true;
    c.amplify_reads = false;
    return c;
  }
  std::shared_ptr<LocalFsBackend> backend() const { return *LocalFsBackend::create(LocalFsConfig{blobs, {}, {}}); }

  // Every regular file read through the cache, compared with tar's bytes.
  void expect_files_equal(BlobCache& cache) const {
    size_t files = 0;
    auto st = boot->walk([&](const std::string& path, const format::InodeView& ino) -> Status {
      if (!ino.is_reg()) return ok();
      NYDUS_ASSIGN_OR_RETURN(auto refs, boot->chunks(ino));
      Bytes got;
      for (const auto& ref : refs) {
        const format::ChunkRecord c = cache.chunk(ref.ci_index);
        Bytes part(c.uncompressed_size);
        NYDUS_TRY(cache.read(c.uncompressed_offset, part));
        got.insert(got.end(), part.begin(), part.end());
      }
      EXPECT_TRUE(got == read_file(x / path.substr(1))) << path;
      files++;
      return ok();
    });
    EXPECT_TRUE(st) << st.error().to_string();
    EXPECT_EQ(files, 31u);
  }

  // A copy of the meta blob edited through its decoded form, stored under its
  // new digest; returns the blob info pointing at it.
  // `zstd`: store the ci buffer as one zstd frame, as upstream's builder does
  // (the reader then fetches the whole meta blob and checks its digest);
  // else framed as ours (encode_zran_ci_frames).
  format::BlobInfo edited_meta(const std::function<void(format::ZranMeta&)>& edit, bool zstd = false) const {
    const Bytes mb = read_file(blobs / format::to_hex(info.blob_meta_digest));
    auto h = format::load<format::BlobMetaHeader>(mb.data() + info.ci_compressed_size);
    Bytes ci(info.ci_uncompressed_size);
    EXPECT_TRUE(format::decompress(info.ci_compressor, std::span(mb).first(info.ci_compressed_size), ci));
    auto m = *format::parse_zran_ci(ci, h, {info.compressed_size, info.uncompressed_size});
    edit(m);
    std::vector<Bytes> dicts;
    for (const auto& c : m.contexts) dicts.emplace_back(m.dict(c).begin(), m.dict(c).end());
    const Bytes ci2 = format::encode_zran_ci(m.chunks, m.contexts, dicts);
    EXPECT_EQ(ci2.size(), ci.size());
    Bytes out;
    format::BlobInfo b = info;
    if (zstd) {
      EXPECT_TRUE(*format::compress(format::Compressor::kZstd, ci2, out));
    } else {
      out = *format::encode_zran_ci_frames(ci2, format::zran_tables_size(h), dicts);
    }
    b.ci_compressor = format::Compressor::kZstd;
    h.ci_compressor = uint32_t(format::Compressor::kZstd);
    b.ci_compressed_size = h.ci_compressed_size = out.size();
    const auto* hp = reinterpret_cast<const uint8_t*>(&h);
    out.insert(out.end(), hp, hp + sizeof(h));
    b.blob_meta_digest = format::sha256(out);
    b.blob_meta_size = out.size();
    nydus::test::write_file(blobs / format::to_hex(b.blob_meta_digest), out);
    return b;
  }
};

TEST(ZranCache, ReadsEqualTarAndSurviveReopen) {
  ZranEnv e;
  {
    auto c = BlobCache::open(e.info, e.backend(), e.cfg(), e.digests);
    ASSERT_TRUE(c) << c.error().to_string();
    e.expect_files_equal(**c);
    EXPECT_EQ((*c)->metrics().digest_failures, 0u);
  }
  // Reopened: the tables come from <id>.zran.tables in the work dir, the data from the cache file.
  EXPECT_TRUE(fs::exists(e.cfg().work_dir / (e.info.blob_id + ".zran.tables")));
  auto c = BlobCache::open(e.info, e.backend(), e.cfg(), e.digests);
  ASSERT_TRUE(c);
  e.expect_files_equal(**c);
  EXPECT_EQ((*c)->metrics().backend_bytes, 0u);
}

// Upstream's builder compresses the ci buffer: fetched whole at open.
TEST(ZranCache, CompressedMetaBlobReadsRight) {
  ZranEnv e;
  const auto z = e.edited_meta([](format::ZranMeta&) {}, true);
  ASSERT_LT(z.ci_compressed_size, z.ci_uncompressed_size);
  auto c = BlobCache::open(z, e.backend(), e.cfg(), e.digests);
  ASSERT_TRUE(c) << c.error().to_string();
  EXPECT_EQ((*c)->metrics().backend_bytes, z.blob_meta_size);
  e.expect_files_equal(**c);
  EXPECT_TRUE(fs::exists(e.cfg().work_dir / (z.blob_id + ".blob.meta")));
}

// The windows' part of the meta blob is gone: the tables load, every read
// that needs a window fails with EIO, and works once the blob is back.
TEST(ZranCache, MissingWindowFailsTheReadNotTheMount) {
  ZranEnv e;
  const fs::path mp = e.blobs / format::to_hex(e.info.blob_meta_digest);
  const Bytes whole = read_file(mp);
  // Our framed layout: the head (index, ci array, context table), then the
  // windows' frames up to the header.
  const auto head = format::zran_frames_head_size(std::span(whole).subspan(e.info.ci_offset, format::kZranFramesProbe));
  ASSERT_TRUE(head);
  const uint64_t windows = e.info.ci_offset + *head, end = e.info.ci_offset + e.info.ci_compressed_size;
  ASSERT_GT(end, windows + 1000) << "no windows to lose";
  Bytes cut(whole.begin(), whole.begin() + int64_t(windows + (end - windows) / 2));  // a short blob
  nydus::test::write_file(mp, cut);
  auto c = BlobCache::open(e.info, e.backend(), e.cfg(), e.digests);
  ASSERT_FALSE(c) << "the header is gone too";
  Bytes holed = whole;
  std::memset(holed.data() + windows, 0xa5, end - windows);  // every window, wrong
  nydus::test::write_file(mp, holed);
  c = BlobCache::open(e.info, e.backend(), e.cfg(), e.digests);
  ASSERT_TRUE(c) << c.error().to_string();
  // Every chunk inflated from a context with a window fails; the others
  // (contexts in stored data need none) read right.
  const auto zb = format::decode_zran_meta_blob(whole, e.info, "test");
  ASSERT_TRUE(zb);
  size_t failed = 0, windowed = 0;
  for (uint32_t ci = 0; ci < zb->meta.chunks.size(); ci++) {
    const bool has_window = zb->meta.contexts.at(zb->meta.chunks[ci].zran_index).dict_size > 0;
    windowed += has_window;
    const auto ch = (*c)->chunk(ci);
    Bytes got(ch.uncompressed_size);
    if (auto r = (*c)->read(ch.uncompressed_offset, got); !r) {
      failed++;
      EXPECT_EQ(r.error().to_errno(), EIO);
      EXPECT_TRUE(has_window) << "chunk " << ci << " needs no window, yet failed";
    }
  }
  EXPECT_GT(windowed, 0u);
  EXPECT_EQ(failed, windowed) << "a wrong window gave bytes";
  nydus::test::write_file(mp, whole);
  auto c2 = BlobCache::open(e.info, e.backend(), e.cfg("cache2"), e.digests);
  ASSERT_TRUE(c2);
  e.expect_files_equal(**c2);
}

TEST(ZranCache, OneSmallFileFetchesOneContext) {
  ZranEnv e;
  auto c = BlobCache::open(e.info, e.backend(), e.cfg(), e.digests);
  ASSERT_TRUE(c);
  // The header and the two tables (the windows are small enough here that
  // the mount's first guess at the head takes them along).
  const uint64_t meta_bytes = (*c)->metrics().backend_bytes;
  EXPECT_LE(meta_bytes, e.info.blob_meta_size);
  EXPECT_GE(meta_bytes, format::kBlobMetaHeaderSize + uint64_t(e.info.chunk_count) * sizeof(format::ChunkInfoV2));
  auto nid = e.boot->resolve("/d/t0");
  ASSERT_TRUE(nid);
  auto refs = *e.boot->chunks(*e.boot->inode(*nid));
  ASSERT_EQ(refs.size(), 1u);
  const auto ch = (*c)->chunk(refs[0].ci_index);
  Bytes got(ch.uncompressed_size);
  ASSERT_TRUE((*c)->read(ch.uncompressed_offset, got));
  EXPECT_EQ(got, read_file(e.x / "d/t0"));
  const auto m = (*c)->metrics();
  EXPECT_LT(m.backend_bytes - meta_bytes, 1u << 20);
  EXPECT_LT(m.backend_bytes - meta_bytes, e.info.compressed_size / 2);

  // The read waited for the layer up to its file's end; the rest of its
  // context follows on a read-ahead thread from there. Every other chunk of
  // that context is then a hit, and no layer byte was fetched twice.
  const auto zb = format::decode_zran_meta_blob(read_file(e.blobs / format::to_hex(e.info.blob_meta_digest)), e.info, "t");
  ASSERT_TRUE(zb);
  const uint32_t ctx = zb->meta.chunks[refs[0].ci_index].zran_index;
  uint64_t layer_in = 0, peers = 0;
  for (uint32_t ci = 0; ci < zb->meta.chunks.size(); ci++) {
    if (zb->meta.chunks[ci].zran_index != ctx) continue;
    const auto pc = (*c)->chunk(ci);
    Bytes part(pc.uncompressed_size);
    ASSERT_TRUE((*c)->read(pc.uncompressed_offset, part));
    layer_in = std::max(layer_in, zb->meta.chunks[ci].ci.compressed_offset + zb->meta.chunks[ci].ci.compressed_size);
    peers++;
  }
  ASSERT_GE(peers, 2u);
  const auto m2 = (*c)->metrics();
  EXPECT_LE(m2.backend_requests, 3u);  // the tables, the span up to the file, the rest of its context
  const uint64_t span = layer_in - zb->meta.contexts[ctx].in_offset;
  EXPECT_LE(m2.backend_bytes - meta_bytes, span + format::kZranWindowSize) << "a byte of the context fetched twice";
}

// A reader of the first file of a context waits only for the layer up to
// its end: fewer bytes than the whole context before its read returns.
TEST(ZranCache, ReaderWaitsOnlyUpToItsChunk) {
  ZranEnv e;
  const auto zb = format::decode_zran_meta_blob(read_file(e.blobs / format::to_hex(e.info.blob_meta_digest)), e.info, "t");
  ASSERT_TRUE(zb);
  const format::ZranMeta& zm = zb->meta;
  // The context with most chunks, and its chunk that comes first in the layer.
  std::vector<uint32_t> count(zm.contexts.size());
  for (const auto& z : zm.chunks) count[z.zran_index]++;
  const uint32_t ctx = uint32_t(std::max_element(count.begin(), count.end()) - count.begin());
  ASSERT_GE(count[ctx], 2u);
  uint32_t first = UINT32_MAX;
  uint64_t ctx_in_end = 0;
  for (uint32_t ci = 0; ci < zm.chunks.size(); ci++) {
    if (zm.chunks[ci].zran_index != ctx) continue;
    if (first == UINT32_MAX || zm.chunks[ci].zran_offset < zm.chunks[first].zran_offset) first = ci;
    ctx_in_end = std::max(ctx_in_end, zm.chunks[ci].ci.compressed_offset + zm.chunks[ci].ci.compressed_size);
  }
  // A backend that holds reads of the layer reaching past the first chunk's
  // end until the reader is back: the reader must not be waiting for them.
  struct Gate {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;
  } gate;
  const uint64_t first_end = zm.chunks[first].ci.compressed_offset + zm.chunks[first].ci.compressed_size;
  auto inner = e.backend();
  auto gated = std::make_shared<test::FakeBackend>(inner);
  gated->before_read = [&](const std::string& id, uint64_t off, uint64_t len) {
    if (id != e.info.blob_id || off + len <= first_end) return;
    std::unique_lock lk(gate.mu);
    gate.cv.wait_for(lk, std::chrono::seconds(10), [&] { return gate.open; });
  };
  auto c = BlobCache::open(e.info, gated, e.cfg(), e.digests);
  ASSERT_TRUE(c) << c.error().to_string();
  const auto ch = (*c)->chunk(first);
  Bytes got(ch.uncompressed_size);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*c)->read(ch.uncompressed_offset, got));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "the reader waited for its context's tail";
  const Bytes first_bytes = got;  // checked against tar by expect_files_equal below
  {
    std::lock_guard lk(gate.mu);
    gate.open = true;
  }
  gate.cv.notify_all();
  e.expect_files_equal(**c);
  EXPECT_GT(ctx_in_end, first_end) << "the context ends with the first chunk: nothing to test";

  // Read-ahead of a later chunk of the context (a prefetch, or a miss's
  // amplified neighbours) is under way and held at the gate: it must not
  // have taken the reader's chunk along, or the reader waits for all of it.
  {
    std::lock_guard lk(gate.mu);
    gate.open = false;
  }
  uint32_t later = UINT32_MAX;
  for (uint32_t ci = 0; ci < zm.chunks.size(); ci++)
    if (zm.chunks[ci].zran_index == ctx && zm.chunks[ci].zran_offset > zm.chunks[first].zran_offset &&
        zm.chunks[ci].ci.compressed_offset + zm.chunks[ci].ci.compressed_size > first_end)
      later = ci;
  ASSERT_NE(later, UINT32_MAX);
  std::atomic<bool> held{false};
  gated->hook = [&](uint64_t off, uint64_t len) {
    if (off + len > first_end) held = true;
  };
  auto c2 = BlobCache::open(e.info, gated, e.cfg("cache-ra"), e.digests);
  ASSERT_TRUE(c2) << c2.error().to_string();
  const auto lc = (*c2)->chunk(later);
  std::thread ahead([&] { (void)(*c2)->fetch_range(lc.uncompressed_offset, lc.uncompressed_size, /*prefetch=*/true); });
  while (!held) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*c2)->read(ch.uncompressed_offset, got));
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(5)) << "the reader waited for the read-ahead";
  EXPECT_EQ(got, first_bytes);
  {
    std::lock_guard lk(gate.mu);
    gate.open = true;
  }
  gate.cv.notify_all();
  ahead.join();
  e.expect_files_equal(**c2);
}

// A small file whose chunk starts in the same deflate block as the file
// before it (one compressed offset for both): the reader's fetch still stops
// at its own chunk's end. Sorting the run by compressed offset alone left the
// file before it after it, so the run could not be cut and the reader waited
// for its whole context.
TEST(ZranCache, ReaderOfAChunkSharingABlockWaitsOnlyUpToIt) {
  TempDir dir;
  const fs::path root = dir / "root";
  fs::create_directories(root);
  for (int i = 0; i < 40; i++) nydus::test::write_file(root / ("f" + std::to_string(i)), test::random_bytes(2000 + 700 * i, i));
  const format::BlobInfo info = make_zran_image(dir.path(), root, "-6 -n");
  ASSERT_FALSE(info.blob_id.empty());
  const fs::path blobs = dir / "blobs";
  const auto zb = format::decode_zran_meta_blob(read_file(blobs / format::to_hex(info.blob_meta_digest)), info, "t");
  ASSERT_TRUE(zb);
  const format::ZranMeta& zm = zb->meta;
  // A chunk sharing its compressed offset with an earlier chunk of its
  // context, with more of the context after it.
  uint32_t target = UINT32_MAX;
  for (uint32_t ci = 1; ci + 1 < zm.chunks.size() && target == UINT32_MAX; ci++) {
    const auto &a = zm.chunks[ci - 1], &b = zm.chunks[ci], &c = zm.chunks[ci + 1];
    if (a.zran_index == b.zran_index && b.zran_index == c.zran_index && a.ci.compressed_offset == b.ci.compressed_offset &&
        c.ci.compressed_offset + c.ci.compressed_size > b.ci.compressed_offset + b.ci.compressed_size)
      target = ci;
  }
  ASSERT_NE(target, UINT32_MAX) << "no chunk shares a block with the one before it";
  const uint64_t end = zm.chunks[target].ci.compressed_offset + zm.chunks[target].ci.compressed_size;
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  auto gated = std::make_shared<test::FakeBackend>(*LocalFsBackend::create(LocalFsConfig{blobs, {}, {}}));
  gated->before_read = [&](const std::string& id, uint64_t off, uint64_t len) {
    if (id != info.blob_id || off + len <= end) return;
    std::unique_lock lk(mu);
    cv.wait_for(lk, std::chrono::seconds(10), [&] { return open; });
  };
  CacheConfig cfg;
  cfg.work_dir = dir / "cache";
  cfg.amplify_reads = false;
  auto c = BlobCache::open(info, gated, cfg, {});
  ASSERT_TRUE(c) << c.error().to_string();
  const auto ch = (*c)->chunk(target);
  Bytes got(ch.uncompressed_size);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*c)->read(ch.uncompressed_offset, got));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "the reader waited for its context's tail";
  {
    std::lock_guard lk(mu);
    open = true;
  }
  cv.notify_all();
  // Its bytes are the source file's: find it by size among the sources.
  bool found = false;
  for (int i = 0; i < 40; i++)
    found |= got == test::random_bytes(2000 + 700 * i, i);
  EXPECT_TRUE(found);
}

// A big file read chunk by chunk, as `cat` reads it: each byte of the layer
// is fetched about once. Before checkpoints sat right before chunk starts
// (and runs crossed contexts), each context's fetch began at a checkpoint
// inside the chunk before and fetched that chunk's tail again: ~1.5x.
TEST(ZranCache, SequentialReadFetchesTheLayerOnce) {
  TempDir dir;
  const fs::path root = dir / "root";
  fs::create_directories(root);
  Bytes big;
  for (int i = 0; i < 96; i++) {  // 64 KiB blocks, half random, half text: 6 MiB
    const Bytes b = i % 2 ? test::random_bytes(64 << 10, i) : test::text_bytes(64 << 10, i);
    big.insert(big.end(), b.begin(), b.end());
  }
  nydus::test::write_file(root / "big", big);
  const format::BlobInfo info = make_zran_image(dir.path(), root, "-n");
  ASSERT_FALSE(info.blob_id.empty());
  const fs::path blobs = dir / "blobs";
  CacheConfig cfg;
  cfg.work_dir = dir / "cache";
  cfg.amplify_reads = false;
  auto c = BlobCache::open(info, *LocalFsBackend::create(LocalFsConfig{blobs, {}, {}}), cfg, {});
  ASSERT_TRUE(c) << c.error().to_string();
  const uint64_t meta_bytes = (*c)->metrics().backend_bytes;
  auto boot = *format::Bootstrap::open(dir / "boot");
  auto refs = *boot->chunks(*boot->inode(*boot->resolve("/big")));
  ASSERT_EQ(refs.size(), 6u);
  Bytes got;
  for (const auto& ref : refs) {
    const auto ch = (*c)->chunk(ref.ci_index);
    Bytes part(ch.uncompressed_size);
    ASSERT_TRUE((*c)->read(ch.uncompressed_offset, part));
    got.insert(got.end(), part.begin(), part.end());
  }
  EXPECT_TRUE(got == big);
  const uint64_t fetched = (*c)->metrics().backend_bytes - meta_bytes;
  EXPECT_LT(fetched, fs::file_size(dir / "layer.tar.gz") * 21 / 20 + 8 * format::kZranWindowSize) << fetched << " bytes fetched for a layer of " << fs::file_size(dir / "layer.tar.gz");
}

TEST(ZranCache, ContextOutsideTheLayerIsALoadError) {
  ZranEnv e;
  auto b = e.edited_meta([&](format::ZranMeta& m) { m.contexts.back().in_offset = e.info.compressed_size; });
  auto c = BlobCache::open(b, e.backend(), e.cfg(), e.digests);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Errc::kCorrupt);
  EXPECT_NE(c.error().message.find("outside the"), std::string::npos) << c.error().message;
}

TEST(ZranCache, MetaBlobNotMatchingItsDigestIsRefused) {
  ZranEnv e;
  // A compressed meta blob is fetched whole: a well-formed one (one window
  // edited) under the original's name is refused at open.
  const auto z = e.edited_meta([](format::ZranMeta&) {}, true);
  // One byte a window keeps, flipped; the first such edit that compresses to
  // the same size (so the blob table's sizes still fit).
  Bytes edited;
  for (size_t nth = 0; nth < 64 && edited.size() != z.blob_meta_size; nth++) {
    auto b = e.edited_meta(
        [nth](format::ZranMeta& m) {
          size_t seen = 0;
          for (const auto& c : m.contexts)
            for (uint32_t i = 0; i < c.dict_size; i++)
              if (m.dicts[c.dict_offset + i] != 0 && seen++ == nth) return (void)(m.dicts[c.dict_offset + i] ^= 1);
        },
        true);
    edited = read_file(e.blobs / format::to_hex(b.blob_meta_digest));
  }
  ASSERT_EQ(edited.size(), z.blob_meta_size);
  nydus::test::write_file(e.blobs / format::to_hex(z.blob_meta_digest), edited);
  auto c = BlobCache::open(z, e.backend(), e.cfg(), e.digests);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("digest"), std::string::npos) << c.error().message;
}

// Structurally valid metas that lie: every read through them fails (EIO for
// the file), none returns bytes, and the chunks stay not-ready.
void expect_reads_fail(ZranEnv& e, const format::BlobInfo& b, uint32_t ctx_of_interest) {
  auto c = BlobCache::open(b, e.backend(), e.cfg("cache-bad"), e.digests);
  ASSERT_TRUE(c) << c.error().to_string();
  size_t failed = 0, tried = 0;
  const auto zb = format::decode_zran_meta_blob(read_file(e.blobs / format::to_hex(b.blob_meta_digest)), b, "test");
  ASSERT_TRUE(zb);
  const format::ZranMeta& zm = zb->meta;
  for (uint32_t ci = 0; ci < zm.chunks.size(); ci++) {
    if (zm.chunks[ci].zran_index != ctx_of_interest) continue;
    const auto ch = (*c)->chunk(ci);
    Bytes got(ch.uncompressed_size);
    tried++;
    auto r = (*c)->read(ch.uncompressed_offset, got);
    if (!r) {
      failed++;
      EXPECT_EQ(r.error().to_errno(), EIO);
    }
  }
  EXPECT_GT(tried, 0u);
  EXPECT_EQ(failed, tried);
}

// A window matters only where the data refers back into it: take the most
// compressed context (text; stored blocks of random data never look back).
TEST(ZranCache, WrongWindowFailsTheRead) {
  ZranEnv e;
  uint32_t target = 0;
  auto b = e.edited_meta([&](format::ZranMeta& m) {
    double best = 0;
    for (uint32_t i = 1; i < m.contexts.size(); i++) {
      const double ratio = double(m.contexts[i].out_len) / m.contexts[i].in_len;
      if (ratio > best) best = ratio, target = i;
    }
    ASSERT_GT(best, 3.0);
    auto& d = m.contexts[target];
    for (uint64_t i = 0; i < d.dict_size; i++) m.dicts[d.dict_offset + i] ^= 0x5a;
  });
  expect_reads_fail(e, b, target);
}

TEST(ZranCache, WrongCheckpointBitsFailTheRead) {
  ZranEnv e;
  auto b = e.edited_meta([&](format::ZranMeta& m) {
    auto& c = m.contexts[1];
    c.ctx_bits = uint8_t((c.ctx_bits + 3) % 8);
    if (c.ctx_bits == 0) c.ctx_bits = 1;
  });
  expect_reads_fail(e, b, 1);
}

TEST(ZranCache, LayerShorterThanTheTableSays) {
  ZranEnv e;
  // The layer on the backend loses its tail; the last context reaches into it.
  const fs::path lp = e.blobs / e.info.blob_id;
  Bytes l = read_file(lp);
  l.resize(l.size() - 4000);
  nydus::test::write_file(lp, l);
  auto c = BlobCache::open(e.info, e.backend(), e.cfg(), e.digests);
  ASSERT_TRUE(c);
  const uint32_t last = e.info.chunk_count - 1;
  const auto ch = (*c)->chunk(last);
  Bytes got(ch.uncompressed_size);
  auto r = (*c)->read(ch.uncompressed_offset, got);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().to_errno(), EIO);
}

// Windows fetched on first use stay resident up to a bound: a reader going
// through a big layer does not keep every context's window in memory.
TEST(ZranDictsTest, KeepsTheLastWindowsOnly) {
  TempDir dir;
  constexpr uint32_t kContexts = 300;
  format::ZranMeta m;
  Bytes stored(64, 0);  // the frames start past a head
  m.window_frames.push_back(stored.size());
  for (uint32_t i = 0; i < kContexts; i++) {
    format::ZranContext c;
    c.dict_size = 100;
    m.contexts.push_back(c);
    Bytes w(100, uint8_t(i)), frame;
    ASSERT_TRUE(format::compress(format::Compressor::kZstd, w, frame));
    stored.insert(stored.end(), frame.begin(), frame.end());
    m.window_frames.push_back(stored.size());
  }
  m.lazy_dicts = true;
  format::BlobInfo blob;
  blob.blob_meta_digest = format::sha256(stored);
  blob.ci_offset = 0;
  nydus::test::write_file(dir.path() / format::to_hex(blob.blob_meta_digest), stored);
  test::FakeBackend backend(*LocalFsBackend::create(LocalFsConfig{dir.path(), {}, {}}));
  ZranDicts dicts(m, blob);
  auto get = [&](uint32_t i) {
    auto w = dicts.get(backend, i, nullptr);
    ASSERT_TRUE(w) << w.error().to_string();
    EXPECT_EQ(**w, Bytes(100, uint8_t(i)));
  };
  for (uint32_t i = 0; i < kContexts; i++) get(i);
  EXPECT_EQ(backend.reads.load(), int(kContexts));
  get(kContexts - 1);  // resident
  EXPECT_EQ(backend.reads.load(), int(kContexts));
  EXPECT_FALSE(dicts.loaded(0));
  get(0);  // dropped: fetched again
  EXPECT_EQ(backend.reads.load(), int(kContexts) + 1);
}

}  // namespace
}  // namespace nydus::storage
