// Data blob writer/reader: round trips in every layout, the upstream
// fixtures, byte identity with an upstream-built blob, and hostile input.
#include <gtest/gtest.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "common/test_util.h"
#include "format/blob_reader.h"
#include "format/blob_writer.h"
#include "format/compress.h"
#include "format/digest.h"
#include "format/tar_header.h"

namespace nydus::format {
namespace {

namespace fs = std::filesystem;
using nydus::test::read_file;
using nydus::test::TempDir;
using nydus::test::write_file;
using Bytes = std::vector<uint8_t>;

using nydus::test::random_bytes;
using nydus::test::text_bytes;

Bytes slice(const Bytes& b, uint64_t off, uint64_t len) {
  return Bytes(b.begin() + ptrdiff_t(off), b.begin() + ptrdiff_t(off + len));
}

std::span<const uint8_t> as_bytes(const auto& pod) {
  return {reinterpret_cast<const uint8_t*>(&pod), sizeof(pod)};
}

// ---- building blobs for the tests -------------------------------------------

struct BuiltBlob {
  fs::path path;
  BlobInfo meta_info;  // from finish_meta()
  BlobInfo info;       // from close()
  std::vector<ChunkRecord> records;
  std::vector<Bytes> chunks;
};

BuiltBlob build_blob(const fs::path& path, const BlobWriterOptions& opts, const std::vector<Bytes>& chunks,
                     const Bytes* bootstrap = nullptr) {
  BuiltBlob out;
  out.path = path;
  out.chunks = chunks;
  auto w = BlobWriter::create(path, opts);
  EXPECT_TRUE(w.has_value()) << w.error().message;
  if (!w) return out;
  for (const Bytes& c : chunks) {
    Bytes packed;
    auto shrank = compress(opts.compressor, c, packed);
    EXPECT_TRUE(shrank.has_value());
    const bool compressed = shrank.value_or(false);
    const Bytes& stored = compressed ? packed : c;
    auto r = (*w)->add_chunk(stored, compressed, uint32_t(c.size()), compute_digest(opts.digester, c),
                             crc32c(c));
    EXPECT_TRUE(r.has_value()) << r.error().message;
    if (r) out.records.push_back(*r);
  }
  auto m = (*w)->finish_meta();
  EXPECT_TRUE(m.has_value()) << m.error().message;
  if (m) out.meta_info = *m;
  if (bootstrap) {
    auto s = (*w)->append_bootstrap(*bootstrap);
    EXPECT_TRUE(s.has_value()) << s.error().message;
  }
  auto c = (*w)->close();
  EXPECT_TRUE(c.has_value()) << c.error().message;
  if (c) out.info = *c;
  return out;
}

std::vector<Bytes> sample_chunks() {
  return {
      text_bytes(1, 1),           random_bytes(4095, 2), text_bytes(4097, 3),
      random_bytes(1 << 20, 4),   text_bytes(1 << 20, 5), Bytes(4096, 0),
      random_bytes(12345, 6),
  };
}

// Walk the reverse-tar chain from the end; returns the section names in file
// order and checks the sections tile the file exactly.
std::vector<std::string> walk_tar_chain(const Bytes& file) {
  std::vector<std::string> names;
  uint64_t pos = file.size();
  while (pos > 0) {
    EXPECT_GE(pos, 512u);
    if (pos < 512) break;
    auto h = parse_tar_header(std::span(file).subspan(pos - 512, 512));
    EXPECT_TRUE(h.has_value()) << "no tar header ending at " << pos;
    if (!h) break;
    EXPECT_LE(h->size, pos - 512);
    if (h->size > pos - 512) break;
    names.insert(names.begin(), h->name);
    pos -= 512 + h->size;
  }
  EXPECT_EQ(pos, 0u);
  return names;
}

// ---- round trips ---------------------------------------------------------------

struct Variant {
  Compressor compressor;
  bool tar, toc, inline_boot;
};

std::string variant_name(const testing::TestParamInfo<Variant>& p) {
  std::string s = compressor_name(p.param.compressor);
  if (p.param.tar) s += "_tar";
  if (p.param.toc) s += "_toc";
  if (p.param.inline_boot) s += "_inline";
  return s;
}

class BlobRoundTrip : public testing::TestWithParam<Variant> {};

TEST_P(BlobRoundTrip, WriteReadVerify) {
  const Variant v = GetParam();
  TempDir dir;
  BlobWriterOptions opts;
  opts.compressor = v.compressor;
  opts.digester = Digester::kBlake3;
  opts.blob_index = 3;
  opts.tar_headers = v.tar;
  opts.toc = v.toc;
  opts.inline_bootstrap = v.inline_boot;
  const Bytes bootstrap = text_bytes(20480, 99);
  BuiltBlob b = build_blob(dir / "blob", opts, sample_chunks(), v.inline_boot ? &bootstrap : nullptr);
  ASSERT_EQ(b.records.size(), b.chunks.size());
  const Bytes file = read_file(b.path);

  // Blob-table description.
  EXPECT_EQ(b.info.blob_id, to_hex(sha256(file)));
  EXPECT_EQ(b.info.compressed_size, file.size());
  EXPECT_EQ(b.info.chunk_count, b.chunks.size());
  EXPECT_EQ(b.info.compressor, v.compressor);
  EXPECT_EQ(b.info.digester, Digester::kBlake3);
  EXPECT_EQ(b.info.chunk_size, kDefaultChunkSize);
  uint32_t features = blob_features::kAligned | blob_features::kCapTarToc;
  if (v.tar) features |= blob_features::kHasTarHeader;
  if (v.toc) features |= blob_features::kHasToc | blob_features::kInlinedChunkDigest;
  if (v.inline_boot) features |= blob_features::kInlinedFsMeta;
  EXPECT_EQ(b.info.features, features);
  EXPECT_EQ(b.info.ci_uncompressed_size, 16u * b.chunks.size());
  if (v.compressor == Compressor::kNone) {
    EXPECT_EQ(b.info.ci_compressor, Compressor::kNone);
  }
  if (b.info.ci_compressor == Compressor::kNone) {
    EXPECT_EQ(b.info.ci_compressed_size, b.info.ci_uncompressed_size);
  } else {
    EXPECT_LT(b.info.ci_compressed_size, b.info.ci_uncompressed_size);
  }

  // Placement: compressed back to back from 0, uncompressed 4K aligned.
  uint64_t coff = 0, uoff = 0;
  for (size_t i = 0; i < b.records.size(); i++) {
    const ChunkRecord& r = b.records[i];
    EXPECT_EQ(r.blob_index, 3u);
    EXPECT_EQ(r.ci_index, i);
    EXPECT_EQ(r.compressed_offset, coff);
    EXPECT_EQ(r.uncompressed_offset, uoff);
    EXPECT_EQ(r.uncompressed_size, b.chunks[i].size());
    EXPECT_EQ(r.crc32, crc32c(b.chunks[i]));
    if (v.compressor == Compressor::kNone) {
      EXPECT_FALSE(r.compressed);
    }
    coff += r.compressed_size;
    uoff += align_up(r.uncompressed_size, kBlockSize);
  }
  EXPECT_TRUE(b.records[3].compressed == false) << "random 1 MiB must be stored raw";
  if (v.compressor != Compressor::kNone) {
    EXPECT_TRUE(b.records[4].compressed);
  }
  EXPECT_EQ(b.info.uncompressed_size, uoff);
  const uint64_t data_size = coff;
  EXPECT_EQ(b.info.ci_offset, data_size + (v.tar || v.toc || v.inline_boot ? 512 : 0));

  // Blob meta and chunks read back.
  auto f = BlobFile::open(b.path, b.info);
  ASSERT_TRUE(f.has_value()) << f.error().message;
  auto meta = f->read_meta();
  ASSERT_TRUE(meta.has_value()) << meta.error().message;
  EXPECT_EQ(meta->features, features);
  ASSERT_EQ(meta->chunks.size(), b.records.size());
  for (size_t i = 0; i < b.records.size(); i++) {
    const auto& m = meta->chunks[i];
    const auto& r = b.records[i];
    EXPECT_EQ(m.compressed_offset, r.compressed_offset);
    EXPECT_EQ(m.compressed_size, r.compressed_size);
    EXPECT_EQ(m.uncompressed_offset, r.uncompressed_offset);
    EXPECT_EQ(m.uncompressed_size, r.uncompressed_size);
    EXPECT_EQ(m.compressed, r.compressed);
    Bytes out(r.uncompressed_size);
    auto s = f->read_chunk(r, out, true);
    ASSERT_TRUE(s.has_value()) << s.error().message;
    EXPECT_EQ(out, b.chunks[i]);
  }
  ChunkRecord wrong = b.records[2];
  wrong.digest[0] ^= 1;
  Bytes out(wrong.uncompressed_size);
  auto bad = f->read_chunk(wrong, out, true);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, Errc::kCorrupt);
  EXPECT_TRUE(f->read_chunk(wrong, out, false).has_value());

