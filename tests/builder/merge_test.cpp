// nydus-image merge: two tar layers with OCI whiteouts, merged and read back
// through ImageReader with both blobs in one blob dir.
#include "builder/merge.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "builder/create_image.h"
#include "builder/prefetch_list.h"
#include "builder/tar_test_util.h"
#include "common/test_util.h"
#include "format/bootstrap.h"
#include "format/bootstrap_v5.h"
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

std::set<std::string> all_paths(const Bootstrap& b) {
  std::set<std::string> out;
  auto st = b.walk([&](const std::string& p, const InodeView&) -> Status {
    out.insert(p);
    return ok();
  });
  EXPECT_TRUE(st);
  return out;
}

Result<CreateReport> build_layer(const test::TempDir& t, const std::string& name, const std::vector<TarEntry>& es,
                                 bool inline_meta = false) {
  test::write_tar(t / (name + ".tar"), es);
  CreateOptions o;
  o.source_type = SourceType::kTar;
  o.source = t / (name + ".tar");
  o.bootstrap = t / (name + ".boot");
  o.blob_dir = t / "blobs";
  o.chunk_size = 4096;
  o.blob_inline_meta = inline_meta;
  return create_image(o);
}

std::string big(size_t n, char c) {
  std::string s(n, c);
  for (size_t i = 0; i < n; i += 97) s[i] = char(i / 97);
  return s;
}

TEST(Merge, OciWhiteoutsAndBlobRemap) {
  test::TempDir t;
  auto l1 = build_layer(t, "l1", {{.path = "a/x", .data = "x1"},
                                  {.path = "a/y", .data = big(9000, 'y')},
                                  {.path = "a/yy", .hardlink = "a/y"},
                                  {.path = "b/z", .data = "z1"},
                                  {.path = "c/old", .data = "old"},
                                  {.path = "keep", .data = "keep"}});
  ASSERT_TRUE(l1) << l1.error().message;
  auto l2 = build_layer(t, "l2", {{.path = "a/.wh.x"},
                                  {.path = ".wh.b"},
                                  {.path = ".wh.nothing"},
                                  {.path = "c/.wh..wh..opq"},
                                  {.path = "c/new", .data = "new"},
                                  {.path = "a/y", .data = big(5000, 'Y')},
                                  {.path = "d/h1", .data = "hl"},
                                  {.path = "d/h2", .hardlink = "d/h1"}});
  ASSERT_TRUE(l2) << l2.error().message;

  MergeOptions mo;
  mo.layers = {t / "l1.boot", t / "l2.boot"};
  mo.bootstrap = t / "merged.boot";
  auto m = merge_layers(mo);
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_EQ(m->blobs.size(), 2u);
  EXPECT_EQ(m->blobs[0].blob_id, l1->blobs[0].blob_id);
  EXPECT_EQ(m->blobs[1].blob_id, l2->blobs[0].blob_id);

  auto img = ImageReader::open(t / "merged.boot", {t / "blobs", {}});
  ASSERT_TRUE(img) << img.error().message;
  const Bootstrap& b = (*img)->bootstrap();
  EXPECT_EQ(all_paths(b), (std::set<std::string>{"/", "/a", "/a/y", "/a/yy", "/c", "/c/new", "/d", "/d/h1", "/d/h2",
                                                 "/keep"}));
  EXPECT_EQ(read_all(**img, "/a/y"), big(5000, 'Y'));
  EXPECT_EQ(read_all(**img, "/a/yy"), big(9000, 'y'));  // the lower link keeps the old inode
  EXPECT_EQ(read_all(**img, "/c/new"), "new");
  EXPECT_EQ(read_all(**img, "/keep"), "keep");
  EXPECT_EQ(*b.resolve("/d/h1"), *b.resolve("/d/h2"));
  EXPECT_EQ(b.inode(*b.resolve("/d/h1"))->nlink, 2u);
  // Chunk refs of each layer point at that layer's blob.
  auto refs = b.chunks(*b.inode(*b.resolve("/a/y")));
  ASSERT_TRUE(refs);
  for (auto& r : *refs) EXPECT_EQ(r.blob_index, 1u);
  refs = b.chunks(*b.inode(*b.resolve("/keep")));
  ASSERT_TRUE(refs);
  for (auto& r : *refs) EXPECT_EQ(r.blob_index, 0u);
}

