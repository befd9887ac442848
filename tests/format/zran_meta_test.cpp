// ZRAN blob meta: upstream's vendored blob.meta (tests/texture/zran/233c72f2…)
// parses with the counts upstream wrote, and mutated copies are refused.
#include <gtest/gtest.h>

#include <zstd.h>

#include <cstring>

#include "common/test_util.h"
#include "format/compress.h"
#include "format/zran_meta.h"

namespace nydus::format {
namespace {

using Bytes = std::vector<uint8_t>;

constexpr const char* kMeta = "233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta";
// The layer behind the fixture is not vendored; its last context ends at
// 9798811 + 40210 (see the context dump in the README), so the layer is at
// least this long.
constexpr uint64_t kLayerEnd = 9798811 + 40210;

Bytes fixture() { return nydus::test::read_file(nydus::test::fixtures_dir() / "zran" / kMeta); }

BlobMetaHeader header_of(const Bytes& f) { return load<BlobMetaHeader>(f.data() + f.size() - kBlobMetaHeaderSize); }

// Byte offset of context i / ci entry i in the file (the ci buffer starts at 0).
size_t ctx_at(const Bytes& f, uint32_t i) { return header_of(f).ci_zran_offset + i * sizeof(ZranInflateContextOnDisk); }
size_t ci_at(uint32_t i) { return i * sizeof(ChunkInfoV2); }

template <class T>
void poke(Bytes& f, size_t off, T v) { std::memcpy(f.data() + off, &v, sizeof(v)); }

TEST(ZranMeta, UpstreamFixtureParses) {
  const Bytes f = fixture();
  ASSERT_EQ(f.size(), 667648u);
  auto m = parse_zran_blob_meta_cache(f, {kLayerEnd, 0});
  ASSERT_TRUE(m) << m.error().to_string();
  EXPECT_EQ(m->chunks.size(), 163u);
  EXPECT_EQ(m->contexts.size(), 21u);
  // First context: right after the 10-byte gzip header, no window yet.
  EXPECT_EQ(m->contexts[0].in_offset, 10u);
  EXPECT_EQ(m->contexts[0].out_offset, 0u);
  EXPECT_EQ(m->contexts[0].dict_size, 0u);
  for (size_t i = 1; i < m->contexts.size(); i++) {
    const auto& c = m->contexts[i];
    EXPECT_GT(c.in_offset, m->contexts[i - 1].in_offset) << i;
    EXPECT_GT(c.out_offset, m->contexts[i - 1].out_offset) << i;
    EXPECT_EQ(c.dict_size, kZranWindowSize) << i;
    EXPECT_EQ(m->dict(c).size(), kZranWindowSize);
  }
  // Chunks follow each other without overlap in the uncompressed layout
  // (upstream leaves a gap where a duplicate chunk was dropped: entry 146),
  // 4 KiB aligned, and their place in the tar stream
  // (context out_offset + zran offset) grows.
  uint64_t next_uoff = 0, last_tar_pos = 0;
  for (size_t i = 0; i < m->chunks.size(); i++) {
    const auto& z = m->chunks[i];
    EXPECT_GE(z.ci.uncompressed_offset, next_uoff) << i;
    next_uoff = align_up(z.ci.uncompressed_offset + z.ci.uncompressed_size, kBlockSize);
    const uint64_t tar_pos = m->contexts[z.zran_index].out_offset + z.zran_offset;
    EXPECT_GT(tar_pos, last_tar_pos) << i;
    last_tar_pos = tar_pos;
    EXPECT_TRUE(z.ci.compressed);
    EXPECT_LE(z.ci.uncompressed_size, 1u << 20);
  }
  EXPECT_EQ(m->chunks[0].zran_offset, 1024u);  // the first file's data after two tar headers
  EXPECT_EQ(m->chunks.back().zran_index, 20u);
}

TEST(ZranMeta, LayerTooShortForTheLastContext) {
  EXPECT_FALSE(parse_zran_blob_meta_cache(fixture(), {kLayerEnd - 1, 0}));
}

TEST(ZranMeta, ContextOutsideTheLayer) {
  Bytes f = fixture();
  poke<uint64_t>(f, ctx_at(f, 7), kLayerEnd);  // in_offset of context 7
  auto m = parse_zran_blob_meta_cache(f, {kLayerEnd, 0});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, Errc::kCorrupt);
  EXPECT_NE(m.error().message.find("outside the"), std::string::npos) << m.error().message;
}

TEST(ZranMeta, DictionaryBeyondTheTable) {
  Bytes f = fixture();
  const auto h = header_of(f);
  const uint64_t dict_table = h.ci_zran_size - h.ci_zran_count * sizeof(ZranInflateContextOnDisk);
  poke<uint64_t>(f, ctx_at(f, 20) + 16, dict_table - 100);  // dict_offset of the last context
  auto m = parse_zran_blob_meta_cache(f, {kLayerEnd, 0});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("dictionary"), std::string::npos) << m.error().message;
  // A window larger than 32 KiB is refused even when it fits the table.
  f = fixture();
  poke<uint32_t>(f, ctx_at(f, 1) + 32, kZranWindowSize + 1);
  EXPECT_FALSE(parse_zran_blob_meta_cache(f, {kLayerEnd, 0}));
}