  // The header in the blob is the one the blob.meta cache ends with.
  Bytes ci(b.info.ci_uncompressed_size);
  ASSERT_TRUE(decompress(b.info.ci_compressor, slice(file, b.info.ci_offset, b.info.ci_compressed_size), ci)
                  .has_value());
  Bytes cache = encode_blob_meta_cache(ci, b.info);
  ASSERT_EQ(cache.size(), align_up(ci.size(), 4096) + 4096);
  EXPECT_EQ(slice(cache, 0, ci.size()), ci);
  EXPECT_EQ(slice(cache, cache.size() - 4096, 4096),
            slice(file, b.info.ci_offset + b.info.ci_compressed_size, 4096));

  // Reverse-tar chain.
  if (v.tar || v.toc || v.inline_boot) {
    std::vector<std::string> expect = {"image.blob", "blob.meta"};
    if (v.toc) expect.push_back("blob.digest");
    if (v.inline_boot) expect.push_back("image.boot");
    if (v.toc) expect.push_back("rafs.blob.toc");
    EXPECT_EQ(walk_tar_chain(file), expect);
  } else {
    EXPECT_EQ(file.size(), b.info.ci_offset + b.info.ci_compressed_size + 4096);
  }

  // ToC.
  auto toc = f->read_toc();
  if (!v.toc) {
    ASSERT_FALSE(toc.has_value());
    EXPECT_EQ(toc.error().code, Errc::kNotFound);
    EXPECT_EQ(b.info.toc_size, 0u);
    EXPECT_EQ(b.meta_info.compressed_size, file.size());
  } else {
    ASSERT_TRUE(toc.has_value()) << toc.error().message;
    std::vector<std::string> names;
    for (auto& e : *toc) names.push_back(e.name);
    std::vector<std::string> expect = {"image.blob", "blob.meta", "blob.meta.header", "blob.digest"};
    if (v.inline_boot) expect.push_back("image.boot");
    ASSERT_EQ(names, expect);
    EXPECT_EQ(b.info.toc_size, 128 * toc->size() + 512);
    EXPECT_EQ(b.info.toc_digest, sha256(slice(file, file.size() - b.info.toc_size, b.info.toc_size)));
    const auto& blob_e = (*toc)[0];
    EXPECT_EQ(blob_e.flags, toc_flags::kNone);
    EXPECT_EQ(blob_e.compressed_offset, 0u);
    EXPECT_EQ(blob_e.compressed_size, data_size);
    EXPECT_EQ(blob_e.uncompressed_size, b.info.uncompressed_size);
    EXPECT_EQ(blob_e.digest, sha256(slice(file, 0, data_size + 512)));
    for (size_t i = 1; i < toc->size(); i++) {
      const auto& e = (*toc)[i];
      SCOPED_TRACE(e.name);
      Compressor c = e.flags == toc_flags::kZstd ? Compressor::kZstd
                     : e.flags == toc_flags::kLz4Block ? Compressor::kLz4Block
                                                        : Compressor::kNone;
      Bytes content(e.uncompressed_size);
      ASSERT_LE(e.compressed_offset + e.compressed_size, file.size());
      ASSERT_TRUE(decompress(c, slice(file, e.compressed_offset, e.compressed_size), content).has_value());
      EXPECT_EQ(sha256(content), e.digest);
    }
    EXPECT_EQ((*toc)[1].compressed_offset, b.info.ci_offset);
    EXPECT_EQ((*toc)[1].flags, b.info.ci_compressor == Compressor::kNone ? toc_flags::kNone
                               : b.info.ci_compressor == Compressor::kZstd ? toc_flags::kZstd
                                                                           : toc_flags::kLz4Block);
    EXPECT_EQ((*toc)[3].uncompressed_size, 32 * b.chunks.size());
    Bytes digests = slice(file, (*toc)[3].compressed_offset, (*toc)[3].compressed_size);
    for (size_t i = 0; i < b.records.size(); i++)
      EXPECT_TRUE(std::equal(b.records[i].digest.begin(), b.records[i].digest.end(), digests.begin() + 32 * i));
    // finish_meta reports the size before image.boot / ToC.
    const uint64_t meta_end = v.inline_boot ? (*toc)[4].compressed_offset : file.size() - b.info.toc_size;
    EXPECT_EQ(b.meta_info.compressed_size, meta_end);
  }

