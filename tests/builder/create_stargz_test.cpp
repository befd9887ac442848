// builder/create_stargz: `create --type estargztoc-ref`. The "layer" is made
// here from zlib gzip members (what an eStargz writer emits for each chunk),
// the TOC names their offsets; the image is read back through ImageReader
// (the reader `check` and `unpack` use), so every byte comes from inflating
// the members we wrote, checked against the chunkDigest we computed.
#include "builder/create_stargz.h"

#include <sys/stat.h>

#include <map>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "format/bootstrap.h"
#include "format/digest.h"
#include "format/image_reader.h"

namespace nydus::builder {
namespace {

using nlohmann::json;

using test::gzip_member;

std::string digest_of(const std::vector<uint8_t>& d) { return "sha256:" + format::to_hex(format::sha256(d)); }

struct Layer {
  std::vector<uint8_t> bytes;
  json entries = json::array();
  // Appends a member holding `data` and returns its offset.
  uint64_t add(const std::vector<uint8_t>& data) {
    const uint64_t off = bytes.size();
    auto m = gzip_member(data);
    bytes.insert(bytes.end(), m.begin(), m.end());
    return off;
  }
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t(i * 31 + seed + (i >> 11));
  return v;
}

class StargzBuild : public ::testing::Test {
 protected:
  test::TempDir dir;
  Layer layer;
  std::string blob_id;

  Result<CreateReport> build(const json& toc, uint32_t chunk_size = 0x1000) {
    test::write_file(dir / "toc.json", toc.dump());
    blob_id = format::to_hex(format::sha256(layer.bytes));
    std::filesystem::create_directories(dir / "blobs");
    test::write_file(dir / "blobs" / blob_id, layer.bytes);
    CreateOptions o;
    o.source_type = SourceType::kEstargzToc;
    o.source = dir / "toc.json";
    o.bootstrap = dir / "boot";
    o.blob_id = blob_id;
    o.blob_data_size = layer.bytes.size();
    o.chunk_size = chunk_size;
    o.compressor = format::Compressor::kGzip;
    o.digester = format::Digester::kSha256;
    return create_image(o);
  }
  json toc() const { return json{{"version", 1}, {"entries", layer.entries}}; }

