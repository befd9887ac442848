// `create --type targz-ref`: every regular file's chunks, inflated from their
// ZRAN contexts over the original layer, equal what GNU tar extracts (the
// oracle), and the image records what upstream's readers expect.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <set>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "format/bootstrap.h"
#include "format/compress.h"
#include "format/digest.h"
#include "format/gzip_random.h"
#include "format/zran_meta.h"

namespace nydus::builder {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using nydus::test::read_file;
using nydus::test::TempDir;

// A layer with small files, files over several chunks, an empty file, a hard
// link, a symlink; written by GNU tar, gzipped by gzip (two members when
// `members` = 2).
fs::path make_layer(const TempDir& d, int members) {
  const fs::path root = d.path() / "root";
  fs::create_directories(root / "usr/lib/x");
  std::mt19937 rng(3);
  auto text = [&](size_t n) {
    std::string s;
    static const char* w[] = {"alpha ", "beta\n", "gamma ", "delta ", "epsilon\n"};
    while (s.size() < n) s += w[rng() % 5];
    s.resize(n);
    return s;
  };
  for (int i = 0; i < 40; i++) nydus::test::write_file(root / "usr/lib/x" / ("f" + std::to_string(i)), text(100 + i * 997));
  nydus::test::write_file(root / "usr/lib/big", text(3 * 1024 * 1024 + 123));
  Bytes rnd(2 * 1024 * 1024 + 7);
  for (auto& b : rnd) b = uint8_t(rng());
  nydus::test::write_file(root / "usr/lib/random", rnd);
  nydus::test::write_file(root / "empty", std::string());
  fs::create_hard_link(root / "usr/lib/big", root / "usr/big-link");
  fs::create_symlink("lib/big", root / "usr/sym");
  const fs::path layer = d.path() / "layer.tar.gz";
  if (members == 1) {
    EXPECT_EQ(std::system(("tar -C " + root.string() + " -cf - . | gzip -n -6 > " + layer.string()).c_str()), 0);
  } else {
    // Two members split inside the tar stream (mid-file), as concatenated gzip.
    const fs::path tar = d.path() / "layer.tar";
    EXPECT_EQ(std::system(("tar -C " + root.string() + " -cf " + tar.string() + " .").c_str()), 0);
    const std::string t = tar.string(), l = layer.string();
    EXPECT_EQ(std::system(("head -c 2500000 " + t + " | gzip -n > " + l + " && tail -c +2500001 " + t +
                           " | gzip -n -1 >> " + l).c_str()), 0);
  }
  return layer;
}

void check_layer(int members) {
  TempDir d;
  const fs::path layer = make_layer(d, members);
  CreateOptions o;
  o.source_type = SourceType::kTargzRef;
  o.source = layer;
  o.bootstrap = d.path() / "image.boot";
  o.blob_file = d.path() / "meta.blob";
  o.compressor = format::Compressor::kGzip;
  o.digester = format::Digester::kSha256;
  auto r = create_image(o);
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->blobs.size(), 1u);
  const Bytes gz = read_file(layer);

  // Blob table: the layer's sha256 and size, as upstream's ref images.
  auto boot = format::Bootstrap::open(o.bootstrap);
  ASSERT_TRUE(boot) << boot.error().to_string();
  ASSERT_EQ((*boot)->blobs().size(), 1u);
  const format::BlobInfo& b = (*boot)->blobs()[0];
  EXPECT_EQ(b.blob_id, format::to_hex(format::sha256(gz)));
  EXPECT_EQ(b.compressed_size, gz.size());
  EXPECT_EQ(b.compressor, format::Compressor::kGzip);
  EXPECT_EQ(b.digester, format::Digester::kSha256);
  EXPECT_EQ(b.features & 0xff, format::blob_features::kAligned | format::blob_features::kChunkInfoV2 |
                                   format::blob_features::kZran | format::blob_features::kSeparate);
  const Bytes meta_blob = read_file(o.blob_file);
  EXPECT_EQ(b.blob_meta_digest, format::sha256(meta_blob));
  EXPECT_EQ(b.blob_meta_size, meta_blob.size());
  EXPECT_EQ(b.ci_offset, 0u);
  EXPECT_EQ(b.ci_compressed_size + format::kBlobMetaHeaderSize, meta_blob.size());