  if (v.inline_boot) {
    if (v.toc) {
      auto boot = f->read_inlined_bootstrap();
      ASSERT_TRUE(boot.has_value()) << boot.error().message;
      EXPECT_EQ(*boot, bootstrap);
      EXPECT_EQ((*toc)[4].flags, toc_flags::kZstd);  // text shrinks
    }
  } else if (v.toc) {
    auto boot = f->read_inlined_bootstrap();
    ASSERT_FALSE(boot.has_value());
    EXPECT_EQ(boot.error().code, Errc::kNotFound);
  }
}

INSTANTIATE_TEST_SUITE_P(
    BlobAll, BlobRoundTrip,
    testing::Values(Variant{Compressor::kNone, false, false, false}, Variant{Compressor::kNone, true, false, false},
                    Variant{Compressor::kNone, true, true, false}, Variant{Compressor::kNone, true, true, true},
                    Variant{Compressor::kLz4Block, false, false, false},
                    Variant{Compressor::kLz4Block, true, false, false},
                    Variant{Compressor::kLz4Block, true, true, false},
                    Variant{Compressor::kLz4Block, true, true, true}, Variant{Compressor::kZstd, false, false, false},
                    Variant{Compressor::kZstd, true, false, false}, Variant{Compressor::kZstd, true, true, false},
                    Variant{Compressor::kZstd, true, true, true}),
    variant_name);

TEST(BlobWriter, EmptyBlobHasNoMeta) {
  TempDir dir;
  BlobWriterOptions opts;
  opts.tar_headers = opts.toc = true;
  BuiltBlob b = build_blob(dir / "blob", opts, {});
  const Bytes file = read_file(b.path);
  EXPECT_EQ(b.info.chunk_count, 0u);
  EXPECT_EQ(b.info.uncompressed_size, 0u);
  EXPECT_EQ(b.info.ci_offset, 0u);
  EXPECT_EQ(b.info.ci_compressed_size, 0u);
  EXPECT_EQ(b.info.ci_uncompressed_size, 0u);
  EXPECT_EQ(walk_tar_chain(file), (std::vector<std::string>{"image.blob", "rafs.blob.toc"}));
  auto f = BlobFile::open(b.path, b.info);
  ASSERT_TRUE(f.has_value());
  auto meta = f->read_meta();
  ASSERT_TRUE(meta.has_value()) << meta.error().message;
  EXPECT_TRUE(meta->chunks.empty());
  auto toc = f->read_toc();
  ASSERT_TRUE(toc.has_value()) << toc.error().message;
  ASSERT_EQ(toc->size(), 1u);
  EXPECT_EQ((*toc)[0].name, "image.blob");
}

TEST(BlobWriter, RawInlinedBootstrapWhenZstdDoesNotShrink) {
  TempDir dir;
  BlobWriterOptions opts;
  opts.tar_headers = opts.toc = opts.inline_bootstrap = true;
  const Bytes boot = random_bytes(8192, 42);
  BuiltBlob b = build_blob(dir / "blob", opts, {text_bytes(5000, 1)}, &boot);
  auto f = BlobFile::open(b.path, b.info);
  ASSERT_TRUE(f.has_value());
  auto toc = f->read_toc();
  ASSERT_TRUE(toc.has_value());
  ASSERT_EQ(toc->back().name, "image.boot");
  EXPECT_EQ(toc->back().flags, toc_flags::kNone);
  EXPECT_EQ(toc->back().compressed_size, 8192u);
  auto got = f->read_inlined_bootstrap();
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(*got, boot);
}

TEST(BlobWriter, RejectsMisuse) {
  TempDir dir;
  BlobWriterOptions opts;
  opts.compressor = Compressor::kGzip;
  EXPECT_FALSE(BlobWriter::create(dir / "g", opts).has_value());
  opts.compressor = Compressor::kZstd;
  opts.chunk_size = 3000;
  EXPECT_FALSE(BlobWriter::create(dir / "c", opts).has_value());
  opts.chunk_size = 0x1000;
  auto w = BlobWriter::create(dir / "blob", opts);
  ASSERT_TRUE(w.has_value());
  Bytes data(5000, 1);
  Digest d{};
  EXPECT_FALSE((*w)->add_chunk(data, false, 5000, d, 0).has_value()) << "larger than chunk_size";
  EXPECT_FALSE((*w)->add_chunk(std::span(data).first(100), false, 4000, d, 0).has_value()) << "raw size lie";
  EXPECT_FALSE((*w)->add_chunk(std::span(data).first(4000), true, 4000, d, 0).has_value())
      << "compressed must differ in size";
  EXPECT_FALSE((*w)->add_chunk({}, true, 4000, d, 0).has_value());
  ASSERT_TRUE((*w)->add_chunk(std::span(data).first(4096), false, 4096, d, 0).has_value());
  EXPECT_EQ((*w)->chunk_count(), 1u);
  EXPECT_FALSE((*w)->append_bootstrap(data).has_value()) << "no inline_bootstrap";
  ASSERT_TRUE((*w)->finish_meta().has_value());
  EXPECT_FALSE((*w)->add_chunk(std::span(data).first(4096), false, 4096, d, 0).has_value());
  EXPECT_FALSE((*w)->finish_meta().has_value());
  auto c = (*w)->close();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->blob_id, to_hex(sha256(read_file(dir / "blob"))));
  EXPECT_FALSE((*w)->close().has_value());