TEST(ZranMeta, ChunkContextIndexOutOfRange) {
  Bytes f = fixture();
  poke<uint32_t>(f, ci_at(100) + 20, 21);  // high half of `data` = zran index
  auto m = parse_zran_blob_meta_cache(f, {kLayerEnd, 0});
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("ZRAN index 21"), std::string::npos) << m.error().message;
}

TEST(ZranMeta, ChunkBeyondItsContextOutput) {
  Bytes f = fixture();
  poke<uint32_t>(f, ci_at(160) + 16, 126588);  // zran offset = context 20's out_len
  EXPECT_FALSE(parse_zran_blob_meta_cache(f, {kLayerEnd, 0}));
}

TEST(ZranMeta, HeaderLies) {
  const Bytes good = fixture();
  const size_t hdr = good.size() - kBlobMetaHeaderSize;
  Bytes f = good;
  poke<uint64_t>(f, hdr + offsetof(BlobMetaHeader, ci_zran_size), 1ull << 40);
  EXPECT_FALSE(parse_zran_blob_meta_cache(f, {kLayerEnd, 0}));
  f = good;
  poke<uint32_t>(f, hdr + offsetof(BlobMetaHeader, ci_zran_count), 164);  // > ci entries
  EXPECT_FALSE(parse_zran_blob_meta_cache(f, {kLayerEnd, 0}));
  f = good;
  poke<uint64_t>(f, hdr + offsetof(BlobMetaHeader, ci_zran_offset), 24);
  EXPECT_FALSE(parse_zran_blob_meta_cache(f, {kLayerEnd, 0}));
  f = good;
  poke<uint32_t>(f, hdr + offsetof(BlobMetaHeader, features), blob_features::kChunkInfoV2);
  EXPECT_FALSE(parse_zran_blob_meta_cache(f, {kLayerEnd, 0}));
  f = good;
  f.resize(f.size() - kBlockSize);  // truncated
  EXPECT_FALSE(parse_zran_blob_meta_cache(f, {kLayerEnd, 0}));
}

TEST(ZranMeta, EncodeParsesBack) {
  auto m = parse_zran_blob_meta_cache(fixture(), {kLayerEnd, 0});
  ASSERT_TRUE(m);
  std::vector<Bytes> dicts;
  for (const auto& c : m->contexts) dicts.emplace_back(m->dict(c).begin(), m->dict(c).end());
  const Bytes ci = encode_zran_ci(m->chunks, m->contexts, dicts);
  const Bytes f = fixture();
  const auto h = header_of(f);
  ASSERT_EQ(ci.size(), h.ci_uncompressed_size);
  EXPECT_TRUE(std::equal(ci.begin(), ci.end(), f.begin()));  // byte-identical to upstream's
}

// The fixture as a meta blob would hold it with an uncompressed ci buffer:
// the ci bytes, then the header, and the blob-table entry that names it.
struct AsMetaBlob {
  Bytes raw;
  BlobInfo blob;
};
AsMetaBlob as_meta_blob() {
  const Bytes f = fixture();
  BlobMetaHeader h = header_of(f);
  h.ci_compressor = uint32_t(Compressor::kNone);
  h.ci_compressed_size = h.ci_uncompressed_size;
  h.ci_offset = 0;
  AsMetaBlob m;
  m.raw.assign(f.begin(), f.begin() + h.ci_uncompressed_size);
  m.raw.resize(m.raw.size() + kBlobMetaHeaderSize);
  std::memcpy(m.raw.data() + h.ci_uncompressed_size, &h, sizeof(h));
  m.blob.chunk_count = h.ci_entries;
  m.blob.features = h.features;
  m.blob.ci_compressor = Compressor::kNone;
  m.blob.ci_offset = 0;
  m.blob.ci_compressed_size = m.blob.ci_uncompressed_size = h.ci_uncompressed_size;
  m.blob.compressed_size = kLayerEnd;
  return m;
}