  // The meta blob: zstd ci buffer (frames: tables, index, windows) + header
  // with the ZRAN fields; zstd's own tool reads the frames as one buffer.
  const auto h = format::load<format::BlobMetaHeader>(meta_blob.data() + b.ci_compressed_size);
  EXPECT_EQ(h.ci_compressor, uint32_t(format::Compressor::kZstd));
  {
    const fs::path z = d.path() / "ci.zst";
    nydus::test::write_file(z, Bytes(meta_blob.begin(), meta_blob.begin() + int64_t(b.ci_compressed_size)));
    ASSERT_EQ(std::system(("zstd -q -d -f " + z.string() + " -o " + (d.path() / "ci.raw").string()).c_str()), 0);
    EXPECT_EQ(fs::file_size(d.path() / "ci.raw"), b.ci_uncompressed_size);
  }
  Bytes ci(b.ci_uncompressed_size);
  ASSERT_TRUE(format::decompress(b.ci_compressor, std::span(meta_blob).first(b.ci_compressed_size), ci));
  EXPECT_TRUE(ci == read_file(d.path() / "ci.raw")) << "zstd(1) reads the frames differently";
  auto zm = format::parse_zran_ci(ci, h, {gz.size(), b.uncompressed_size});
  ASSERT_TRUE(zm) << zm.error().to_string();
  EXPECT_EQ(zm->chunks.size(), b.chunk_count);
  // ~1-2 MiB apart over ~8 MiB (right before chunk starts, see index_gzip).
  EXPECT_GE(zm->contexts.size(), 4u);

  // Every file, chunk by chunk, against what GNU tar extracts.
  const fs::path x = d.path() / "x";
  fs::create_directories(x);
  ASSERT_EQ(std::system(("tar -C " + x.string() + " -xzf " + layer.string()).c_str()), 0);
  size_t files = 0;
  auto st = (*boot)->walk([&](const std::string& path, const format::InodeView& ino) -> Status {
    if (!ino.is_reg()) return ok();
    const Bytes want = read_file(x / path.substr(1));
    EXPECT_EQ(ino.size, want.size()) << path;
    NYDUS_ASSIGN_OR_RETURN(auto refs, (*boot)->chunks(ino));
    Bytes got;
    for (const auto& ref : refs) {
      EXPECT_EQ(ref.blob_index, 0u);
      const format::ZranChunk& z = zm->chunks.at(ref.ci_index);
      const format::ZranContext& c = zm->contexts.at(z.zran_index);
      Bytes out(z.ci.uncompressed_size);
      const uint64_t in_end = z.ci.compressed_offset + z.ci.compressed_size;  // enough input, per the ci entry
      format::InflatePoint at{c.ctx_bits, c.ctx_byte, zm->dict(c)};
      NYDUS_TRY(format::inflate_from_checkpoint(at, std::span(gz).subspan(c.in_offset, in_end - c.in_offset),
                                                z.zran_offset, out));
      got.insert(got.end(), out.begin(), out.end());
    }
    EXPECT_TRUE(got == want) << path;
    files++;
    return ok();
  });
  ASSERT_TRUE(st) << st.error().to_string();
  EXPECT_EQ(files, 44u);  // 40 + big (and its hard link) + random + empty
}

TEST(ZranBuild, FilesInflateToTarBytes) { check_layer(1); }
TEST(ZranBuild, TwoGzipMembersSplitMidFile) { check_layer(2); }

TEST(ZranBuild, RefusesNonGzip) {
  TempDir d;
  const fs::path tar = d.path() / "plain.tar";
  nydus::test::write_file(d.path() / "f", std::string("x"));
  ASSERT_EQ(std::system(("tar -C " + d.path().string() + " -cf " + tar.string() + " f").c_str()), 0);
  CreateOptions o;
  o.source_type = SourceType::kTargzRef;
  o.source = tar;
  o.bootstrap = d.path() / "b";
  o.blob_dir = d.path() / "blobs";
  EXPECT_FALSE(create_image(o));
}

// The tar scan and the inflate scan run side by side (create_zran.cpp): a
// failure on either side ends the build with an error, never a hang.
TEST(ZranBuild, EitherScanFailingEndsTheBuild) {
  TempDir d;
  const fs::path root = d.path() / "root";
  fs::create_directories(root);
  for (int i = 0; i < 40; i++) nydus::test::write_file(root / ("f" + std::to_string(i)), nydus::test::random_bytes(200000, i));
  const fs::path layer = d.path() / "layer.tar.gz";
  ASSERT_EQ(std::system(("tar -C " + root.string() + " -cf - . | gzip -n > " + layer.string()).c_str()), 0);
  const Bytes gz = read_file(layer);
  auto build = [&](const Bytes& bytes) {
    nydus::test::write_file(d.path() / "in.gz", bytes);
    CreateOptions o;
    o.source_type = SourceType::kTargzRef;
    o.source = d.path() / "in.gz";
    o.bootstrap = d.path() / "b";
    o.blob_dir = d.path() / "blobs";
    return create_image(o);
  };
  // Truncated mid-layer: both scans fail.
  auto cut = build(Bytes(gz.begin(), gz.begin() + int64_t(gz.size() / 2)));
  ASSERT_FALSE(cut);
  // Valid gzip of something that is no tar: the tar scan fails, the inflate
  // scan (which would wait for chunk starts) is let go.
  const fs::path junk = d.path() / "junk.gz";
  nydus::test::write_file(d.path() / "junk", nydus::test::random_bytes(3u << 20, 9));
  ASSERT_EQ(std::system(("gzip -n -c " + (d.path() / "junk").string() + " > " + junk.string()).c_str()), 0);
  auto notar = build(read_file(junk));
  ASSERT_FALSE(notar);
  // A flipped byte deep in the deflate data: a clear error.
  Bytes bad = gz;
  bad[bad.size() * 3 / 4] ^= 0x55;
  EXPECT_FALSE(build(bad));
  // And the intact layer still builds.
  auto good = build(gz);
  ASSERT_TRUE(good) << good.error().to_string();
  EXPECT_EQ(good->chunks_total, 40u);
}