  opts.inline_bootstrap = true;
  auto w2 = BlobWriter::create(dir / "blob2", opts);
  ASSERT_TRUE(w2.has_value());
  EXPECT_FALSE((*w2)->close().has_value()) << "inline_bootstrap without a bootstrap";
}

// ---- upstream fixtures ------------------------------------------------------

constexpr const char* kBe7d = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef";
constexpr const char* kTwoFa = "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca";

// Blob-table entry of be7d77ee… as stored in rafs-v6-2.2.boot (v6/*.inspect.txt).
BlobInfo be7d_info() {
  BlobInfo b;
  b.blob_id = kBe7d;
  b.chunk_size = 0x100000;
  b.chunk_count = 2;
  b.compressor = Compressor::kZstd;
  b.digester = Digester::kBlake3;
  b.features = 0x70000021;
  b.compressed_size = 14554;
  b.uncompressed_size = 36864;
  b.toc_size = 1024;
  b.ci_compressor = Compressor::kNone;
  b.ci_offset = 0x207a;
  b.ci_compressed_size = 32;
  b.ci_uncompressed_size = 32;
  b.toc_digest = *digest_from_hex("cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde");
  return b;
}

// Blob-table entry of 2fa78cad… from its inlined bootstrap.
BlobInfo twofa_info() {
  BlobInfo b;
  b.blob_id = kTwoFa;
  b.chunk_count = 3;
  b.compressor = Compressor::kZstd;
  b.digester = Digester::kBlake3;
  b.features = blob_features::kAligned;
  b.compressed_size = 2829;
  b.uncompressed_size = 12288;
  b.ci_compressor = Compressor::kNone;
  b.ci_offset = 3341;
  b.ci_compressed_size = 48;
  b.ci_uncompressed_size = 48;
  return b;
}

ChunkRecord record_from(const DecodedChunkInfo& c, uint32_t ci_index, const char* digest_hex) {
  ChunkRecord r;
  r.digest = *digest_from_hex(digest_hex);
  r.ci_index = ci_index;
  r.compressed_offset = c.compressed_offset;
  r.compressed_size = c.compressed_size;
  r.uncompressed_offset = c.uncompressed_offset;
  r.uncompressed_size = c.uncompressed_size;
  r.compressed = c.compressed;
  return r;
}


TEST(BlobFixture, Be7d77eeTocMetaAndChunks) {
  NYDUS_REQUIRE_FIXTURES();
  const fs::path p = nydus::test::fixtures_dir() / "v6" / kBe7d;
  const Bytes file = read_file(p);
  ASSERT_EQ(file.size(), 14554u);
  auto f = BlobFile::open(p, be7d_info());
  ASSERT_TRUE(f.has_value()) << f.error().message;

  auto toc = f->read_toc();  // also checks toc_size and toc_digest from the table
  ASSERT_TRUE(toc.has_value()) << toc.error().message;
  ASSERT_EQ(toc->size(), 4u);
  const char* names[] = {"image.blob", "blob.meta", "blob.meta.header", "blob.digest"};
  const uint64_t offs[] = {0x1e7a, 0x207a, 0x209a, 0x329a};  // image.blob: v2.2 wrote end-of-data
  const uint64_t sizes[] = {7802, 32, 4096, 64};
  for (size_t i = 0; i < 4; i++) {
    EXPECT_EQ((*toc)[i].name, names[i]);
    EXPECT_EQ((*toc)[i].flags, toc_flags::kNone);
    EXPECT_EQ((*toc)[i].compressed_offset, offs[i]);
    EXPECT_EQ((*toc)[i].compressed_size, sizes[i]);
  }
  EXPECT_EQ((*toc)[0].uncompressed_size, 36864u);
  EXPECT_EQ((*toc)[0].digest, sha256(slice(file, 0, 7802 + 512)));
  for (size_t i = 1; i < 4; i++) EXPECT_EQ((*toc)[i].digest, sha256(slice(file, offs[i], sizes[i]))) << names[i];
  EXPECT_EQ(walk_tar_chain(file),
            (std::vector<std::string>{"image.blob", "blob.meta", "blob.digest", "rafs.blob.toc"}));

  auto meta = f->read_meta();
  ASSERT_TRUE(meta.has_value()) << meta.error().message;
  EXPECT_EQ(meta->features, 0x70000021u);
  ASSERT_EQ(meta->chunks.size(), 2u);
  EXPECT_EQ(meta->chunks[0].compressed_offset, 0u);
  EXPECT_EQ(meta->chunks[0].compressed_size, 0x12dcu);
  EXPECT_EQ(meta->chunks[0].uncompressed_offset, 0u);
  EXPECT_EQ(meta->chunks[0].uncompressed_size, 0x4223u);
  EXPECT_EQ(meta->chunks[1].compressed_offset, 0x12dcu);
  EXPECT_EQ(meta->chunks[1].compressed_size, 0xb9eu);
  EXPECT_EQ(meta->chunks[1].uncompressed_offset, 0x5000u);
  EXPECT_EQ(meta->chunks[1].uncompressed_size, 0x3458u);

  // Chunk digests: inspect.txt values, which must also be the blob.digest array.
  const char* digests[] = {"f7e2735f1c6ae9cde91e537416b09d8bb71b306a421d19cc1012a51f93a7fe69",
                           "812465bcc9e88393598311dc5fc93abaeccef0185bcd99f9701d17ebdf9adc3f"};
  for (uint32_t i = 0; i < 2; i++) {
    ChunkRecord r = record_from(meta->chunks[i], i, digests[i]);
    EXPECT_TRUE(std::equal(r.digest.begin(), r.digest.end(), file.begin() + 0x329a + 32 * i));
    EXPECT_TRUE(r.compressed);
    Bytes out(r.uncompressed_size);
    auto s = f->read_chunk(r, out, true);
    EXPECT_TRUE(s.has_value()) << s.error().message;
  }
  EXPECT_EQ(f->read_inlined_bootstrap().error().code, Errc::kNotFound);
}