TEST(Merge, InlinedBlobIdsComeFromDigestsOrTheFileName) {
  test::TempDir t;
  auto l1 = build_layer(t, "l1", {{.path = "f", .data = "one"}});
  ASSERT_TRUE(l1) << l1.error().message;
  auto l2 = build_layer(t, "l2", {{.path = "g", .data = "two"}});
  ASSERT_TRUE(l2) << l2.error().message;
  // A bootstrap as stored inside a blob names it with the placeholder id.
  auto bytes = test::read_file(t / "l1.boot");
  const std::string id = l1->blobs[0].blob_id;
  std::string s(bytes.begin(), bytes.end());
  for (size_t p; (p = s.find(id)) != std::string::npos;) s.replace(p, 64, std::string(64, 'x'));
  test::write_file(t / "l1.boot", s);
  MergeOptions mo;
  mo.layers = {t / "l1.boot", t / "l2.boot"};
  mo.bootstrap = t / "merged.boot";
  // Upstream: the bootstrap file's name up to its first '.' (the converter
  // names each layer's bootstrap by its blob digest).
  auto named = merge_layers(mo);
  ASSERT_TRUE(named) << named.error().message;
  EXPECT_EQ(named->blobs[0].blob_id, "l1");
  EXPECT_EQ(named->blobs[1].blob_id, l2->blobs[0].blob_id);  // a real id stays
  mo.original_blob_ids = {"orig1", "orig2"};
  auto orig = merge_layers(mo);
  ASSERT_TRUE(orig) << orig.error().message;
  EXPECT_EQ(orig->blobs[0].blob_id, "orig1");
  mo.original_blob_ids.clear();
  mo.blob_digests = {id, l2->blobs[0].blob_id};
  mo.blob_toc_sizes = {640, 0};
  auto m = merge_layers(mo);
  ASSERT_TRUE(m) << m.error().message;
  auto img = ImageReader::open(t / "merged.boot", {t / "blobs", {}});
  ASSERT_TRUE(img);
  EXPECT_EQ((*img)->bootstrap().blobs()[0].blob_id, id);
  EXPECT_EQ((*img)->bootstrap().blobs()[0].toc_size, 640u);
  EXPECT_EQ(read_all(**img, "/f"), "one");
  EXPECT_EQ(read_all(**img, "/g"), "two");
  mo.blob_digests = {id};  // one entry for two layers
  EXPECT_FALSE(merge_layers(mo));
}

TEST(Merge, UnusedBlobsLeaveTheTableAndChunkSizeMismatchIsInconsistent) {
  test::TempDir t;
  auto l1 = build_layer(t, "l1", {{.path = "f", .data = "one"}});
  ASSERT_TRUE(l1);
  auto l2 = build_layer(t, "l2", {{.path = ".wh.f", .data = ""}, {.path = "g", .data = "two"}});
  ASSERT_TRUE(l2);
  MergeOptions mo;
  mo.layers = {t / "l1.boot", t / "l2.boot"};
  mo.bootstrap = t / "merged.boot";
  auto m = merge_layers(mo);
  ASSERT_TRUE(m) << m.error().message;
  // l1's only file is whited out: upstream drops its blob from the table.
  ASSERT_EQ(m->blobs.size(), 1u);
  EXPECT_EQ(m->blobs[0].blob_id, l2->blobs[0].blob_id);

  CreateOptions o;
  o.source = t / "small";
  std::filesystem::create_directories(o.source);
  test::write_file(o.source / "h", "x");
  o.bootstrap = t / "small.boot";
  o.blob_dir = t / "blobs";
  o.chunk_size = 0x10000;
  ASSERT_TRUE(create_image(o));
  mo.layers = {t / "l1.boot", t / "small.boot"};
  auto bad = merge_layers(mo);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find(kInconsistentFilesystem), std::string::npos) << bad.error().message;
}