  std::vector<uint8_t> read(const std::string& path) {
    auto r = format::ImageReader::open(dir / "boot", {dir / "blobs", {}});
    EXPECT_TRUE(r) << r.error().message;
    auto nid = (*r)->bootstrap().resolve(path);
    EXPECT_TRUE(nid) << path;
    auto ino = (*r)->bootstrap().inode(*nid);
    std::vector<uint8_t> out;
    Status s = (*r)->read_file(*ino, true, [&](uint64_t, std::span<const uint8_t> b) {
      out.insert(out.end(), b.begin(), b.end());
      return ok();
    });
    EXPECT_TRUE(s) << path << ": " << s.error().message;
    return out;
  }
};

TEST_F(StargzBuild, FilesReadBackFromTheirMembers) {
  const auto big = pattern(0x1000 * 2 + 123, 1);  // three chunks of a 4 KiB chunk size
  const auto small = pattern(10, 2);
  layer.entries.push_back({{"name", "./"}, {"type", "dir"}, {"mode", 0755}});
  for (size_t at = 0; at < big.size(); at += 0x1000) {
    std::vector<uint8_t> c(big.begin() + long(at), big.begin() + long(std::min(big.size(), at + 0x1000)));
    json e = {{"name", "d/big"}, {"offset", layer.add(c)}, {"chunkDigest", digest_of(c)}};
    if (at == 0) {
      e["type"] = "reg";
      e["size"] = big.size();
      e["mode"] = 0644;
      e["chunkSize"] = 0x1000;
    } else {
      e["type"] = "chunk";
      e["chunkOffset"] = at;
      if (at + 0x1000 < big.size()) e["chunkSize"] = 0x1000;  // the last one: 0 = to the end
    }
    layer.entries.push_back(e);
  }
  layer.entries.push_back({{"name", "small"}, {"type", "reg"}, {"size", 10}, {"mode", 0600}, {"uid", 7}, {"gid", 8},
                           {"offset", layer.add(small)}, {"chunkDigest", digest_of(small)},
                           {"xattrs", {{"user.k", "dg=="}, {"foo.bar", "dg=="}}}});
  layer.entries.push_back({{"name", "same"}, {"type", "reg"}, {"size", 10}, {"mode", 0644},
                           {"offset", layer.add(small)}, {"chunkDigest", digest_of(small)}});
  layer.entries.push_back({{"name", "e/f/empty"}, {"type", "reg"}, {"mode", 0644}});
  layer.entries.push_back({{"name", "link"}, {"type", "symlink"}, {"linkName", "d/big"}});
  layer.entries.push_back({{"name", "hard"}, {"type", "hardlink"}, {"linkName", "small"}});
  layer.entries.push_back({{"name", "stargz.index.json"}, {"type", "reg"}, {"size", 10},
                           {"offset", layer.add(small)}, {"chunkDigest", digest_of(small)}});
  auto rep = build(toc());
  ASSERT_TRUE(rep) << rep.error().message;
  EXPECT_EQ(rep->chunks_total, 5u);
  EXPECT_EQ(rep->chunks_stored, 4u);  // "same" shares "small"'s member
  ASSERT_EQ(rep->warnings.size(), 1u) << "foo.bar has no RAFS prefix";
  EXPECT_EQ(read("/d/big"), big);
  EXPECT_EQ(read("/small"), small);
  EXPECT_EQ(read("/same"), small);
  EXPECT_EQ(read("/hard"), small);

  auto boot = format::Bootstrap::open(dir / "boot");
  ASSERT_TRUE(boot);
  const auto& b = **boot;
  EXPECT_FALSE(b.resolve("/stargz.index.json"));
  auto sm = b.inode(*b.resolve("/small"));
  EXPECT_EQ(sm->mode, S_IFREG | 0600u);
  EXPECT_EQ(sm->uid, 7u);
  EXPECT_EQ(*b.resolve("/hard"), *b.resolve("/small"));
  EXPECT_EQ(*b.read_link(*b.inode(*b.resolve("/link"))), "d/big");
  EXPECT_TRUE(b.resolve("/e/f/empty"));
  ASSERT_EQ(b.blobs().size(), 1u);
  EXPECT_EQ(b.blobs()[0].blob_id, blob_id);
  EXPECT_TRUE(format::is_legacy_stargz(b.blobs()[0]));
  EXPECT_EQ(b.blobs()[0].chunk_count, 4u);
}

// eStargz's min chunk size: payloads go on in the current gzip member after
// their tar headers, and the TOC says where with innerOffset. Each is the
// slice [innerOffset, +size) of its member's inflated bytes.
TEST_F(StargzBuild, PayloadsSharingAGzipMemberAreSlicesOfIt) {
  const auto a = pattern(700, 4), b = pattern(0x1000, 5), b2 = pattern(300, 6), c = pattern(50, 7);
  const std::vector<uint8_t> header(512, 'h');
  std::vector<uint8_t> m;
  for (const auto* part : {&header, &a, &header, &b, &b2, &header}) m.insert(m.end(), part->begin(), part->end());
  const uint64_t shared = layer.add(m);
  const uint64_t own = layer.add(c);
  const uint64_t b_inner = 512 + 700 + 512;
  layer.entries = json::array(
      {{{"name", "a"}, {"type", "reg"}, {"size", 700}, {"offset", shared}, {"innerOffset", 512},
        {"chunkDigest", digest_of(a)}},
       {{"name", "b"}, {"type", "reg"}, {"size", 0x1000 + 300}, {"chunkSize", 0x1000}, {"offset", shared},
        {"innerOffset", b_inner}, {"chunkDigest", digest_of(b)}},
       {{"name", "b"}, {"type", "chunk"}, {"chunkOffset", 0x1000}, {"offset", shared},
        {"innerOffset", b_inner + 0x1000}, {"chunkDigest", digest_of(b2)}},
       {{"name", "c"}, {"type", "reg"}, {"size", 50}, {"offset", own}, {"chunkDigest", digest_of(c)}}});
  auto rep = build(toc());
  ASSERT_TRUE(rep) << rep.error().message;
  EXPECT_EQ(read("/a"), a);
  std::vector<uint8_t> whole_b = b;
  whole_b.insert(whole_b.end(), b2.begin(), b2.end());
  EXPECT_EQ(read("/b"), whole_b);
  EXPECT_EQ(read("/c"), c);

  // The chunk table as Bootstrap::adopt_stargz_chunks reads it: the shared
  // member's chunks are BATCH with their innerOffset in the crc32 slot and
  // one span; "c" is upstream's plain stargz chunk.
  auto boot = format::Bootstrap::open(dir / "boot");
  ASSERT_TRUE(boot);
  auto table = (*boot)->chunk_table();
  ASSERT_TRUE(table);
  ASSERT_EQ(table->size(), 4u);
  std::map<uint32_t, format::ChunkRecord> by_inner;
  for (const auto& r : *table) {
    EXPECT_FALSE(r.has_crc32);
    if (r.compressed_offset == own) {
      EXPECT_FALSE(r.batch);
      EXPECT_EQ(r.crc32, 0u);
      continue;
    }
    EXPECT_TRUE(r.batch);
    EXPECT_EQ(r.compressed_size, (*table)[0].compressed_size);
    by_inner[r.crc32] = r;
  }
  EXPECT_EQ(by_inner.size(), 3u);
  EXPECT_TRUE(by_inner.contains(512) && by_inner.contains(b_inner) && by_inner.contains(b_inner + 0x1000));
  const auto& slices = *(*boot)->blobs()[0].bootstrap_chunks;
  for (const auto& r : slices) {
    if (r.batch) {
      EXPECT_EQ(r.batch_size, b_inner + 0x1000 + 300) << "the member's head up to its furthest slice";
    }
  }

  // A lying innerOffset builds (the TOC is all the builder sees) but reads
  // fail the chunkDigest, never return the member's other bytes.
  layer.entries[0]["innerOffset"] = 513;
  ASSERT_TRUE(build(toc()));
  auto r = format::ImageReader::open(dir / "boot", {dir / "blobs", {}});
  ASSERT_TRUE(r);
  auto ino = (*r)->bootstrap().inode(*(*r)->bootstrap().resolve("/a"));
  Status s = (*r)->read_file(*ino, true, [](uint64_t, std::span<const uint8_t>) { return ok(); });
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("digest"), std::string::npos) << s.error().message;
  EXPECT_EQ(read("/c"), c);

