// --fs-driver: what `auto` picks and why, and the drivers refused.
#include <gtest/gtest.h>

#include "snapshotter/fs_driver.h"

using namespace nydus::snapshotter;

TEST(FsDriver, AutoPicksFusedevAndSaysWhy) {
  for (bool fan : {false, true})
    for (bool fsc : {false, true}) {
      auto c = choose_fs_driver("auto", KernelPaths{fan, fsc});
      ASSERT_TRUE(c);
      EXPECT_EQ(c->driver, "fusedev");
      EXPECT_NE(c->reason.find(fan ? "fanotify pre-content offered" : "fanotify pre-content not offered"),
                std::string::npos) << c->reason;
      EXPECT_NE(c->reason.find(fsc ? "fscache on-demand offered" : "fscache on-demand not offered"),
                std::string::npos) << c->reason;
    }
}

TEST(FsDriver, FusedevAcceptedOthersRefusedWithTheReason) {
  ASSERT_TRUE(choose_fs_driver("fusedev", {}));
  EXPECT_EQ(choose_fs_driver("fusedev", {})->driver, "fusedev");
  auto fan = choose_fs_driver("fanotify", KernelPaths{true, true});
  ASSERT_FALSE(fan);
  EXPECT_NE(fan.error().message.find("not supported by this snapshotter"), std::string::npos);
  EXPECT_FALSE(choose_fs_driver("fscache", KernelPaths{true, true}));
  EXPECT_FALSE(choose_fs_driver("FUSEDEV", {}));
  EXPECT_FALSE(choose_fs_driver("", {}));
}