TEST(Merge, ParentBootstrapAndOverlayfsWhiteouts) {
  test::TempDir t;
  auto p = build_layer(t, "p", {{.path = "o/a", .data = "a"}, {.path = "gone", .data = "g"}});
  ASSERT_TRUE(p);
  auto l = build_layer(t, "l", {{.path = "gone", .type = AE_IFCHR},
                                {.path = "o", .type = AE_IFDIR, .xattrs = {{"trusted.overlay.opaque", "y"}}},
                                {.path = "o/b", .data = "b"}});
  ASSERT_TRUE(l) << l.error().message;
  MergeOptions mo;
  mo.parent_bootstrap = t / "p.boot";
  mo.layers = {t / "l.boot"};
  mo.bootstrap = t / "merged.boot";
  mo.whiteout = WhiteoutSpec::kOverlayfs;
  auto m = merge_layers(mo);
  ASSERT_TRUE(m) << m.error().message;
  auto img = ImageReader::open(t / "merged.boot", {t / "blobs", {}});
  ASSERT_TRUE(img);
  EXPECT_EQ(all_paths((*img)->bootstrap()), (std::set<std::string>{"/", "/o", "/o/b"}));
  EXPECT_EQ(read_all(**img, "/o/b"), "b");
  auto xs = (*img)->bootstrap().xattrs(*(*img)->bootstrap().inode(*(*img)->bootstrap().resolve("/o")));
  ASSERT_TRUE(xs);
  for (auto& x : *xs) ADD_FAILURE() << "xattr left: " << x.name << "=" << std::string(x.value.begin(), x.value.end());
}

// A directory layer built as RAFS v5 (or v6 with fs_version 6).
Result<CreateReport> build_dir_layer(const test::TempDir& t, const std::string& name,
                                     const std::vector<std::pair<std::string, std::string>>& files, uint32_t version) {
  CreateOptions o;
  o.source = t / ("src-" + name);
  for (auto& [path, data] : files) {
    std::filesystem::create_directories((o.source / path).parent_path());
    test::write_file(o.source / path, data);
  }
  std::filesystem::create_directories(o.source);
  o.bootstrap = t / (name + ".boot");
  o.blob_dir = t / "blobs";
  o.chunk_size = 4096;
  o.fs_version = version;
  return create_image(o);
}

std::vector<uint8_t> file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(Merge, RafsV5LayersGiveARafsV5Image) {
  test::TempDir t;
  ASSERT_TRUE(build_dir_layer(t, "l1", {{"d/x", "x1"}, {"d/y", big(9000, 'y')}, {"o/old", "old"}}, 5));
  ASSERT_TRUE(build_dir_layer(t, "l2", {{"d/.wh.x", ""}, {"o/.wh..wh..opq", ""}, {"o/new", "new"}}, 5));
  MergeOptions mo;
  mo.layers = {t / "l1.boot", t / "l2.boot"};
  mo.bootstrap = t / "merged.boot";
  auto m = merge_layers(mo);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->fs_version, 5u);
  EXPECT_TRUE(is_rafs_v5(file_bytes(t / "merged.boot")));
  auto img = ImageReader::open(t / "merged.boot", {t / "blobs", {}});
  ASSERT_TRUE(img) << img.error().message;
  EXPECT_EQ((*img)->bootstrap().rafs_version(), 5u);
  EXPECT_EQ(all_paths((*img)->bootstrap()), (std::set<std::string>{"/", "/d", "/d/y", "/o", "/o/new"}));
  EXPECT_EQ(read_all(**img, "/d/y"), big(9000, 'y'));
  EXPECT_EQ(read_all(**img, "/o/new"), "new");
}

