// nydus-image create --type tar-rafs: layer tars written with libarchive,
// read back through the bootstrap reader and ImageReader.
#include "builder/tar_source.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "builder/create_image.h"
#include "builder/tar_test_util.h"
#include "common/test_util.h"
#include "format/bootstrap.h"
#include "format/image_reader.h"

namespace nydus::builder {
namespace {

namespace fs = std::filesystem;
using namespace nydus::format;
using test::TarEntry;

std::string read_all(ImageReader& img, const std::string& path) {
  auto nid = img.bootstrap().resolve(path);
  EXPECT_TRUE(nid) << path;
  if (!nid) return {};
  auto ino = img.bootstrap().inode(*nid);
  std::string out;
  auto st = img.read_file(*ino, true, [&](uint64_t, std::span<const uint8_t> b) -> Status {
    out.append(b.begin(), b.end());
    return ok();
  });
  EXPECT_TRUE(st) << st.error().message;
  return out;
}

InodeView inode_of(const Bootstrap& b, const std::string& path) {
  auto nid = b.resolve(path);
  EXPECT_TRUE(nid) << path;
  auto ino = b.inode(nid ? *nid : b.root_nid());
  return *ino;
}

std::string pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = char(seed + i * 7 % 251);
  return s;
}

Result<CreateReport> build(const test::TempDir& t, const std::string& tar, uint32_t chunk = 4096) {
  CreateOptions o;
  o.source_type = SourceType::kTar;
  o.source = tar;
  o.bootstrap = t / "boot";
  o.blob_dir = t / "blobs";
  o.chunk_size = chunk;
  o.threads = 2;
  return create_image(o);
}

TEST(TarSource, EntriesRoundTrip) {
  test::TempDir t;
  const std::string long_dir = std::string(120, 'd');
  const std::string long_name = long_dir + "/" + std::string(200, 'f');
  const std::string big = pattern(3 * 4096 + 17, 3);
  std::vector<TarEntry> es;
  es.push_back({.path = "./" + long_name, .data = big, .mtime_ns = 123456789, .uid = 1000, .gid = 2000,
                .xattrs = {{"user.k", "v"}, {"trusted.t", std::string("\0\1", 2)}}});
  es.push_back({.path = "./late/file", .data = "late"});          // parent comes later
  es.push_back({.path = "./late", .type = AE_IFDIR, .perm = 0700, .mtime = 1600000000});
  es.push_back({.path = "./link", .type = AE_IFLNK, .perm = 0777, .link = long_name});
  es.push_back({.path = "./hard", .hardlink = "./" + long_name});
  es.push_back({.path = "./chr", .type = AE_IFCHR, .rmajor = 4, .rminor = 300});
  es.push_back({.path = "./blk", .type = AE_IFBLK, .rmajor = 8, .rminor = 1});
  es.push_back({.path = "./fifo", .type = AE_IFIFO});
  es.push_back({.path = "dup", .data = "first version"});
  es.push_back({.path = "./dup", .data = "second"});
  es.push_back({.path = "/abs/x", .data = "abs"});
  es.push_back({.path = "./.wh.gone", .data = ""});
  test::write_tar(t / "l.tar", es);

  auto r = build(t, (t / "l.tar").string());
  ASSERT_TRUE(r) << r.error().message;
  auto img = ImageReader::open(t / "boot", {t / "blobs", {}});
  ASSERT_TRUE(img) << img.error().message;
  const Bootstrap& b = (*img)->bootstrap();

  EXPECT_EQ(read_all(**img, "/" + long_name), big);
  auto f = inode_of(b, "/" + long_name);
  EXPECT_EQ(f.mode, S_IFREG | 0644u);
  EXPECT_EQ(f.uid, 1000u);
  EXPECT_EQ(f.gid, 2000u);
  EXPECT_EQ(f.mtime, 1700000000u);
  EXPECT_EQ(f.mtime_nsec, 123456789u);
  EXPECT_EQ(f.nlink, 2u);
  auto xs = b.xattrs(f);
  ASSERT_TRUE(xs);
  std::map<std::string, std::string> xm;
  for (auto& x : *xs) xm[x.name] = std::string(x.value.begin(), x.value.end());
  EXPECT_EQ(xm["user.k"], "v");
  EXPECT_EQ(xm["trusted.t"], std::string("\0\1", 2));
  EXPECT_EQ(inode_of(b, "/" + long_dir).mode, S_IFDIR | 0755u);  // implicit parent

  EXPECT_EQ(*b.resolve("/hard"), *b.resolve("/" + long_name));
  auto l = inode_of(b, "/link");
  EXPECT_TRUE(l.is_symlink());
  EXPECT_EQ(*b.read_link(l), long_name);
  EXPECT_EQ(read_all(**img, "/late/file"), "late");
  auto late = inode_of(b, "/late");
  EXPECT_EQ(late.mode, S_IFDIR | 0700u);  // the later explicit entry updated it
  EXPECT_EQ(late.mtime, 1600000000u);
  auto c = inode_of(b, "/chr");
  EXPECT_TRUE(S_ISCHR(c.mode));
  EXPECT_EQ(rdev_major(c.rdev()), 4u);
  EXPECT_EQ(rdev_minor(c.rdev()), 300u);
  EXPECT_TRUE(S_ISBLK(inode_of(b, "/blk").mode));
  EXPECT_TRUE(S_ISFIFO(inode_of(b, "/fifo").mode));
  EXPECT_EQ(read_all(**img, "/dup"), "second");
  EXPECT_EQ(read_all(**img, "/abs/x"), "abs");
  EXPECT_TRUE(S_ISREG(inode_of(b, "/.wh.gone").mode));  // kept for merge
  EXPECT_EQ(r->files, 5u);  // both versions of dup were chunked
}

TEST(TarSource, GzipLayerDedupsAcrossFiles) {
  test::TempDir t;
  const std::string data = pattern(10 * 4096, 9);
  test::write_tar(t / "l.tgz", {{.path = "a/b", .data = data}, {.path = "a/c", .data = data}}, true);
  auto r = build(t, (t / "l.tgz").string());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->chunks_total, 20u);
  EXPECT_EQ(r->chunks_stored, 10u);  // the second file is all duplicates
  auto img = ImageReader::open(t / "boot", {t / "blobs", {}});
  ASSERT_TRUE(img);
  EXPECT_EQ(read_all(**img, "/a/c"), data);
}