TEST(BlobFixture, TwoFa78cadInlinedBootstrap) {
  NYDUS_REQUIRE_FIXTURES();
  const fs::path p = nydus::test::fixtures_dir() / "v6" / kTwoFa;
  const Bytes file = read_file(p);
  EXPECT_EQ(to_hex(sha256(file)), kTwoFa);
  auto f = BlobFile::open(p, twofa_info());
  ASSERT_TRUE(f.has_value());
  auto toc = f->read_toc();  // found by auto-detect: this old table has no toc fields
  ASSERT_TRUE(toc.has_value()) << toc.error().message;
  ASSERT_EQ(toc->size(), 4u);
  EXPECT_EQ((*toc)[3].name, "image.boot");
  EXPECT_EQ((*toc)[3].flags, toc_flags::kZstd);
  EXPECT_EQ((*toc)[3].compressed_size, 501u);
  EXPECT_EQ((*toc)[3].uncompressed_size, 20480u);

  auto boot = f->read_inlined_bootstrap();
  ASSERT_TRUE(boot.has_value()) << boot.error().message;
  EXPECT_EQ(*boot, read_file(nydus::test::fixtures_dir() / "v6" / "2fa78cad-inlined-image.boot.DERIVED"));

  auto meta = f->read_meta();
  ASSERT_TRUE(meta.has_value()) << meta.error().message;
  ASSERT_EQ(meta->chunks.size(), 3u);
  const char* digests[] = {"bf8f65fee2b536e614987f003484d42ff608f8cc41ca5308260193ddc48c9218",
                           "28f73b404339f55338edbdf54f1bf877af7a89dfc0c9a1e7d57168d110c7f951",
                           "9909d80bbb324c02d46c6a5b078b018b41e60b62ff49b1d3ed9ab1126ca2d3a0"};
  for (uint32_t i = 0; i < 3; i++) {
    ChunkRecord r = record_from(meta->chunks[i], i, digests[i]);
    Bytes out(r.uncompressed_size);
    auto s = f->read_chunk(r, out, true);
    EXPECT_TRUE(s.has_value()) << i << ": " << s.error().message;
  }
}

