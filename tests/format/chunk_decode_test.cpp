// format/chunk_decode: the decode and digest check shared by `nydus-image
// check` and nydusd's cache. Oracles are independent of our writer: zstd's
// own compressor and the published SHA-256 of "abc".
#include "format/chunk_decode.h"

#include <zstd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "format/digest.h"

namespace nydus::format {
namespace {

ChunkRecord record(uint32_t csize, uint32_t usize, bool compressed) {
  ChunkRecord c;
  c.compressed_size = csize;
  c.uncompressed_size = usize;
  c.compressed = compressed;
  return c;
}

TEST(ChunkDecode, RawChunkInPlaceAndKnownSha256) {
  std::vector<uint8_t> buf = {'a', 'b', 'c'};
  auto c = record(3, 3, false);
  ASSERT_TRUE(decode_chunk(Compressor::kZstd, c, buf, buf));
  auto want = digest_from_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ASSERT_TRUE(want);
  EXPECT_TRUE(verify_chunk(Digester::kSha256, c, buf, *want));
  buf[1] = 'x';
  auto bad = verify_chunk(Digester::kSha256, c, buf, *want);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::kCorrupt);
  EXPECT_NE(bad.error().message.find("chunk digest mismatch"), std::string::npos);
}

TEST(ChunkDecode, ZstdChunkFromZstdItself) {
  std::vector<uint8_t> plain(8192);
  for (size_t i = 0; i < plain.size(); i++) plain[i] = uint8_t(i % 17);
  std::vector<uint8_t> packed(ZSTD_compressBound(plain.size()));
  size_t n = ZSTD_compress(packed.data(), packed.size(), plain.data(), plain.size(), 3);
  ASSERT_FALSE(ZSTD_isError(n));
  packed.resize(n);
  std::vector<uint8_t> out(plain.size());
  auto c = record(uint32_t(n), uint32_t(plain.size()), true);
  ASSERT_TRUE(decode_chunk(Compressor::kZstd, c, packed, out));
  EXPECT_EQ(out, plain);
  packed[n / 2] ^= 0xff;  // a damaged frame is corrupt, never garbage
  auto r = decode_chunk(Compressor::kZstd, c, packed, out);
  if (r) {
    EXPECT_NE(out, plain);  // zstd may not notice without a checksum; the digest will
  }
}

TEST(ChunkDecode, UntrustedSizesAreRejected) {
  std::vector<uint8_t> a(16), b(32);
  EXPECT_EQ(decode_chunk(Compressor::kNone, record(16, 32, false), a, b).error().code, Errc::kCorrupt);  // raw, sizes differ
  EXPECT_EQ(decode_chunk(Compressor::kNone, record(0, 0, false), {}, {}).error().code, Errc::kCorrupt);
  EXPECT_EQ(decode_chunk(Compressor::kZstd, record(16, 0x1000001, true), a, b).error().code, Errc::kCorrupt);
  EXPECT_EQ(decode_chunk(Compressor::kNone, record(16, 16, false), a, b).error().code, Errc::kInvalidArgument);
  // A "compressed" chunk in an uncompressed blob must still decode to exactly its size.
  EXPECT_FALSE(decode_chunk(Compressor::kNone, record(16, 32, true), a, b));
}

}  // namespace
}  // namespace nydus::format
