// format/stargz_toc: the eStargz TOC parser and footer, and gzip chunks in
// the shared chunk decoder. Oracles: a footer cut from a layer that Debian's
// ctr-remote (stargz-snapshotter's estargz package) wrote, TOC entries in
// the shape that layer's stargz.index.json has, and zlib's own gzip writer.
#include "format/stargz_toc.h"

#include <algorithm>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/test_util.h"
#include "format/chunk_decode.h"
#include "format/digest.h"

namespace nydus::format {
namespace {

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

constexpr const char* kSha = "sha256:39c4800206ca99a3b6e85f49a1cac9b1dbbc9f97cbc008966ba7bd2cb17086fe";

std::string toc_with(const std::string& entry) {
  return std::string(R"({"version":1,"entries":[{"name":".","type":"dir","mode":493},)") + entry + "]}";
}

TEST(StargzToc, ParsesWhatCtrRemoteWrites) {
  const std::string j = std::string(R"({"version":1,"entries":[
    {"name":".no.prefetch.landmark","type":"reg","size":1,"offset":85,"digest":"sha256:dc0e9c3658a1a3ed1ec94274d8b19925c93e1abb7ddba294923ad9bde30f8cb8","chunkDigest":"sha256:dc0e9c3658a1a3ed1ec94274d8b19925c93e1abb7ddba294923ad9bde30f8cb8"},
    {"name":".","type":"dir","modtime":"2026-12-05T03:22:48Z","mode":493},
    {"name":"big","type":"reg","size":9000000,"modtime":"2026-12-05T03:22:48Z","mode":420,"offset":201,"chunkSize":4194304,"chunkDigest":")") +
                        (kSha + 7) + R"("},
    {"name":"big","type":"chunk","offset":4195808,"chunkOffset":4194304,"chunkSize":4194304,"chunkDigest":")" + kSha + R"("},
    {"name":"etc/d/e/x","type":"reg","size":3,"mode":420,"uid":12,"gid":34,"offset":9003288,"xattrs":{"user.foo":"YmFy"},"chunkDigest":")" + kSha + R"("},
    {"name":"etc/sh","type":"symlink","linkName":"../usr/bin/bash","mode":511},
    {"name":"etc/hard","type":"hardlink","linkName":"etc/d/e/x"},
    {"name":"dev/null","type":"char","devMajor":1,"devMinor":3,"mode":438}]})";
  // The first chunkDigest above lacks "sha256:": that entry must be refused.
  auto bad = parse_stargz_toc(bytes(j));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("entry 2"), std::string::npos) << bad.error().message;

  std::string good = j;
  good.replace(good.find((kSha + 7)), 64, kSha);
  auto t = parse_stargz_toc(bytes(good));
  ASSERT_TRUE(t) << t.error().message;
  ASSERT_EQ(t->entries.size(), 8u);
  const auto& big = t->entries[2];
  EXPECT_EQ(big.type, StargzType::kReg);
  EXPECT_EQ(big.size, 9000000u);
  EXPECT_EQ(big.offset, 201u);
  EXPECT_EQ(big.chunk_size, 4194304u);
  EXPECT_EQ(to_hex(*big.chunk_digest), std::string(kSha + 7));
  EXPECT_EQ(big.mtime, 1796440968);  // date -d 2026-12-05T03:22:48Z +%s
  EXPECT_EQ(big.mode, 0644u);
  EXPECT_EQ(t->entries[3].type, StargzType::kChunk);
  EXPECT_EQ(t->entries[3].chunk_offset, 4194304u);
  const auto& x = t->entries[4];
  EXPECT_EQ(x.uid, 12u);
  EXPECT_EQ(x.gid, 34u);
  ASSERT_EQ(x.xattrs.size(), 1u);
  EXPECT_EQ(x.xattrs[0].first, "user.foo");
  EXPECT_EQ(x.xattrs[0].second, "bar");
  EXPECT_EQ(t->entries[5].link_name, "../usr/bin/bash");
  EXPECT_EQ(t->entries[6].type, StargzType::kHardlink);
  EXPECT_EQ(t->entries[7].dev_major, 1u);
  EXPECT_EQ(t->entries[7].dev_minor, 3u);
}

TEST(StargzToc, RefusesMalformedInput) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "JSON"},
      {"[]", "object"},
      {R"({"version":2,"entries":[{"name":"a","type":"dir"}]})", "version"},
      {R"({"version":1,"entries":[]})", "no entries"},
      {R"({"version":1})", "entries"},
      {toc_with(R"({"name":"a","type":"sock"})"), "type"},
      {toc_with(R"({"type":"dir"})"), "name"},
      {toc_with(R"({"name":"a","type":"reg","size":-1})"), "size"},
      {toc_with(R"({"name":"a","type":"reg","size":1.5})"), "size"},
      {toc_with(R"({"name":"a","type":"reg","size":"1"})"), "size"},
      {toc_with(R"({"name":"a","type":"reg","offset":72057594037927937})"), "offset"},
      {toc_with(R"({"name":"a","type":"reg","uid":4294967296})"), "uid"},
      {toc_with(R"({"name":"a","type":"reg","chunkDigest":"sha256:zz"})"), "chunkDigest"},
      {toc_with(R"({"name":"a","type":"reg","chunkDigest":"md5:00"})"), "chunkDigest"},
      {toc_with(R"({"name":"a","type":"reg","xattrs":{"user.a":"Y=mF"}})"), "base64"},
      {toc_with(R"({"name":"a","type":"reg","xattrs":{"user.a":"YmF"}})"), "base64"},
      {toc_with(R"({"name":"a","type":"reg","xattrs":{"user.a":1}})"), "xattr"},
      {toc_with(R"({"name":"a","type":"reg","xattrs":[1]})"), "xattrs"},
      {toc_with(R"({"name":")" + std::string(5000, 'a') + R"(","type":"reg"})"), "name"},
      {toc_with(R"({"name":"a","type":"reg","x":[[[[[[[1]]]]]]]})"), "nested"},
      {R"({"version":1,"entries":[{"name":"a","type":"reg"}] )", "JSON"},
  };
  for (const auto& [json, word] : cases) {
    auto t = parse_stargz_toc(bytes(json));
    ASSERT_FALSE(t) << json.substr(0, 120);
    EXPECT_NE(t.error().message.find(word), std::string::npos) << json.substr(0, 120) << " -> " << t.error().message;
  }
  std::string huge(kMaxStargzTocSize + 1, ' ');
  EXPECT_FALSE(parse_stargz_toc(bytes(huge)));
}