TEST(Merge, MixedRafsVersionsAreInconsistent) {
  test::TempDir t;
  ASSERT_TRUE(build_dir_layer(t, "v5", {{"a", "a"}}, 5));
  ASSERT_TRUE(build_dir_layer(t, "v6", {{"b", "b"}}, 6));
  for (auto order : {std::vector<std::string>{"v5", "v6"}, std::vector<std::string>{"v6", "v5"}}) {
    MergeOptions mo;
    mo.layers = {t / (order[0] + ".boot"), t / (order[1] + ".boot")};
    mo.bootstrap = t / "merged.boot";
    auto m = merge_layers(mo);
    ASSERT_FALSE(m);
    EXPECT_NE(m.error().message.find(kInconsistentFilesystem), std::string::npos) << m.error().message;
    EXPECT_NE(m.error().message.find("RAFS version"), std::string::npos) << m.error().message;
    EXPECT_FALSE(fs::exists(t / "merged.boot"));
  }
}

TEST(Merge, DamagedRafsV5LayerIsAnErrorNotACrash) {
  test::TempDir t;
  ASSERT_TRUE(build_dir_layer(t, "l1", {{"a", "a"}, {"d/b", big(5000, 'b')}}, 5));
  const auto good = file_bytes(t / "l1.boot");
  // Every 8-byte word past the superblock header, one at a time, set to ones.
  for (size_t off = 8; off + 8 <= good.size(); off += 56) {
    auto bad = good;
    std::memset(bad.data() + off, 0xff, 8);
    std::ofstream(t / "bad.boot", std::ios::binary).write(reinterpret_cast<const char*>(bad.data()), bad.size());
    MergeOptions mo;
    mo.layers = {t / "bad.boot", t / "l1.boot"};
    mo.bootstrap = t / "merged.boot";
    (void)merge_layers(mo);  // an error or a merge; never a crash
  }
}

}  // namespace
}  // namespace nydus::builder