TEST(TarSource, HostileNamesAreRejected) {
  test::TempDir t;
  test::write_tar(t / "dotdot.tar", {{.path = "a/../../etc/passwd", .data = "x"}});
  EXPECT_FALSE(build(t, (t / "dotdot.tar").string()));
  test::write_tar(t / "long.tar", {{.path = std::string(300, 'n'), .data = "x"}});
  EXPECT_FALSE(build(t, (t / "long.tar").string()));
  // A path through a symlink is not followed.
  test::write_tar(t / "sym.tar", {{.path = "s", .type = AE_IFLNK, .link = "/etc"}, {.path = "s/x", .data = "x"}});
  EXPECT_FALSE(build(t, (t / "sym.tar").string()));
  test::write_tar(t / "hl.tar", {{.path = "h", .hardlink = "missing"}});
  EXPECT_FALSE(build(t, (t / "hl.tar").string()));
  TarLimits lim;
  lim.max_entries = 2;
  test::write_tar(t / "many.tar", {{.path = "a"}, {.path = "b"}, {.path = "c"}});
  auto s = scan_tar((t / "many.tar").string(), 4096, [](uint32_t, uint64_t, std::vector<uint8_t>) { return ok(); }, lim);
  EXPECT_FALSE(s);
  test::write_file(t / "garbage.tar", std::string(5000, 'g'));
  EXPECT_FALSE(build(t, (t / "garbage.tar").string()));
}

}  // namespace
}  // namespace nydus::builder
