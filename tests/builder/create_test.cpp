// nydus-image create from a directory, checked through the independent
// reader paths (bootstrap reader, blob reader) and the source files.
#include "builder/create_image.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "common/test_util.h"
#include "format/blob_reader.h"
#include "format/bootstrap.h"
#include "format/image_reader.h"

namespace nydus::builder {
namespace {

namespace fs = std::filesystem;
using namespace nydus::format;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

CreateOptions options(const test::TempDir& t) {
  CreateOptions o;
  o.source = t / "src";
  o.bootstrap = t / "boot";
  o.blob_dir = t / "blobs";
  return o;
}

std::vector<uint8_t> read_all(ImageReader& img, const std::string& path) {
  auto nid = img.bootstrap().resolve(path);
  EXPECT_TRUE(nid) << path;
  auto ino = img.bootstrap().inode(*nid);
  std::vector<uint8_t> out;
  auto st = img.read_file(*ino, true, [&](uint64_t, std::span<const uint8_t> b) -> Status {
    out.insert(out.end(), b.begin(), b.end());
    return ok();
  });
  EXPECT_TRUE(st) << st.error().message;
  return out;
}

TEST(Create, IdenticalFilesAndChunksAreStoredOnce) {
  test::TempDir t;
  fs::create_directories(t / "src" / "d");
  auto data = random_bytes(3 * 4096 + 5, 1);
  test::write_file(t / "src" / "a", data);
  test::write_file(t / "src" / "d" / "b", data);  // same content, other path
  auto o = options(t);
  o.chunk_size = 4096;
  auto r = create_image(o);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->chunks_total, 8u);
  EXPECT_EQ(r->chunks_stored, 4u);
  auto img = ImageReader::open(t / "boot", {t / "blobs", {}});
  ASSERT_TRUE(img);
  EXPECT_EQ(read_all(**img, "/a"), data);
  EXPECT_EQ(read_all(**img, "/d/b"), data);
  // The blob is named by its sha256, computed here by coreutils' sha256sum over the
  // file, not taken from the builder's own report.
  std::string cmd = "sha256sum '" + r->blob_path.string() + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char hex[65] = {};
  ASSERT_EQ(std::fread(hex, 1, 64, p), 64u);
  ASSERT_EQ(::pclose(p), 0);
  EXPECT_EQ(r->blob_path.filename().string(), std::string(hex));
  EXPECT_EQ(r->blobs[0].blob_id, std::string(hex));
}

TEST(Create, PrefetchFilesComeFirstAndFillTheTable) {
  test::TempDir t;
  fs::create_directories(t / "src" / "etc");
  fs::create_directories(t / "src" / "usr" / "bin");
  test::write_file(t / "src" / "a-first-in-walk", random_bytes(10000, 2));
  test::write_file(t / "src" / "etc" / "conf", random_bytes(5000, 3));
  test::write_file(t / "src" / "usr" / "bin" / "tool", random_bytes(7000, 4));
  auto o = options(t);
  o.prefetch_patterns = {"/usr/bin", "/etc/conf", "/usr/bin/tool"};  // the last is covered by the first
  auto r = create_image(o);
  ASSERT_TRUE(r) << r.error().message;
  auto boot = Bootstrap::open(t / "boot");
  ASSERT_TRUE(boot);
  auto bin = (*boot)->resolve("/usr/bin");
  auto conf = (*boot)->resolve("/etc/conf");
  ASSERT_TRUE(bin && conf);
  EXPECT_EQ((*boot)->prefetch_nids(), (std::vector<uint32_t>{uint32_t(*bin), uint32_t(*conf)}));
  // Blob order: /usr/bin/tool, then /etc/conf, then the rest.
  auto tool = (*boot)->inode(*(*boot)->resolve("/usr/bin/tool"));
  auto conf_ino = (*boot)->inode(*conf);
  auto first = (*boot)->inode(*(*boot)->resolve("/a-first-in-walk"));
  EXPECT_EQ((*(*boot)->chunks(*tool))[0].blkaddr, 0u);
  EXPECT_EQ((*(*boot)->chunks(*conf_ino))[0].blkaddr, 2u);  // 7000 bytes -> 2 blocks
  EXPECT_EQ((*(*boot)->chunks(*first))[0].blkaddr, 4u);
}

// A tar's prefetch files go first too: their chunks are stored while the
// stream goes by, the others' set aside and stored after it. Checked against
// GNU tar's stream (the order of the listed files in it) and the source bytes:
// uncompressed, the blob's front is exactly the listed files' data.
TEST(Create, TarPrefetchFilesComeFirstInStreamOrder) {
  test::TempDir t;
  const std::vector<std::pair<std::string, size_t>> files = {
      {"a/one", 9000}, {"b/two", 70000}, {"a/three", 4096}, {"c/four", 300}, {"b/five", 150000}, {"a/six", 1}};
  std::string list;
  for (size_t i = 0; i < files.size(); i++) {
    fs::create_directories((t / "src" / files[i].first).parent_path());
    test::write_file(t / "src" / files[i].first, random_bytes(files[i].second, uint32_t(40 + i)));
    list += " " + files[i].first;
  }
  ASSERT_EQ(std::system(("tar -C '" + (t / "src").string() + "' -cf '" + (t / "l.tar").string() + "'" + list).c_str()), 0);
  struct Case {
    Compressor compressor;
    uint32_t batch;
    bool cache_dir;
  };
  for (Case c : {Case{Compressor::kNone, 0, false}, Case{Compressor::kZstd, 0, false}, Case{Compressor::kZstd, 0x10000, true}}) {
    auto o = options(t);
    o.source_type = SourceType::kTar;
    o.source = t / "l.tar";
    o.chunk_size = 0x10000;
    o.compressor = c.compressor;
    o.batch_size = c.batch;
    if (c.cache_dir) o.blob_cache_dir = t / "cache";
    fs::remove_all(t / "blobs");
    o.prefetch_patterns = {"/b", "/a/six"};  // b/two, b/five, a/six, in tar order
    auto r = create_image(o);
    ASSERT_TRUE(r) << r.error().message;
    auto img = ImageReader::open(t / "boot", {t / "blobs", {}});
    ASSERT_TRUE(img);
    for (auto& [path, size] : files)
      EXPECT_EQ(read_all(**img, "/" + path), test::read_file(t / "src" / path)) << path;
    if (c.compressor != Compressor::kNone) continue;
    std::vector<uint8_t> front;
    for (const char* p : {"b/two", "b/five", "a/six"}) {
      auto d = test::read_file(t / "src" / p);
      front.insert(front.end(), d.begin(), d.end());
    }
    auto blob = test::read_file(r->blob_path);
    ASSERT_GE(blob.size(), front.size());
    EXPECT_TRUE(std::equal(front.begin(), front.end(), blob.begin())) << "the listed files are not the blob's front";
  }
}

TEST(Create, RepeatableBuildsAreByteIdentical) {
  test::TempDir t;
  fs::create_directories(t / "src" / "x");
  test::write_file(t / "src" / "x" / "f", random_bytes(300000, 5));
  ASSERT_EQ(symlink("x/f", (t / "src" / "l").c_str()), 0);
  std::vector<std::vector<uint8_t>> boots, blobs;
  for (int i = 0; i < 2; i++) {
    auto o = options(t);
    o.bootstrap = t / ("boot" + std::to_string(i));
    o.blob_dir = t / ("blobs" + std::to_string(i));
    o.repeatable = true;
    o.threads = unsigned(i + 1);  // thread count must not change the output
    auto r = create_image(o);
    ASSERT_TRUE(r) << r.error().message;
    boots.push_back(test::read_file(o.bootstrap));
    blobs.push_back(test::read_file(r->blob_path));
  }
  EXPECT_EQ(boots[0], boots[1]);
  EXPECT_EQ(blobs[0], blobs[1]);
}

TEST(Create, TreeWithoutFileDataHasNoBlob) {
  test::TempDir t;
  fs::create_directories(t / "src" / "empty-dir");
  test::write_file(t / "src" / "empty-file", std::string());
  auto r = create_image(options(t));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->blobs.empty());
  auto boot = Bootstrap::open(t / "boot");
  ASSERT_TRUE(boot) << boot.error().message;
  EXPECT_TRUE((*boot)->blobs().empty());
  EXPECT_TRUE((*boot)->resolve("/empty-file"));
}

