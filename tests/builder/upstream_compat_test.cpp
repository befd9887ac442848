// Byte compatibility with upstream nydus-image: rebuild the tree of the
// upstream fixture `rafs-v6-2.2.boot` (two files, extracted from its own blob)
// with the same options, and compare our bootstrap with upstream's byte for
// byte. Only fields that depend on the builder version or on the blob's hash
// are masked, each for a stated reason.
#include <fcntl.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <algorithm>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "format/image_reader.h"

namespace nydus {
namespace {

using namespace nydus::format;

struct Mask {
  uint64_t off, len;
  const char* why;
};

TEST(UpstreamCompat, RebuildOfFixtureMatchesUpstreamBootstrap) {
  auto fx = test::fixtures_dir();
  NYDUS_REQUIRE_FIXTURES();
  const auto up_path = fx / "v6" / "rafs-v6-2.2.boot";
  auto img = ImageReader::open(up_path, {fx / "v6", {}});
  ASSERT_TRUE(img) << img.error().message;
  const Bootstrap& up = (*img)->bootstrap();

  // Recreate the source tree: same names, bytes, modes, owners and mtimes.
  test::TempDir tmp;
  const auto src = tmp / "src";
  std::filesystem::create_directories(src);
  for (const char* name : {"lib.rs", "sync_io.rs"}) {
    auto nid = up.resolve(std::string("/") + name);
    ASSERT_TRUE(nid) << nid.error().message;
    auto ino = up.inode(*nid);
    ASSERT_TRUE(ino);
    std::vector<uint8_t> data;
    auto st = (*img)->read_file(*ino, true, [&](uint64_t, std::span<const uint8_t> b) -> Status {
      data.insert(data.end(), b.begin(), b.end());
      return ok();
    });
    ASSERT_TRUE(st) << st.error().message;
    ASSERT_EQ(data.size(), ino->size);
    const auto p = src / name;
    test::write_file(p, data);
    ASSERT_EQ(chmod(p.c_str(), ino->mode & 07777), 0);
    ASSERT_EQ(lchown(p.c_str(), ino->uid, ino->gid), 0) << "needs root";
    struct timespec ts[2] = {{time_t(ino->mtime), long(ino->mtime_nsec)}, {time_t(ino->mtime), long(ino->mtime_nsec)}};
    ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
  }
  ASSERT_EQ(chmod(src.c_str(), 0755), 0);
  ASSERT_EQ(lchown(src.c_str(), 0, 0), 0);
  struct timespec zero[2] = {{0, 0}, {0, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, src.c_str(), zero, AT_SYMLINK_NOFOLLOW), 0);

  builder::CreateOptions o;
  o.source = src;
  o.bootstrap = tmp / "boot";
  o.blob_dir = tmp / "blobs";
  o.compressor = Compressor::kZstd;
  o.digester = Digester::kBlake3;
  o.blob_toc = true;  // the fixture's blob has tar headers, blob.digest and a ToC
  auto rep = builder::create_image(o);
  ASSERT_TRUE(rep) << rep.error().message;

  auto ours = test::read_file(tmp / "boot");
  auto theirs = test::read_file(up_path);
  ASSERT_EQ(ours.size(), theirs.size());

  // Fields that legitimately differ, with the reason.
  const uint64_t root_inode = 2 * 4096 + 128 * 32;  // meta_blkaddr 2, nid 128
  const uint64_t blob_entry = 0x1000, chunk_table = 0x4000;
  std::vector<Mask> masks = {
      {kExtSuperBlockOffset, 8, "flags: builders since 2.3 add ENCRYPTION_NONE (checked below)"},
      {kDeviceTableOffset, 64, "device tag = blob id: the blob differs (ToC image.blob offset, CRCs)"},
      {kDeviceTableOffset + 68, 4, "mapped_blkaddr: 2 MiB alignment before 2023-03, 512 KiB now"},
      {blob_entry, 64, "blob id"},
      {blob_entry + 88, 8, "blob compressed size"},
      {blob_entry + 136, 32, "ToC digest"},
      {root_inode + 20, 4, "root i_ino: the 2.2 builder wrote 0, later ones 1"},
      {chunk_table + 36, 4, "chunk flags: HAS_CRC32 since 2.3.2"},
      {chunk_table + 76, 4, "crc32"},
      {chunk_table + 80 + 36, 4, "chunk flags"},
      {chunk_table + 80 + 76, 4, "crc32"},
  };
  for (auto& m : masks) {
    std::fill_n(ours.begin() + long(m.off), m.len, 0);
    std::fill_n(theirs.begin() + long(m.off), m.len, 0);
  }
  size_t diffs = 0;
  for (size_t i = 0; i < ours.size(); i++) {
    if (ours[i] != theirs[i] && diffs++ < 20)
      ADD_FAILURE() << "byte " << i << " (0x" << std::hex << i << "): ours 0x" << int(ours[i]) << " upstream 0x"
                    << int(theirs[i]);
  }
  EXPECT_EQ(diffs, 0u);

  // The masked fields, checked for what they should be.
  auto ob = Bootstrap::open(tmp / "boot");
  ASSERT_TRUE(ob) << ob.error().message;
  EXPECT_EQ((*ob)->flags(), up.flags() | super_flags::kEncryptionNone);
  ASSERT_EQ((*ob)->blobs().size(), 1u);
  EXPECT_EQ((*ob)->blobs()[0].blob_id, rep->blobs[0].blob_id);
  EXPECT_EQ((*ob)->blobs()[0].mapped_blkaddr, 128u);  // align(20480, 512 KiB) / 4096
  EXPECT_EQ((*ob)->blobs()[0].features, up.blobs()[0].features);
  EXPECT_EQ((*ob)->blobs()[0].uncompressed_size, up.blobs()[0].uncompressed_size);
  EXPECT_EQ((*ob)->blobs()[0].ci_offset, up.blobs()[0].ci_offset);

  // The data blob too: chunks (zstd level 3), tar headers, ci array, header,
  // digests and ToC are identical but for the ToC's image.blob offset, which
  // 2.2 builders set to the end of the chunk data and later ones to 0, and the
  // reserved tail of each ToC entry, where 2.2 left stray bytes (0xffff, "0000").
  auto our_blob = test::read_file(rep->blob_path);
  auto up_blob = test::read_file(fx / "v6" / up.blobs()[0].blob_id);
  ASSERT_EQ(our_blob.size(), up_blob.size());
  const uint64_t toc_start = up_blob.size() - 512 - 4 * 128;
  EXPECT_EQ(std::string(our_blob.begin() + long(toc_start) + 8, our_blob.begin() + long(toc_start) + 18), "image.blob");
  std::fill_n(our_blob.begin() + long(toc_start) + 56, 8, 0);
  std::fill_n(up_blob.begin() + long(toc_start) + 56, 8, 0);
  for (uint64_t e = 0; e < 4; e++) {
    EXPECT_TRUE(std::all_of(our_blob.begin() + long(toc_start + 128 * e + 80),
                            our_blob.begin() + long(toc_start + 128 * e + 128), [](uint8_t b) { return b == 0; }));
    std::fill_n(up_blob.begin() + long(toc_start + 128 * e + 80), 48, 0);
  }
  size_t blob_diffs = 0;
  for (size_t i = 0; i < our_blob.size(); i++) {
    if (our_blob[i] != up_blob[i] && blob_diffs++ < 20)
      ADD_FAILURE() << "blob byte " << i << ": ours 0x" << std::hex << int(our_blob[i]) << " upstream 0x"
                    << int(up_blob[i]);
  }
  EXPECT_EQ(blob_diffs, 0u);
}

}  // namespace
}  // namespace nydus