// Rebuild be7d77ee… from its two stored chunks and compare layouts.
TEST(BlobFixture, ByteIdentityWithUpstreamLayout) {
  NYDUS_REQUIRE_FIXTURES();
  const Bytes up = read_file(nydus::test::fixtures_dir() / "v6" / kBe7d);
  ASSERT_EQ(up.size(), 14554u);
  TempDir dir;
  BlobWriterOptions opts;
  opts.compressor = Compressor::kZstd;
  opts.digester = Digester::kBlake3;
  opts.tar_headers = opts.toc = true;
  auto w = BlobWriter::create(dir / "blob", opts);
  ASSERT_TRUE(w.has_value());
  struct { uint64_t off; uint32_t csize, usize; } chunks[] = {{0, 0x12dc, 0x4223}, {0x12dc, 0xb9e, 0x3458}};
  for (uint32_t i = 0; i < 2; i++) {
    Bytes stored = slice(up, chunks[i].off, chunks[i].csize);
    Bytes raw(chunks[i].usize);
    ASSERT_TRUE(decompress(Compressor::kZstd, stored, raw).has_value());
    // The spec records that libzstd 1.5.4 at level 3 reproduces these
    // chunks; other versions may legitimately differ, so only check there.
    Bytes again;
    ASSERT_TRUE(*compress(Compressor::kZstd, raw, again));
    if (ZSTD_versionNumber() == 10504) {
      EXPECT_EQ(again, stored) << "chunk " << i;
    }
    Digest d;
    std::copy_n(up.begin() + 0x329a + 32 * i, 32, d.begin());
    EXPECT_EQ(compute_digest(Digester::kBlake3, raw), d);
    ASSERT_TRUE((*w)->add_chunk(stored, true, chunks[i].usize, d, crc32c(raw)).has_value());
  }
  auto info = (*w)->close();
  ASSERT_TRUE(info.has_value()) << info.error().message;
  const Bytes ours = read_file(dir / "blob");
  ASSERT_EQ(ours.size(), up.size());

  // Blob-table fields match the upstream bootstrap's entry.
  const BlobInfo ref = be7d_info();
  EXPECT_EQ(info->features, ref.features);
  EXPECT_EQ(info->uncompressed_size, ref.uncompressed_size);
  EXPECT_EQ(info->ci_compressor, ref.ci_compressor);
  EXPECT_EQ(info->ci_offset, ref.ci_offset);
  EXPECT_EQ(info->ci_compressed_size, ref.ci_compressed_size);
  EXPECT_EQ(info->ci_uncompressed_size, ref.ci_uncompressed_size);
  EXPECT_EQ(info->toc_size, ref.toc_size);
  EXPECT_EQ(info->compressed_size, ref.compressed_size);

  // Everything up to the ToC is identical: chunk data, image.blob header, ci
  // array, 4096-byte meta header, blob.meta header, digests, blob.digest header.
  const size_t toc_off = 0x34da;
  EXPECT_TRUE(std::equal(ours.begin(), ours.begin() + toc_off, up.begin()));
  for (size_t off = 0; off < toc_off; off++)
    if (ours[off] != up[off]) {
      ADD_FAILURE() << "first difference at " << off;
      break;
    }
  // ToC entries: flags, name, digest, offsets and sizes agree except the
  // image.blob offset (v2.2 wrote the end of the chunk data, current builders
  // write 0). The 48 reserved bytes are not compared: the upstream builder left
  // uninitialised memory there (0xffff / "0000" at bytes 124..127), we write 0.
  for (size_t i = 0; i < 4; i++) {
    const size_t e = toc_off + 128 * i;
    SCOPED_TRACE(i);
    EXPECT_TRUE(std::equal(ours.begin() + e, ours.begin() + e + 56, up.begin() + e));
    if (i == 0) {
      EXPECT_EQ(load<uint64_t>(ours.data() + e + 56), 0u);
      EXPECT_EQ(load<uint64_t>(up.data() + e + 56), 0x1e7au);
    } else {
      EXPECT_TRUE(std::equal(ours.begin() + e + 56, ours.begin() + e + 64, up.begin() + e + 56));
    }
    EXPECT_TRUE(std::equal(ours.begin() + e + 64, ours.begin() + e + 80, up.begin() + e + 64));
    EXPECT_TRUE(std::all_of(ours.begin() + e + 80, ours.begin() + e + 128, [](uint8_t b) { return b == 0; }));
  }
  // The rafs.blob.toc tar header is identical (same size, so same bytes).
  EXPECT_TRUE(std::equal(ours.end() - 512, ours.end(), up.end() - 512));
  // Hence the ToC digest differs only because of those fields.
  EXPECT_EQ(info->toc_digest, sha256(slice(ours, toc_off, 1024)));
}

// ---- hostile input ------------------------------------------------------------

class BlobCorrupt : public testing::Test {
 protected:
  void SetUp() override {
    BlobWriterOptions opts;
    opts.compressor = Compressor::kZstd;
    opts.tar_headers = opts.toc = true;
    b = build_blob(dir / "blob", opts, {text_bytes(9000, 1), random_bytes(5000, 2), text_bytes(70000, 3)});
    file = read_file(b.path);
    ASSERT_EQ(b.records.size(), 3u);
  }
  Bytes meta_bytes() const {
    return slice(file, b.info.ci_offset, b.info.ci_compressed_size + 4096);
  }
  fs::path write_variant(const Bytes& data, const char* name) {
    write_file(dir / name, data);
    return dir / name;
  }
  TempDir dir;
  BuiltBlob b;
  Bytes file;
};

TEST_F(BlobCorrupt, TruncatedBlob) {
  for (size_t len : {file.size() - 1, file.size() - 600, file.size() / 2, size_t(100), size_t(0)}) {
    SCOPED_TRACE(len);
    auto p = write_variant(slice(file, 0, len), "trunc");
    auto f = BlobFile::open(p, b.info);
    ASSERT_TRUE(f.has_value());
    EXPECT_FALSE(f->read_toc().has_value());
    const bool meta_intact = len >= b.info.ci_offset + b.info.ci_compressed_size + 4096;
    EXPECT_EQ(f->read_meta().has_value(), meta_intact);
    const ChunkRecord& last = b.records.back();
    Bytes out(last.uncompressed_size);
    auto s = f->read_chunk(last, out, true);
    EXPECT_EQ(s.has_value(), len >= last.compressed_offset + last.compressed_size);
    EXPECT_FALSE(f->read_inlined_bootstrap().has_value());
  }
}

TEST_F(BlobCorrupt, BadMagic) {
  Bytes m = meta_bytes();
  ASSERT_TRUE(parse_blob_meta(m, b.info).has_value());
  const size_t h = b.info.ci_compressed_size;
  for (size_t at : {h, h + 4092}) {
    Bytes bad = m;
    bad[at] ^= 0x01;
    auto r = parse_blob_meta(bad, b.info);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, Errc::kCorrupt);
  }
  // The same through the file.
  Bytes bad_file = file;
  bad_file[b.info.ci_offset + b.info.ci_compressed_size + 1] ^= 0xFF;
  auto f = BlobFile::open(write_variant(bad_file, "magic"), b.info);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->read_meta().error().code, Errc::kCorrupt);
}

