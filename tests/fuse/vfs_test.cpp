// Vfs: a shared daemon's pseudo directories and inode routing. The image's
// own attributes come from the bootstrap; the expectations here are the
// hand-computed inode layout ((slot << 56) | inode) and the names mounted.
#include "fuse/vfs.h"

#include <gtest/gtest.h>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "fuse/rafs_fs.h"

namespace nydus::fuse {
namespace {

namespace fs = std::filesystem;

class VfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(tmp_ / "src" / "d");
    test::write_file(tmp_ / "src" / "d" / "f", std::string("x"));
    fs::create_directories(tmp_ / "blobs");
    builder::CreateOptions o;
    o.source = tmp_ / "src";
    o.bootstrap = tmp_ / "boot";
    o.blob_dir = tmp_ / "blobs";
    ASSERT_TRUE(builder::create_image(o));
    auto boot = format::Bootstrap::open(tmp_ / "boot");
    ASSERT_TRUE(boot);
    boot_ = *boot;
  }
  std::shared_ptr<RafsFs> image() { return std::make_shared<RafsFs>(boot_, std::vector<std::shared_ptr<storage::BlobCache>>{}, FsOptions{}); }
  std::vector<std::string> list(const Vfs& v, uint64_t ino, uint64_t off = 0) {
    std::vector<std::string> names;
    EXPECT_TRUE(v.pseudo_readdir(ino, off, [&](const DirEntry& e) {
      names.push_back(e.name + "@" + std::to_string(e.ino));
      return true;
    }));
    return names;
  }

  test::TempDir tmp_;
  std::shared_ptr<format::Bootstrap> boot_;
};

TEST_F(VfsTest, RootImageKeepsItsInodeNumbers) {
  Vfs v;
  auto img = image();
  ASSERT_TRUE(v.mount("/", img));
  auto r = v.route(12345);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fs, img);
  EXPECT_EQ(r->ino, 12345u);
  EXPECT_EQ(r->slot, 0u);
  EXPECT_EQ(Vfs::outer(0, 77), 77u);
  // Nothing else fits beside an image at /.
  EXPECT_FALSE(v.mount("/other", image()));
  EXPECT_EQ(v.mounts(), std::vector<std::string>{"/"});
  ASSERT_TRUE(v.umount("/"));
  EXPECT_TRUE(v.empty());
}

TEST_F(VfsTest, SharedImagesLiveInTheirSlots) {
  Vfs v;
  auto a = image(), b = image();
  ASSERT_TRUE(v.mount("/snap-a", a));
  ASSERT_TRUE(v.mount("/deep/er/snap-b", b));
  EXPECT_EQ(v.mounts(), (std::vector<std::string>{"/deep/er/snap-b", "/snap-a"}));

  // Pseudo root: ".", "..", then the names in order; "deep" is pseudo dir 2.
  EXPECT_EQ(list(v, 1), (std::vector<std::string>{".@1", "..@1", "deep@2", "snap-a@" + std::to_string((1ull << 56) | 1)}));
  EXPECT_EQ(list(v, 1, 3), (std::vector<std::string>{"snap-a@" + std::to_string((1ull << 56) | 1)}));
  EXPECT_EQ(list(v, 3), (std::vector<std::string>{".@3", "..@2", "snap-b@" + std::to_string((2ull << 56) | 1)}));

  // A lookup of a mounted name answers that image's root, renumbered.
  auto root = v.pseudo_lookup(1, "snap-a");
  ASSERT_TRUE(root && *root);
  EXPECT_EQ((**root).st_ino, (1ull << 56) | 1);
  EXPECT_TRUE(S_ISDIR((**root).st_mode));
  auto none = v.pseudo_lookup(1, "nope");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);

  auto r = v.route((2ull << 56) | 42);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->fs, b);
  EXPECT_EQ(r->ino, 42u);
  EXPECT_EQ(r->slot, 2u);
  auto p = v.route(2);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->fs, nullptr);

  // Busy names and bad paths are refused.
  EXPECT_FALSE(v.mount("/snap-a", image()));
  EXPECT_FALSE(v.mount("/deep", image()));
  EXPECT_FALSE(v.mount("/snap-a/inside", image()));
  EXPECT_FALSE(v.mount("relative", image()));
  EXPECT_FALSE(v.mount("/a/../b", image()));
  EXPECT_FALSE(v.mount("/", image()));
}

TEST_F(VfsTest, UnmountedInodesNameNothingAndSlotsAreNotReusedAtOnce) {
  Vfs v;
  std::vector<std::pair<uint64_t, std::string>> invalidated;
  v.set_invalidator([&](uint64_t parent, const std::string& name) { invalidated.emplace_back(parent, name); });
  ASSERT_TRUE(v.mount("/one", image()));
  ASSERT_TRUE(v.umount("/one"));
  EXPECT_EQ(invalidated, (std::vector<std::pair<uint64_t, std::string>>{{1, "one"}, {1, "one"}}));
  auto gone = v.route((1ull << 56) | 5);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().sys_errno, ENOENT);
  EXPECT_FALSE(v.umount("/one"));

  // The next image goes to slot 2, not the slot just freed.
  ASSERT_TRUE(v.mount("/one", image()));
  EXPECT_FALSE(v.route((1ull << 56) | 5));
  EXPECT_TRUE(v.route((2ull << 56) | 5));
  EXPECT_EQ(list(v, 1).back(), "one@" + std::to_string((2ull << 56) | 1));

  // 255 live images fill every slot; the 256th is refused, then fits again
  // once one leaves.
  for (int i = 0; i < 254; ++i) ASSERT_TRUE(v.mount("/m" + std::to_string(i), image())) << i;
  auto full = v.mount("/full", image());
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::kNoSpace);
  ASSERT_TRUE(v.umount("/m7"));
  EXPECT_TRUE(v.mount("/full", image()));
}

}  // namespace
}  // namespace nydus::fuse