TEST(ZranMeta, MetaBlobDecodesWhenItsHeaderMatchesTheBlobTable) {
  AsMetaBlob m = as_meta_blob();
  auto d = decode_zran_meta_blob(m.raw, m.blob, "fixture");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->meta.chunks.size(), 163u);
  EXPECT_EQ(d->ci.size(), m.blob.ci_uncompressed_size);
  // Each field the blob table and the header both state must agree.
  for (int field = 0; field < 4; field++) {
    AsMetaBlob bad = as_meta_blob();
    switch (field) {
      case 0: bad.blob.chunk_count += 1; break;
      case 1: bad.blob.ci_offset = 4096; break;
      case 2: bad.blob.ci_compressor = Compressor::kZstd; break;
      case 3: poke(bad.raw, bad.raw.size() - kBlobMetaHeaderSize + offsetof(BlobMetaHeader, features),
                   header_of(bad.raw).features & ~blob_features::kZran); break;
    }
    auto r = decode_zran_meta_blob(bad.raw, bad.blob, "fixture");
    ASSERT_FALSE(r) << "field " << field;
    EXPECT_NE(r.error().message.find("header does not match the blob table"), std::string::npos) << r.error().message;
  }
}


// Our framed ci buffer (tables, skippable index, one frame per window): read
// back whole by zstd, and its head gives the tables and the index; upstream's
// single frame is "not framed"; an index that lies is corrupt.
TEST(ZranMeta, FramedCiHeadGivesTablesAndWindowIndex) {
  const Bytes f = fixture();
  BlobMetaHeader h = header_of(f);
  auto m = parse_zran_blob_meta_cache(f, {kLayerEnd, 0});
  ASSERT_TRUE(m);
  const std::span<const uint8_t> ci(f.data(), h.ci_uncompressed_size);
  std::vector<Bytes> dicts;
  for (const auto& c : m->contexts) dicts.emplace_back(m->dict(c).begin(), m->dict(c).end());
  auto framed = encode_zran_ci_frames(ci, zran_tables_size(h), dicts);
  ASSERT_TRUE(framed);
  Bytes whole(ci.size());
  ASSERT_TRUE(decompress(Compressor::kZstd, *framed, whole));
  EXPECT_TRUE(std::equal(whole.begin(), whole.end(), ci.begin()));
  h.ci_compressor = uint32_t(Compressor::kZstd);
  h.ci_compressed_size = framed->size();
  const auto head_len = zran_frames_head_size(*framed);
  ASSERT_TRUE(head_len);
  EXPECT_LT(*head_len, zran_frames_head_bound(h.ci_entries));
  auto head = parse_zran_frames_head(std::span(*framed).first(*head_len), h);
  ASSERT_TRUE(head) << head.error().to_string();
  ASSERT_TRUE(*head);
  EXPECT_TRUE(std::equal((*head)->tables.begin(), (*head)->tables.end(), ci.begin()));
  const auto& wf = (*head)->window_frames;
  ASSERT_EQ(wf.size(), m->contexts.size() + 1);
  EXPECT_EQ(wf[1], wf[0]);  // context 0 starts the stream: no window, no frame
  for (size_t i = 1; i < m->contexts.size(); i++) {
    Bytes w(kZranWindowSize);
    ASSERT_TRUE(decompress(Compressor::kZstd, std::span(*framed).subspan(wf[i], wf[i + 1] - wf[i]), w)) << i;
    EXPECT_TRUE(w == dicts[i]) << i;
  }
  auto tables = parse_zran_tables((*head)->tables, h, {kLayerEnd, 0});
  ASSERT_TRUE(tables) << tables.error().to_string();
  EXPECT_TRUE(tables->lazy_dicts);
  EXPECT_EQ(tables->contexts.size(), m->contexts.size());

  // Upstream's one frame: not ours, no error.
  Bytes single;
  ASSERT_TRUE(*compress(Compressor::kZstd, ci, single));
  auto none = parse_zran_frames_head(single, h);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);

  // Lies in the index: refused.
  const size_t offs = kZranFramesProbe;
  auto lie = [&](size_t at, uint64_t v) {
    Bytes x = *framed;
    std::memcpy(x.data() + at, &v, 8);
    return parse_zran_frames_head(std::span(x).first(*head_len), h);
  };
  EXPECT_FALSE(lie(16, h.ci_zran_count + 1));                   // count
  EXPECT_FALSE(lie(24, *head_len));                              // tables frame longer than the head at hand
  EXPECT_FALSE(parse_zran_frames_head(std::span(*framed).first(*head_len - 1), h));  // head cut short
  EXPECT_FALSE(lie(offs + 8 * 5, wf[3]));                        // backwards
  EXPECT_FALSE(lie(offs + 8 * h.ci_zran_count, framed->size() + 1));  // past the buffer
  EXPECT_FALSE(lie(offs + 8 * 5, wf[4] + (64u << 10)));          // a window frame too big for a window
}

}  // namespace
}  // namespace nydus::format