TEST_F(BlobCorrupt, EntriesMismatch) {
  Bytes m = meta_bytes();
  // Header says 4 entries, table says 3.
  Bytes bad = m;
  bad[b.info.ci_compressed_size + 12] = 4;
  EXPECT_FALSE(parse_blob_meta(bad, b.info).has_value());
  // Table says 4 chunks (and a matching 64-byte array): header disagrees.
  BlobInfo info = b.info;
  info.chunk_count = 4;
  info.ci_uncompressed_size = 64;
  EXPECT_FALSE(parse_blob_meta(m, info).has_value());
  // Header compressor/offset disagree with the table.
  info = b.info;
  info.ci_offset += 1;
  EXPECT_FALSE(parse_blob_meta(m, info).has_value());
  info = b.info;
  info.ci_compressor = Compressor::kLz4Block;
  EXPECT_FALSE(parse_blob_meta(m, info).has_value());
}

TEST_F(BlobCorrupt, CiSizeLies) {
  Bytes m = meta_bytes();
  BlobInfo info = b.info;
  info.ci_uncompressed_size = 1ull << 40;  // must fail before allocating
  EXPECT_FALSE(parse_blob_meta(m, info).has_value());
  info = b.info;
  info.ci_uncompressed_size = 48 + 16;
  EXPECT_FALSE(parse_blob_meta(m, info).has_value());
  info = b.info;
  info.ci_compressed_size = info.ci_uncompressed_size + 1;
  EXPECT_FALSE(parse_blob_meta(m, info).has_value());
  info = b.info;
  info.chunk_count = kMaxChunksPerBlob + 1;
  EXPECT_FALSE(parse_blob_meta(m, info).has_value());
  info = b.info;
  info.chunk_count = 1u << 24;
  info.ci_uncompressed_size = 16ull << 24;  // consistent but absurd for this small data area
  EXPECT_FALSE(parse_blob_meta(m, info).has_value());
  // A wrong meta length.
  EXPECT_FALSE(parse_blob_meta(std::span(m).first(m.size() - 1), b.info).has_value());
  // Through the file: a huge compressed size must fail on the bounds check.
  info = b.info;
  info.ci_compressed_size = 1ull << 62;
  auto f = BlobFile::open(b.path, info);
  ASSERT_TRUE(f.has_value());
  EXPECT_FALSE(f->read_meta().has_value());
  info.ci_compressed_size = ~0ull - 100;
  f = BlobFile::open(b.path, info);
  ASSERT_TRUE(f.has_value());
  EXPECT_FALSE(f->read_meta().has_value());
}

TEST_F(BlobCorrupt, ChunkBeyondFileOrDataArea) {
  auto f = BlobFile::open(b.path, b.info);
  ASSERT_TRUE(f.has_value());
  ChunkRecord r = b.records[0];
  Bytes out(r.uncompressed_size);
  r.compressed_offset = file.size() - 10;
  EXPECT_EQ(f->read_chunk(r, out, false).error().code, Errc::kCorrupt);
  r.compressed_offset = ~0ull - 5;  // overflow
  EXPECT_EQ(f->read_chunk(r, out, false).error().code, Errc::kCorrupt);
  r = b.records[0];
  r.compressed_size = kMaxChunkSize + 1;
  EXPECT_FALSE(f->read_chunk(r, out, false).has_value());
  r = b.records[0];
  Bytes small(r.uncompressed_size - 1);
  EXPECT_FALSE(f->read_chunk(r, small, false).has_value());
  // A stored chunk read with the wrong uncompressed size is corrupt, not UB.
  r.uncompressed_size -= 1;
  EXPECT_FALSE(f->read_chunk(r, small, false).has_value());

  // ci entries pointing outside: use an uncompressed-ci blob so we can edit it.
  BlobWriterOptions opts;
  opts.compressor = Compressor::kNone;
  BuiltBlob raw = build_blob(dir / "raw", opts, {text_bytes(5000, 7), text_bytes(100, 8)});
  ASSERT_EQ(raw.info.ci_compressor, Compressor::kNone);
  const Bytes rf = read_file(raw.path);
  const Bytes m = slice(rf, raw.info.ci_offset, raw.info.ci_compressed_size + 4096);
  ASSERT_TRUE(parse_blob_meta(m, raw.info).has_value());
  auto edit = [&](auto fn) {
    Bytes bad = m;
    auto e = load<ChunkInfoV1>(bad.data() + 16);
    DecodedChunkInfo c = decode_ci_v1(e);
    fn(c);
    e = encode_ci_v1(c);
    std::memcpy(bad.data() + 16, &e, sizeof(e));
    return bad;
  };
  EXPECT_FALSE(parse_blob_meta(edit([&](auto& c) { c.compressed_offset = raw.info.ci_offset; }), raw.info).has_value());
  EXPECT_FALSE(parse_blob_meta(edit([&](auto& c) { c.uncompressed_offset = 1 << 20; }), raw.info).has_value());
  EXPECT_FALSE(parse_blob_meta(edit([&](auto& c) {
                                 c.compressed_size = 50;  // "compressed" in a none blob
                               }),
                               raw.info)
                   .has_value());
  EXPECT_TRUE(parse_blob_meta(edit([](auto&) {}), raw.info).has_value());
}

