// Decoding of cachefiles messages: the kernel's exact layouts, and every
// malformed shape giving an error value (with the OPEN fd reported for
// clean-up), never a read past the bytes received.
#include "fscache/message.h"

#include <gtest/gtest.h>

#include <cstring>

namespace nydus::fscache {
namespace {

std::span<const uint8_t> bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

TEST(FscacheMessage, OpenAsTheKernelLaysItOut) {
  // Checked on 6.12: vkey "erofs,boot" arrives with size 11 (its NUL), ckey
  // "boot" with size 4, message length 47.
  const std::string m = encode_open(7, 3, "erofs,boot", "boot", 12);
  ASSERT_EQ(m.size(), 47u);
  auto p = parse_message(bytes(m));
  ASSERT_TRUE(std::holds_alternative<Message>(p));
  auto& o = std::get<OpenMsg>(std::get<Message>(p));
  EXPECT_EQ(o.msg_id, 7u);
  EXPECT_EQ(o.object_id, 3u);
  EXPECT_EQ(o.volume_key, "erofs,boot");
  EXPECT_EQ(o.cookie_key, "boot");
  EXPECT_EQ(o.fd, 12);
  EXPECT_EQ(volume_id(o.volume_key), "boot");
}

TEST(FscacheMessage, ReadAndClose) {
  auto r = parse_message(bytes(encode_read(1, 2, 0x10000, 0x4000)));
  ASSERT_TRUE(std::holds_alternative<Message>(r));
  auto& rm = std::get<ReadMsg>(std::get<Message>(r));
  EXPECT_EQ(rm.off, 0x10000u);
  EXPECT_EQ(rm.len, 0x4000u);
  EXPECT_EQ(encode_read(1, 2, 0, 0).size(), 32u);
  auto c = parse_message(bytes(encode_close(4, 9)));
  ASSERT_TRUE(std::holds_alternative<Message>(c));
  EXPECT_EQ(std::get<CloseMsg>(std::get<Message>(c)).object_id, 9u);
  EXPECT_EQ(encode_close(4, 9).size(), 16u);
}

TEST(FscacheMessage, BinaryCookieKeyKeptWhole) {
  const std::string key("a\0b\xff", 4);
  auto p = parse_message(bytes(encode_open(1, 1, "erofs,d", key, 5)));
  ASSERT_TRUE(std::holds_alternative<Message>(p));
  EXPECT_EQ(std::get<OpenMsg>(std::get<Message>(p)).cookie_key, key);
}

TEST(FscacheMessage, EveryTruncationIsAnError) {
  for (const std::string& m : {encode_open(1, 1, "erofs,x", "y", 5), encode_read(1, 1, 0, 4096), encode_close(1, 1)}) {
    for (size_t n = 0; n < m.size(); ++n) {
      auto p = parse_message(bytes(m.substr(0, n)));
      EXPECT_TRUE(std::holds_alternative<BadMessage>(p)) << "length " << n << " of " << m.size();
    }
  }
}

TEST(FscacheMessage, BadOpenStillReportsItsFd) {
  std::string m = encode_open(5, 1, "erofs,x", "y", 42);
  // Key sizes that do not add up: the fd must still be closed by the daemon.
  uint32_t huge = 1000;
  std::memcpy(m.data() + 16, &huge, 4);
  auto p = parse_message(bytes(m));
  ASSERT_TRUE(std::holds_alternative<BadMessage>(p));
  const auto& b = std::get<BadMessage>(p);
  EXPECT_TRUE(b.is_open);
  EXPECT_EQ(b.msg_id, 5u);
  EXPECT_EQ(b.open_fd, 42);

  // A volume key without its NUL.
  std::string m2 = encode_open(6, 1, "erofs,x", "y", 43);
  m2[32 + 7] = 'z';
  auto p2 = parse_message(bytes(m2));
  ASSERT_TRUE(std::holds_alternative<BadMessage>(p2));
  EXPECT_EQ(std::get<BadMessage>(p2).open_fd, 43);
}

TEST(FscacheMessage, LengthFieldMustMatch) {
  std::string m = encode_read(1, 1, 0, 4096);
  uint32_t len = 48;
  std::memcpy(m.data() + 8, &len, 4);
  EXPECT_TRUE(std::holds_alternative<BadMessage>(parse_message(bytes(m))));
  std::string c = encode_close(1, 1) + "extra";
  EXPECT_TRUE(std::holds_alternative<BadMessage>(parse_message(bytes(c))));
}

TEST(FscacheMessage, UnknownOpcode) {
  std::string m = encode_close(1, 1);
  uint32_t op = 9;
  std::memcpy(m.data() + 4, &op, 4);
  auto p = parse_message(bytes(m));
  ASSERT_TRUE(std::holds_alternative<BadMessage>(p));
  EXPECT_FALSE(std::get<BadMessage>(p).is_open);
}

}  // namespace
}  // namespace nydus::fscache
