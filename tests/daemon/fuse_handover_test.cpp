// The state handed to a supervisor on sendfd comes back as untrusted bytes on
// takeover: it must round-trip exactly, and anything else must be an error.
#include "daemon/fuse_handover.h"

#include <gtest/gtest.h>

namespace nydus::daemon {
namespace {

TEST(FuseHandover, RoundTrips) {
  FuseHandover h{"/run/nydus/mnt", "/var/lib/image.boot", {}};
  for (int i = 0; i < 104; i++) h.init.push_back(uint8_t(i * 37));
  auto d = decode_fuse_handover(encode_fuse_handover(h));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->mountpoint, h.mountpoint);
  EXPECT_EQ(d->bootstrap, h.bootstrap);
  EXPECT_EQ(d->init, h.init);
}

TEST(FuseHandover, RejectsWhatIsNotOurs) {
  const char* bad[] = {
      "",
      "not json",
      "[]",
      R"({"kind":"fscache","mountpoint":"/m","bootstrap":"/b","fuse_init":"00"})",
      R"({"mountpoint":"/m","bootstrap":"/b","fuse_init":"00"})",
      R"({"kind":"nydusd-fuse-v1","bootstrap":"/b","fuse_init":"00"})",
      R"({"kind":"nydusd-fuse-v1","mountpoint":"","bootstrap":"/b","fuse_init":"00"})",
      R"({"kind":"nydusd-fuse-v1","mountpoint":"/m","bootstrap":"/b","fuse_init":"0"})",
      R"({"kind":"nydusd-fuse-v1","mountpoint":"/m","bootstrap":"/b","fuse_init":"0G"})",
      R"({"kind":"nydusd-fuse-v1","mountpoint":"/m","bootstrap":"/b","fuse_init":"AB"})",
      R"({"kind":"nydusd-fuse-v1","mountpoint":7,"bootstrap":"/b","fuse_init":"00"})",
      R"({"kind":"nydusd-fuse-v1","mountpoint":"/m","bootstrap":null,"fuse_init":"00"})",
  };
  for (const char* s : bad) {
    auto d = decode_fuse_handover(s);
    EXPECT_FALSE(d) << s;
    if (!d) {
      EXPECT_EQ(d.error().code, Errc::kInvalidArgument) << s;
    }
  }
  // An INIT request is about a hundred bytes: a megabyte of hex is not one.
  std::string big = R"({"kind":"nydusd-fuse-v1","mountpoint":"/m","bootstrap":"/b","fuse_init":")" +
                    std::string(1 << 20, 'a') + "\"}";
  EXPECT_FALSE(decode_fuse_handover(big));
}

}  // namespace
}  // namespace nydus::daemon