  // Two payloads whose slices overlap: a TOC no writer makes.
  layer.entries[0]["innerOffset"] = b_inner - 100;
  auto bad = build(toc());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("overlap"), std::string::npos) << bad.error().message;
}

TEST_F(StargzBuild, RefusesTreesRafsCannotHold) {
  const auto d = pattern(100, 3);
  const uint64_t off = layer.add(d);
  auto reg = [&](const std::string& name) {
    return json{{"name", name}, {"type", "reg"}, {"size", 100}, {"offset", off}, {"chunkDigest", digest_of(d)}};
  };
  const std::vector<std::pair<json, std::string>> cases = {
      {json::array({reg("a"), reg("a")}), "twice"},
      {json::array({{{"name", "x"}, {"type", "chunk"}, {"chunkOffset", 4096}, {"chunkDigest", digest_of(d)}}}),
       "no regular file"},
      {json::array({{{"name", "."}, {"type", "reg"}}}), "root"},
      {json::array({{{"name", "d"}, {"type", "dir"}}, {{"name", "h"}, {"type", "hardlink"}, {"linkName", "d"}}}),
       "not a regular file"},
      {json::array({reg("f"), {{"name", "f/x"}, {"type", "dir"}}}), "not a directory"},
      {json::array({{{"name", "a/../../b"}, {"type", "dir"}}}), ".."},
      {json::array({{{"name", "s"}, {"type", "symlink"}}}), "symlink"},
      {json::array({{{"name", "n"}, {"type", "reg"}, {"size", 5}}}), "chunkDigest"},
      {json::array({[&] { auto e = reg("big"); e["size"] = 9000; e["chunkSize"] = 1000; return e; }()}), "--chunk-size"},
  };
  for (const auto& [entries, word] : cases) {
    auto rep = build(json{{"version", 1}, {"entries", entries}});
    ASSERT_FALSE(rep) << entries.dump();
    EXPECT_NE(rep.error().message.find(word), std::string::npos) << entries.dump() << " -> " << rep.error().message;
  }
}

TEST_F(StargzBuild, RefusesAChunkReadersCannotTake) {
  // A 16 MiB chunk whose member may run on for more than 16 MiB of layer:
  // its stored span would exceed what every reader accepts.
  layer.bytes.assign((16u << 20) + (1u << 20), 0);
  const std::string d = "sha256:" + std::string(64, '0');
  auto rep = build(json{{"version", 1},
                        {"entries", json::array({{{"name", "f"}, {"type", "reg"}, {"size", 16u << 20}, {"offset", 0},
                                                   {"chunkDigest", d}}})}},
                   16u << 20);
  ASSERT_FALSE(rep);
  EXPECT_NE(rep.error().message.find("above"), std::string::npos) << rep.error().message;
}

}  // namespace
}  // namespace nydus::builder