TEST_F(BlobCorrupt, BadTarChecksumAndTocShape) {
  const size_t toc_len = b.info.toc_size;
  Bytes tail = slice(file, file.size() - toc_len, toc_len);
  ASSERT_TRUE(parse_toc(tail).has_value());
  // A flipped byte in the header breaks its checksum.
  Bytes bad = tail;
  bad[bad.size() - 512 + 3] ^= 0x20;
  EXPECT_EQ(parse_toc(bad).error().code, Errc::kCorrupt);
  // Through the file (no table hints: auto-detect path).
  Bytes bad_file = file;
  bad_file[file.size() - 512 + 3] ^= 0x20;
  BlobInfo info = b.info;
  info.toc_size = 0;
  info.toc_digest = {};
  auto f = BlobFile::open(write_variant(bad_file, "tar"), info);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->read_toc().error().code, Errc::kCorrupt);
  // A changed ToC entry is caught by the table's toc digest.
  Bytes edited = file;
  edited[file.size() - toc_len + 60] ^= 1;
  f = BlobFile::open(write_variant(edited, "edited"), b.info);
  ASSERT_TRUE(f.has_value());
  EXPECT_FALSE(f->read_toc().has_value());

  auto with_header = [](Bytes body, std::string_view name, uint64_t size) {
    TarHeader h = make_tar_header(name, size);
    body.insert(body.end(), h.begin(), h.end());
    return body;
  };
  Bytes entries = slice(tail, 0, tail.size() - 512);
  EXPECT_TRUE(parse_toc(with_header(entries, "rafs.blob.toc", entries.size())).has_value());
  // Size not a multiple of 128.
  EXPECT_FALSE(parse_toc(with_header(entries, "rafs.blob.toc", entries.size() - 2)).has_value());
  // Otherwise well-formed entries followed by 64 stray bytes inside the ToC.
  Bytes padded = entries;
  padded.resize(entries.size() + 64, 0);
  EXPECT_FALSE(parse_toc(with_header(padded, "rafs.blob.toc", padded.size())).has_value());
  // Size beyond the bytes we have.
  EXPECT_FALSE(parse_toc(with_header(entries, "rafs.blob.toc", entries.size() + 128)).has_value());
  // Wrong name; typeflag other than '0'.
  EXPECT_FALSE(parse_toc(with_header(entries, "blob.meta", entries.size())).has_value());
  Bytes nul_type = with_header(entries, "rafs.blob.toc", entries.size());
  EXPECT_FALSE(parse_toc(std::span(nul_type).first(100)).has_value());  // too short
  {
    // Old-style NUL typeflag with a valid checksum: fine for tar, not a ToC.
    uint8_t* h = nul_type.data() + nul_type.size() - 512;
    h[156] = 0;
    uint32_t sum = 0;
    for (size_t i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? uint8_t(' ') : h[i];
    std::snprintf(reinterpret_cast<char*>(h + 148), 8, "%07o", sum);
    ASSERT_TRUE(parse_tar_header(std::span(h, 512)).has_value());
    EXPECT_FALSE(parse_toc(nul_type).has_value());
  }
  // Name not NUL padded / empty; unknown flags.
  Bytes e1 = entries;
  e1[8 + 12] = 'x';  // "image.blob\0x…"
  EXPECT_FALSE(parse_toc(with_header(e1, "rafs.blob.toc", e1.size())).has_value());
  Bytes e2 = entries;
  std::memset(e2.data() + 8, 0, 16);
  EXPECT_FALSE(parse_toc(with_header(e2, "rafs.blob.toc", e2.size())).has_value());
  Bytes e3 = entries;
  e3[0] = 0x3;
  EXPECT_FALSE(parse_toc(with_header(e3, "rafs.blob.toc", e3.size())).has_value());
}

TEST_F(BlobCorrupt, InlinedBootstrapSizesAreBounded) {
  BlobWriterOptions opts;
  opts.tar_headers = opts.toc = opts.inline_bootstrap = true;
  const Bytes boot = text_bytes(30000, 5);
  BuiltBlob ib = build_blob(dir / "ib", opts, {text_bytes(3000, 4)}, &boot);
  Bytes f = read_file(ib.path);
  BlobInfo info = ib.info;
  info.toc_digest = {};  // let edited entries through to the bootstrap checks
  const size_t entry = f.size() - ib.info.toc_size + 128 * 4;
  auto try_edit = [&](size_t field, uint64_t value) {
    Bytes bad = f;
    std::memcpy(bad.data() + entry + field, &value, 8);
    auto bf = BlobFile::open(write_variant(bad, "ibad"), info);
    EXPECT_TRUE(bf.has_value());
    return bf->read_inlined_bootstrap();
  };
  EXPECT_TRUE(try_edit(72, 30000).has_value());           // unchanged value
  EXPECT_FALSE(try_edit(72, 1ull << 40).has_value());     // absurd uncompressed size
  EXPECT_FALSE(try_edit(72, 29999).has_value());          // zstd output size mismatch
  EXPECT_FALSE(try_edit(64, 1ull << 35).has_value());     // compressed size beyond file
  EXPECT_FALSE(try_edit(56, ~0ull - 3).has_value());      // offset overflow
  Bytes bad = f;
  bad[entry + 24] ^= 1;                                   // digest
  auto bf = BlobFile::open(write_variant(bad, "idig"), info);
  ASSERT_TRUE(bf.has_value());
  EXPECT_EQ(bf->read_inlined_bootstrap().error().code, Errc::kCorrupt);
}

// Flip every byte of real metadata: errors are fine, crashes are not.
TEST_F(BlobCorrupt, ByteFlipsNeverCrash) {
  const Bytes m = meta_bytes();
  for (size_t i = 0; i < m.size(); i++) {
    Bytes bad = m;
    bad[i] ^= 0xA5;
    (void)parse_blob_meta(bad, b.info);
  }
  const Bytes tail = slice(file, file.size() - b.info.toc_size, b.info.toc_size);
  for (size_t i = 0; i < tail.size(); i++) {
    Bytes bad = tail;
    bad[i] ^= 0xA5;
    (void)parse_toc(bad);
  }
  {
    const Bytes up = read_file(nydus::test::fixtures_dir() / "v6" / kBe7d);
    const BlobInfo info = be7d_info();
    const Bytes um = slice(up, info.ci_offset, info.ci_compressed_size + 4096);
    ASSERT_TRUE(parse_blob_meta(um, info).has_value());
    for (size_t i = 0; i < 32 + 64; i++) {
      Bytes bad = um;
      bad[i] ^= 0xFF;
      (void)parse_blob_meta(bad, info);
    }
  }
}

}  // namespace
}  // namespace nydus::format
