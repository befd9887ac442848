// The pure parts of FUSE over io_uring: the switch, reading the kernel's INIT
// offer, the payload size a ring entry must have, and the queue count. The
// expected values come from include/uapi/linux/fuse.h and fs/fuse/dev_uring.c
// (fuse_uring_create: max(FUSE_MIN_READ_BUFFER, max_write, max_pages * PAGE_SIZE)).
#include "fuse/fuse_uring.h"

#include <gtest/gtest.h>

#include <cstring>

namespace nydus::fuse {
namespace {

// A FUSE_INIT request as the kernel sends it: fuse_in_header (40 bytes), then
// fuse_init_in {major, minor, max_readahead, flags, flags2, unused[11]}.
std::vector<uint8_t> init_request(uint32_t flags, uint32_t flags2, size_t body = 64) {
  std::vector<uint8_t> m(40 + body, 0);
  const uint32_t len = uint32_t(m.size()), opcode = 26, major = 7, minor = 45;
  std::memcpy(m.data(), &len, 4);
  std::memcpy(m.data() + 4, &opcode, 4);
  std::memcpy(m.data() + 40, &major, 4);
  std::memcpy(m.data() + 44, &minor, 4);
  std::memcpy(m.data() + 52, &flags, 4);
  if (body >= 20) std::memcpy(m.data() + 56, &flags2, 4);
  return m;
}

TEST(FuseUring, ParsesTheSwitch) {
  EXPECT_EQ(*parse_uring_mode("auto"), UringMode::kAuto);
  EXPECT_EQ(*parse_uring_mode("on"), UringMode::kOn);
  EXPECT_EQ(*parse_uring_mode("off"), UringMode::kOff);
  EXPECT_FALSE(parse_uring_mode("yes-please"));
}

TEST(FuseUring, SeesTheKernelsOffer) {
  constexpr uint32_t kInitExt = 1u << 30;
  constexpr uint32_t kOverIoUring2 = 1u << 9;  // FUSE_OVER_IO_URING = 1ULL << 41
  EXPECT_TRUE(init_offers_uring(init_request(kInitExt, kOverIoUring2)));
  EXPECT_FALSE(init_offers_uring(init_request(kInitExt, 0)));
  EXPECT_FALSE(init_offers_uring(init_request(0, kOverIoUring2)));   // flags2 not valid without FUSE_INIT_EXT
  EXPECT_FALSE(init_offers_uring(init_request(kInitExt, 1u << 8)));  // FUSE_ALLOW_IDMAP's bit, not ours
  EXPECT_FALSE(init_offers_uring(init_request(kInitExt, kOverIoUring2, 16)));  // a pre-7.36 INIT: no flags2
  EXPECT_FALSE(init_offers_uring({}));
}

TEST(FuseUring, PayloadFitsTheKernelsLargestRequest) {
  // fuse_init_out: flags at 12, max_write at 20, max_pages at 28.
  std::vector<uint8_t> out(64, 0);
  const uint32_t max_write = 4u << 20, flags = 1u << 22;  // FUSE_MAX_PAGES
  const uint16_t pages = 512;
  std::memcpy(out.data() + 20, &max_write, 4);
  EXPECT_EQ(uring_payload_size(out.data(), out.size()), 4u << 20);
  std::memcpy(out.data() + 12, &flags, 4);
  std::memcpy(out.data() + 28, &pages, 2);
  EXPECT_EQ(uring_payload_size(out.data(), out.size()), 4u << 20);
  const uint16_t more = 2048;
  std::memcpy(out.data() + 28, &more, 2);
  EXPECT_EQ(uring_payload_size(out.data(), out.size()), 8u << 20);
  // Never below the kernel's default page limit (256 pages), whatever was negotiated.
  EXPECT_EQ(uring_payload_size(out.data(), 8), 1u << 20);
}

TEST(FuseUring, CountsPossibleCpus) {
  EXPECT_EQ(possible_cpus("0-1\n"), 2u);
  EXPECT_EQ(possible_cpus("0\n"), 1u);
  EXPECT_EQ(possible_cpus("0-3,8-11\n"), 8u);
  EXPECT_EQ(possible_cpus("0,2,4"), 3u);
  EXPECT_EQ(possible_cpus(""), 1u);
  EXPECT_EQ(possible_cpus("garbage"), 1u);
}

}  // namespace
}  // namespace nydus::fuse