namespace nydus::builder {
namespace {

// A layer that only names files below a directory describes neither that
// directory nor the root: merged over a lower layer, they keep the lower
// layer's attributes (what unpacking the layers in order gives), while a
// directory the upper layer does describe takes the upper attributes.
TEST(Merge, UndescribedDirectoriesKeepTheLowerAttributes) {
  test::TempDir t;
  std::vector<TarEntry> lower(3);
  lower[0].path = "./";
  lower[0].type = AE_IFDIR;
  lower[0].perm = 0711;
  lower[0].uid = 7;
  lower[1].path = "a/";
  lower[1].type = AE_IFDIR;
  lower[1].perm = 0700;
  lower[1].mtime = 1234;
  lower[1].uid = 42;
  lower[2].path = "b/";
  lower[2].type = AE_IFDIR;
  lower[2].perm = 0700;
  lower[2].mtime = 1234;
  auto l1 = build_layer(t, "l1", lower);
  ASSERT_TRUE(l1) << l1.error().message;
  EXPECT_TRUE(l1->implicit_dirs.empty());

  std::vector<TarEntry> upper(3);
  upper[0].path = "a/x";
  upper[0].data = "x";
  upper[1].path = "b/";
  upper[1].type = AE_IFDIR;
  upper[1].perm = 0755;
  upper[1].mtime = 99;
  upper[2].path = "b/y";
  upper[2].data = "y";
  auto l2 = build_layer(t, "l2", upper);
  ASSERT_TRUE(l2) << l2.error().message;
  EXPECT_EQ(std::set<std::string>(l2->implicit_dirs.begin(), l2->implicit_dirs.end()),
            (std::set<std::string>{"/", "/a"}));

  MergeOptions m;
  m.layers = {t / "l1.boot", t / "l2.boot"};
  m.implicit_dirs = {l1->implicit_dirs, l2->implicit_dirs};
  m.bootstrap = t / "merged.boot";
  ASSERT_TRUE(merge_layers(m));
  auto b = Bootstrap::open(m.bootstrap);
  ASSERT_TRUE(b);
  auto attrs = [&](const std::string& p) {
    auto nid = (*b)->resolve(p);
    EXPECT_TRUE(nid) << p;
    return *(*b)->inode(*nid);
  };
  EXPECT_EQ(attrs("/").mode & 07777, 0711u);
  EXPECT_EQ(attrs("/").uid, 7u);
  EXPECT_EQ(attrs("/a").mode & 07777, 0700u);
  EXPECT_EQ(attrs("/a").mtime, 1234u);
  EXPECT_EQ(attrs("/a").uid, 42u);
  EXPECT_EQ(attrs("/b").mode & 07777, 0755u);
  EXPECT_EQ(attrs("/b").mtime, 99u);
  EXPECT_TRUE((*b)->resolve("/a/x") && (*b)->resolve("/b/y"));

  // Without the hints (the nydus-image merge CLI), the upper layer's wins.
  m.implicit_dirs.clear();
  ASSERT_TRUE(merge_layers(m));
  b = Bootstrap::open(m.bootstrap);
  ASSERT_TRUE(b);
  EXPECT_EQ(attrs("/a").mode & 07777, 0755u);
}

// `--prefetch-policy fs` at merge time: the merged image's prefetch table
// names the patterns' inodes (the converter's --prefetch-patterns).
TEST(Merge, PrefetchPatternsBecomeThePrefetchTable) {
  test::TempDir t;
  std::vector<TarEntry> l(3);
  l[0].path = "a/x";
  l[0].data = "x";
  l[1].path = "b/y";
  l[1].data = "y";
  l[2].path = "c";
  l[2].data = "c";
  ASSERT_TRUE(build_layer(t, "l1", l));
  MergeOptions m;
  m.layers = {t / "l1.boot"};
  m.bootstrap = t / "merged.boot";
  m.prefetch_patterns = {"/b", "/a/x", "/b/y", "/missing"};
  ASSERT_TRUE(merge_layers(m));
  auto b = Bootstrap::open(m.bootstrap);
  ASSERT_TRUE(b);
  std::vector<uint64_t> want{*(*b)->resolve("/b"), *(*b)->resolve("/a/x")};
  std::vector<uint64_t> got((*b)->prefetch_nids().begin(), (*b)->prefetch_nids().end());
  EXPECT_EQ(got, want) << "/b/y is covered by /b, /missing names nothing";
}

}  // namespace
}  // namespace nydus::builder

namespace nydus::builder {
namespace {

// Upstream's generate_patterns: trimmed, absolute only, each path once and
// none below an earlier one (found or not); normalised like a PathBuf.
TEST(PrefetchList, ParsesAsUpstream) {
  std::istringstream in("/a/b\n  /a/b/c  \nrelative\n\n/f/\n//h//./i\n/f/g\n/a\n");
  auto p = parse_prefetch_patterns(in);
  EXPECT_EQ(p.paths, (std::vector<std::string>{"/a/b", "/f", "/h/i", "/a"}));
  EXPECT_EQ(p.warnings.size(), 3u);  // /a/b/c and /f/g covered, "relative" not absolute
  EXPECT_EQ(normalize_image_path("/"), "/");
  EXPECT_EQ(normalize_image_path("///"), "/");
  std::vector<std::string> paths{"/", "/a", "/a/b", "/f"};
  EXPECT_EQ(prefetch_nodes(paths, {"/missing", "/missing/x", "/f/", "/a/b"}), (std::vector<uint32_t>{3, 2}));
}

}  // namespace
}  // namespace nydus::builder