// The last 51 bytes of a layer Debian's ctr-remote (stargz-snapshotter 0.12) wrote (TOC at 0xa21684).
constexpr uint8_t kCtrRemoteFooter[] = {
    0x1f, 0x8b, 0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x1a, 0x00, 0x53, 0x47, 0x16, 0x00, 0x30,
    0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x61, 0x32, 0x31, 0x36, 0x38, 0x34, 0x53, 0x54,
    0x41, 0x52, 0x47, 0x5a, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

TEST(StargzToc, WriterChunkSizeIsTheLargestNamedOrHoldsTheLargestFile) {
  auto toc_of = [](const std::string& entries) {
    auto t = parse_stargz_toc(bytes(R"({"version":1,"entries":[)" + entries + "]}"));
    EXPECT_TRUE(t) << t.error().message;
    return *t;
  };
  const std::string d = std::string(R"("chunkDigest":")") + kSha + "\"";
  // ctr-remote --estargz-chunk-size 65536: a cut file names it.
  EXPECT_EQ(stargz_writer_chunk_size(toc_of(R"({"name":"a","type":"reg","size":70000,"chunkSize":65536,"offset":0,)" + d +
                                            R"(},{"name":"a","type":"chunk","chunkOffset":65536,"offset":100,)" + d + "}")),
            65536u);
  // No file cut: eStargz's default, or the power of two over the largest file.
  EXPECT_EQ(stargz_writer_chunk_size(toc_of(R"({"name":"a","type":"reg","size":5000,"offset":0,)" + d + "}")), 4u << 20);
  EXPECT_EQ(stargz_writer_chunk_size(toc_of(R"({"name":"a","type":"reg","size":5000000,"offset":0,)" + d + "}")), 8u << 20);
  EXPECT_EQ(stargz_writer_chunk_size(toc_of(R"({"name":"d","type":"dir"})")), 4u << 20);
}

TEST(StargzFooter, ReadsCtrRemoteFooter) {
  static_assert(sizeof(kCtrRemoteFooter) == kEstargzFooterSize);
  auto off = parse_stargz_footer(kCtrRemoteFooter);
  ASSERT_TRUE(off) << off.error().message;
  EXPECT_EQ(*off, 0xa21684u);
  // With bytes before it (the tail of a layer) too.
  // (sized once and copied into: g++ 12 -O2 warns, wrongly, on insert() growing it)
  std::vector<uint8_t> tail(100 + sizeof(kCtrRemoteFooter), 0x55);
  std::copy(std::begin(kCtrRemoteFooter), std::end(kCtrRemoteFooter), tail.begin() + 100);
  EXPECT_EQ(*parse_stargz_footer(tail), 0xa21684u);
  // Not hex, not STARGZ, not gzip, too short: refused.
  for (size_t i : {20u, 33u, 0u}) {
    std::vector<uint8_t> f(std::begin(kCtrRemoteFooter), std::end(kCtrRemoteFooter));
    f[i] = 'z';
    EXPECT_FALSE(parse_stargz_footer(f)) << i;
  }
  EXPECT_FALSE(parse_stargz_footer(std::span(kCtrRemoteFooter).first(20)));
}

using test::gzip_member;

TEST(GzipChunk, DecodesMemberFollowedByOtherBytes) {
  std::vector<uint8_t> data(100000);
  for (size_t i = 0; i < data.size(); i++) data[i] = uint8_t((i * 7) ^ (i >> 9));
  auto member = gzip_member(data);
  // What the layer holds after the member (the next member) is read too.
  auto next = gzip_member({1, 2, 3});
  std::vector<uint8_t> stored = member;
  stored.insert(stored.end(), next.begin(), next.end());
  ChunkRecord c;
  c.compressed = true;
  c.compressed_size = uint32_t(stored.size());
  c.uncompressed_size = uint32_t(data.size());
  std::vector<uint8_t> out(data.size());
  ASSERT_TRUE(decode_chunk(Compressor::kGzip, c, stored, out));
  EXPECT_EQ(out, data);
  ASSERT_TRUE(verify_chunk(Digester::kSha256, c, out, sha256(data)));

  // A member shorter than the chunk, a truncated member, a non-gzip start.
  c.uncompressed_size = uint32_t(data.size() + 1);
  std::vector<uint8_t> more(data.size() + 1);
  EXPECT_FALSE(decode_chunk(Compressor::kGzip, c, stored, more));
  c.uncompressed_size = uint32_t(data.size());
  c.compressed_size = uint32_t(member.size() / 2);
  EXPECT_FALSE(decode_chunk(Compressor::kGzip, c, std::span(member).first(member.size() / 2), out));
  c.compressed_size = uint32_t(stored.size() - 1);
  EXPECT_FALSE(decode_chunk(Compressor::kGzip, c, std::span(stored).subspan(1), out));
}

}  // namespace
}  // namespace nydus::format
