#include "format/digest.h"

#include <gtest/gtest.h>

#include <string_view>

namespace nydus::format {
namespace {

std::span<const uint8_t> bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

TEST(Digest, Crc32cCheckValue) {
  // The catalogued check value of CRC-32C (iSCSI).
  EXPECT_EQ(crc32c(bytes("123456789")), 0xE3069283u);
  EXPECT_EQ(crc32c({}), 0u);
}

TEST(Digest, Crc32cChainsAcrossOddSplits) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); i++) data[i] = uint8_t(i * 131 + 7);
  const uint32_t whole = crc32c(data);
  for (size_t cut : {0, 1, 3, 7, 8, 9, 500, 999, 1000}) {
    std::span<const uint8_t> s(data);
    EXPECT_EQ(crc32c(s.subspan(cut), crc32c(s.first(cut))), whole) << "cut " << cut;
  }
}

TEST(Digest, KnownSha256AndBlake3) {
  EXPECT_EQ(to_hex(sha256(bytes("abc"))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(compute_digest(Digester::kBlake3, bytes(""))),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
}

}  // namespace
}  // namespace nydus::format
