#include "format/compress.h"

#include <zstd.h>

#include <gtest/gtest.h>

#include "format/digest.h"
#include "common/test_util.h"

namespace nydus::format {
namespace {

std::vector<uint8_t> sample(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t((i * 7) % 13 + (i / 1000));
  return v;
}

TEST(Compress, RoundTripEachCompressor) {
  for (auto c : {Compressor::kLz4Block, Compressor::kZstd}) {
    auto in = sample(1 << 20);
    std::vector<uint8_t> packed;
    auto r = compress(c, in, packed);
    ASSERT_TRUE(r.has_value());
    ASSERT_TRUE(*r) << compressor_name(c) << " should shrink repetitive data";
    std::vector<uint8_t> out(in.size());
    ASSERT_TRUE(decompress(c, packed, out).has_value());
    EXPECT_EQ(in, out);
  }
}

TEST(Compress, WrongExpectedSizeIsCorrupt) {
  auto in = sample(10000);
  std::vector<uint8_t> packed;
  ASSERT_TRUE(*compress(Compressor::kZstd, in, packed));
  std::vector<uint8_t> small(5000), big(20000);
  EXPECT_EQ(decompress(Compressor::kZstd, packed, small).error().code, Errc::kCorrupt);
  EXPECT_EQ(decompress(Compressor::kZstd, packed, big).error().code, Errc::kCorrupt);
  ASSERT_TRUE(*compress(Compressor::kLz4Block, in, packed));
  EXPECT_EQ(decompress(Compressor::kLz4Block, packed, small).error().code, Errc::kCorrupt);
}

TEST(Compress, GarbageIsCorruptNotCrash) {
  std::vector<uint8_t> garbage(300, 0xAB), out(4096);
  EXPECT_FALSE(decompress(Compressor::kZstd, garbage, out).has_value());
  EXPECT_FALSE(decompress(Compressor::kLz4Block, garbage, out).has_value());
}

TEST(Digest, KnownVectors) {
  std::string abc = "abc";
  std::span<const uint8_t> s(reinterpret_cast<const uint8_t*>(abc.data()), abc.size());
  EXPECT_EQ(to_hex(sha256(s)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(compute_digest(Digester::kBlake3, s)),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
  std::string nine = "123456789";
  EXPECT_EQ(crc32c({reinterpret_cast<const uint8_t*>(nine.data()), nine.size()}), 0xE3069283u);
}

TEST(Layout, CiV1RoundTrip) {
  DecodedChunkInfo c;
  c.compressed_offset = 0x12345678ull;
  c.compressed_size = 0xABCDE;
  c.uncompressed_offset = 0x7654321000ull;
  c.uncompressed_size = 0x100000;
  auto d = decode_ci_v1(encode_ci_v1(c));
  EXPECT_EQ(d.compressed_offset, c.compressed_offset);
  EXPECT_EQ(d.compressed_size, c.compressed_size);
  EXPECT_EQ(d.uncompressed_offset, c.uncompressed_offset);
  EXPECT_EQ(d.uncompressed_size, c.uncompressed_size);
  EXPECT_TRUE(d.compressed);
}

}  // namespace
}  // namespace nydus::format

#include "format/tar_header.h"

namespace nydus::format {
namespace {

TEST(TarHeader, RoundTripAndChecksum) {
  auto h = make_tar_header("blob.meta", 4128);
  auto p = parse_tar_header(h);
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->name, "blob.meta");
  EXPECT_EQ(p->size, 4128u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(h.data() + 124)), "00000010040");
  h[0] ^= 1;
  EXPECT_FALSE(parse_tar_header(h).has_value());
}

// The blob fixture ends with upstream's `rafs.blob.toc` header: ours must match it byte for byte.
TEST(TarHeader, MatchesUpstreamFixture) {
  auto dir = test::fixtures_dir();
  NYDUS_REQUIRE_FIXTURES();
  auto blob = test::read_file(dir / "v6/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef");
  ASSERT_GE(blob.size(), 512u);
  std::span<const uint8_t> last(blob.data() + blob.size() - 512, 512);
  auto p = parse_tar_header(last);
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(p->name, "rafs.blob.toc");
  auto mine = make_tar_header(p->name, p->size);
  EXPECT_TRUE(std::equal(mine.begin(), mine.end(), last.begin()));
}

}  // namespace
}  // namespace nydus::format

namespace nydus::format {
namespace {

// The reused per-thread zstd context must produce exactly the single-shot
// level-3 frame upstream writes (byte-identical blobs depend on it).
TEST(Compress, ReusedZstdContextMatchesSingleShot) {
  std::vector<uint8_t> buf(compress_bound(Compressor::kZstd, 1 << 20));
  for (size_t n : {size_t(5000), size_t(1) << 20, size_t(4096), size_t(70000)}) {
    auto in = sample(n);
    std::vector<uint8_t> ref(ZSTD_compressBound(n));
    size_t m = ZSTD_compress(ref.data(), ref.size(), in.data(), in.size(), 3);
    ASSERT_FALSE(ZSTD_isError(m));
    auto r = compress_into(Compressor::kZstd, in, buf);
    ASSERT_TRUE(r && *r);
    EXPECT_EQ(std::vector<uint8_t>(buf.begin(), buf.begin() + long(**r)), std::vector<uint8_t>(ref.begin(), ref.begin() + long(m)));
  }
}

TEST(Compress, IncompressibleInputIsStoredRaw) {
  std::vector<uint8_t> in(4096);
  uint32_t x = 12345;
  for (auto& b : in) b = uint8_t((x = x * 1103515245 + 12345) >> 16);
  std::vector<uint8_t> buf(compress_bound(Compressor::kLz4Block, in.size()));
  auto r = compress_into(Compressor::kLz4Block, in, buf);
  ASSERT_TRUE(r);
  EXPECT_FALSE(*r);
}

}  // namespace
}  // namespace nydus::format