TEST(Create, InlinedBootstrapCarriesPlaceholderIds) {
  test::TempDir t;
  fs::create_directories(t / "src");
  auto data = random_bytes(70000, 6);
  test::write_file(t / "src" / "f", data);
  auto o = options(t);
  o.blob_inline_meta = true;
  auto r = create_image(o);
  ASSERT_TRUE(r) << r.error().message;
  auto blob = BlobFile::open(r->blob_path, r->blobs[0]);
  ASSERT_TRUE(blob) << blob.error().message;
  auto inl = blob->read_inlined_bootstrap();
  ASSERT_TRUE(inl) << inl.error().message;
  auto boot = Bootstrap::from_bytes(*inl);
  ASSERT_TRUE(boot) << boot.error().message;
  ASSERT_EQ((*boot)->blobs().size(), 1u);
  EXPECT_EQ((*boot)->blobs()[0].blob_id, std::string(64, 'x'));
  // Read the file through the inlined bootstrap and the blob file.
  auto img = ImageReader::open(*boot, {{}, r->blob_path});
  ASSERT_TRUE(img);
  EXPECT_EQ(read_all(**img, "/f"), data);
}

TEST(Create, RejectsBadOptions) {
  test::TempDir t;
  fs::create_directories(t / "src");
  auto o = options(t);
  o.chunk_size = 3000;
  EXPECT_FALSE(create_image(o));
  o.chunk_size = 1u << 25;
  EXPECT_FALSE(create_image(o));
  o = options(t);
  o.source = t / "missing";
  auto r = create_image(o);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("missing"), std::string::npos);
}