// A tar header is untrusted: one claiming a file of 2^60 bytes (base-256
// size field) over a layer of a few KB fails the build with an error. The
// inflate scan learns chunk starts from headers; it must expand them only as
// far as the stream reaches (2^40 pieces up front would never end).
TEST(ZranBuild, AHeaderClaimingAHugeFileFailsCleanly) {
  TempDir d;
  Bytes tar(512, 0);
  auto put = [&](size_t off, const std::string& v) { std::memcpy(tar.data() + off, v.data(), v.size()); };
  put(0, "huge");
  put(100, "0000644");
  put(108, "0000000");
  put(116, "0000000");
  tar[124] = 0x80;  // base-256 size: 2^60
  tar[124 + 4] = 0x10;
  put(136, "00000000000");
  put(148, "        ");
  tar[156] = '0';
  put(257, "ustar");
  put(263, "00");
  unsigned sum = 0;
  for (uint8_t b : tar) sum += b;
  char chk[8];
  std::snprintf(chk, sizeof(chk), "%06o", sum);
  std::memcpy(tar.data() + 148, chk, 7);
  const Bytes data = nydus::test::random_bytes(8192, 3);
  tar.insert(tar.end(), data.begin(), data.end());
  nydus::test::write_file(d.path() / "huge.tar", tar);
  ASSERT_EQ(std::system(("gzip -n -c " + (d.path() / "huge.tar").string() + " > " + (d.path() / "huge.tar.gz").string()).c_str()), 0);
  CreateOptions o;
  o.source_type = SourceType::kTargzRef;
  o.source = d.path() / "huge.tar.gz";
  o.bootstrap = d.path() / "b";
  o.blob_dir = d.path() / "blobs";
  auto r = create_image(o);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("Truncated tar archive"), std::string::npos) << r.error().to_string();
}

// Identical chunks share one ci entry (upstream deduplicates before it
// allocates a ci index): two copies of a file cost one chunk, and every chunk
// a file names is in the bootstrap's chunk table (merge looks them up there).
TEST(ZranBuild, IdenticalChunksShareOneCiEntry) {
  TempDir d;
  const fs::path root = d.path() / "root";
  fs::create_directories(root);
  std::string text;
  for (int i = 0; text.size() < 300000; i++) text += "line " + std::to_string(i) + "\n";
  nydus::test::write_file(root / "a", text);
  nydus::test::write_file(root / "b", text);
  nydus::test::write_file(root / "c", text + "!");
  const fs::path layer = d.path() / "layer.tar.gz";
  ASSERT_EQ(std::system(("tar -C " + root.string() + " -cf - . | gzip -n > " + layer.string()).c_str()), 0);
  CreateOptions o;
  o.source_type = SourceType::kTargzRef;
  o.source = layer;
  o.bootstrap = d.path() / "image.boot";
  o.blob_file = d.path() / "meta.blob";
  auto r = create_image(o);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->chunks_total, 3u);
  EXPECT_EQ(r->chunks_stored, 2u);
  auto boot = format::Bootstrap::open(o.bootstrap);
  ASSERT_TRUE(boot) << boot.error().to_string();
  EXPECT_EQ((*boot)->blobs().at(0).chunk_count, 2u);
  auto table = (*boot)->chunk_table();
  ASSERT_TRUE(table) << table.error().to_string();
  std::set<uint32_t> in_table;
  for (const auto& c : *table) in_table.insert(c.ci_index);
  std::map<std::string, uint32_t> ci_of;
  auto st = (*boot)->walk([&](const std::string& path, const format::InodeView& ino) -> Status {
    if (!ino.is_reg()) return ok();
    NYDUS_ASSIGN_OR_RETURN(auto refs, (*boot)->chunks(ino));
    EXPECT_EQ(refs.size(), 1u) << path;
    for (const auto& ref : refs) {
      EXPECT_TRUE(in_table.contains(ref.ci_index)) << path;
      ci_of[path] = ref.ci_index;
    }
    return ok();
  });
  ASSERT_TRUE(st) << st.error().to_string();
  EXPECT_EQ(ci_of.at("/a"), ci_of.at("/b"));
  EXPECT_NE(ci_of.at("/a"), ci_of.at("/c"));
}

}  // namespace
}  // namespace nydus::builder
