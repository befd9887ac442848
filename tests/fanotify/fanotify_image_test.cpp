#include "fanotify/fanotify_image.h"

#include <gtest/gtest.h>

namespace nydus::fanotify {
namespace {

TEST(ErofsDeviceOptions, OneDeviceOptionPerBlobInOrder) {
  auto o = erofs_device_options({"/var/tmp/c/a.blob.data", "/var/tmp/c/b.blob.data"});
  ASSERT_TRUE(o);
  EXPECT_EQ(*o, "device=/var/tmp/c/a.blob.data,device=/var/tmp/c/b.blob.data");
  auto none = erofs_device_options({});
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, "");
}

TEST(ErofsDeviceOptions, CommaInPathIsRefused) {
  // The kernel splits mount options at ',' with no escaping.
  EXPECT_FALSE(erofs_device_options({"/var/tmp/a,b/x.blob.data"}));
}

}  // namespace
}  // namespace nydus::fanotify