// --chunk-dict: chunks the dictionary image already has are referenced in
// its blob (which joins the blob table), not stored again; every file still
// reads back (through the blob reader, from both blobs).
TEST(Create, ChunkDictChunksAreReferencedNotStored) {
  test::TempDir t;
  fs::create_directories(t / "dict");
  fs::create_directories(t / "src");
  const auto shared = random_bytes(5 * 4096 + 7, 11);
  const auto fresh = random_bytes(2 * 4096, 12);
  test::write_file(t / "dict" / "s", shared);
  test::write_file(t / "src" / "same", shared);
  test::write_file(t / "src" / "new", fresh);
  CreateOptions d = options(t);
  d.source = t / "dict";
  d.bootstrap = t / "dict.boot";
  d.chunk_size = 4096;
  auto dr = create_image(d);
  ASSERT_TRUE(dr) << dr.error().message;

  CreateOptions o = options(t);
  o.chunk_size = 4096;
  o.chunk_dict = t / "dict.boot";
  auto r = create_image(o);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->chunks_from_dict, 6u);
  EXPECT_EQ(r->chunks_stored, 2u);
  auto img = ImageReader::open(o.bootstrap, BlobLocation{o.blob_dir, {}});
  ASSERT_TRUE(img);
  const auto& blobs = (*img)->bootstrap().blobs();
  ASSERT_EQ(blobs.size(), 2u);
  EXPECT_EQ(blobs[0].blob_id, r->blobs[0].blob_id) << "this build's blob first";
  EXPECT_EQ(blobs[1].blob_id, dr->blobs[0].blob_id) << "then the dictionary's";
  EXPECT_EQ(read_all(**img, "/same"), shared);
  EXPECT_EQ(read_all(**img, "/new"), fresh);

  // Everything in the dictionary: no blob of its own at all.
  fs::remove(t / "src" / "new");
  o.bootstrap = t / "all-dict.boot";
  auto r2 = create_image(o);
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_TRUE(r2->blobs.empty());
  auto img2 = ImageReader::open(o.bootstrap, BlobLocation{o.blob_dir, {}});
  ASSERT_TRUE(img2);
  ASSERT_EQ((*img2)->bootstrap().blobs().size(), 1u);
  EXPECT_EQ(read_all(**img2, "/same"), shared);

  // A dictionary with another digester cannot be used.
  o.digester = Digester::kSha256;
  EXPECT_FALSE(create_image(o));
}

}  // namespace
}  // namespace nydus::builder
