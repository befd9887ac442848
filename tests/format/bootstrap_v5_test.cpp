// RAFS v5 reader tests. The oracle is upstream's: each fixture's `.result`
// (a `tree -J` listing of the mounted image followed by `md5sum` of every
// file, written by upstream's test suite, not by us) and the raw bytes of the
// two upstream bootstraps. Hostile cases patch copies of the fixture at
// offsets read off its hexdump (layout: rafs-v6-format.md, "RAFS v5"):
//   0x2000 inode table (u32 offsets >> 3), 0x20d8 blob table, 0x2120 ext blob table,
//   0x2160 "/" (index 1), 0x21e8 /hardlink-test (index 2), 0x2ad0 .../VERSION
//   (index 14) and its chunk info at 0x2b58.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>

#include "common/test_util.h"
#include "format/bootstrap.h"
#include "format/bootstrap_v5.h"
#include "format/digest.h"
#include "format/image_reader.h"

namespace nydus::format {
namespace {

using test::fixtures_dir;

constexpr const char* kBlobId = "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00";
constexpr uint64_t kRoot = 0x2160, kHardlinkDir = 0x21e8, kVersion = 0x2ad0, kVersionChunk = 0x2b58;
// RafsV5Inode field offsets.
constexpr uint64_t kIChildIndex = 92, kIChildCount = 96, kINameSize = 100, kIMode = 60, kIFlags = 80;
// RafsV5ChunkInfo field offsets.
constexpr uint64_t kCBlobIndex = 32, kCFlags = 36, kCFileOffset = 64, kCIndex = 72;

std::filesystem::path v5_dir() { return fixtures_dir() / "v5"; }
std::vector<uint8_t> sha256_boot() { return test::read_file(v5_dir() / "sha256-nocompress-repeatable"); }

template <class T>
void put(std::vector<uint8_t>& b, uint64_t off, T v) {
  ASSERT_LE(off + sizeof(T), b.size());
  std::memcpy(b.data() + off, &v, sizeof(T));
}

// ---- the upstream listing ------------------------------------------------------

struct Expected {
  std::map<std::string, std::string> types;     // path -> directory/file/link
  std::map<std::string, std::string> targets;   // symlinks
  std::map<std::string, std::string> md5;       // files
};

// `tree -J` prints one entry per line, indented two spaces per level below
// the top-level array; the md5sum lines follow the JSON.
Expected read_result(const std::filesystem::path& p) {
  Expected e;
  std::ifstream in(p);
  std::string line;
  std::vector<std::string> stack;  // path of the directory at each depth
  const std::regex entry(R"re(^( *)\{"type":"(\w+)","name":"([^"]*)"(?:,"target":"([^"]*)")?)re");
  const std::regex sum(R"re(^([0-9a-f]{32})  (/.*)$)re");
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, entry)) {
      if (m[2] == "report") continue;
      const size_t depth = m[1].length() / 2 - 1;  // root at depth 0
      if (depth > stack.size()) continue;          // malformed: the comparison will show it
      stack.resize(depth);
      const std::string path = depth == 0 ? "/" : stack.back() + "/" + m[3].str();
      stack.push_back(depth == 0 ? "" : path);
      e.types[path] = m[2];
      if (m[4].matched) e.targets[path] = m[4];
    } else if (std::regex_match(line, m, sum)) {
      e.md5[m[2]] = m[1];
    }
  }
  return e;
}

std::string md5_hex(std::span<const uint8_t> data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_md5(), nullptr);
  return to_hex({out, len});
}

class V5Fixture : public ::testing::TestWithParam<const char*> {};

TEST_P(V5Fixture, TreeMatchesUpstreamListing) {
  NYDUS_REQUIRE_FIXTURES();
  const Expected want = read_result(v5_dir() / "sha256-nocompress-repeatable.result");
  ASSERT_EQ(want.types.size(), 54u);  // 24 dirs + 23 files + 7 links, as its report says (minus "..")
  auto b = Bootstrap::open(v5_dir() / GetParam());
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ((*b)->rafs_version(), 5u);
  ASSERT_EQ((*b)->blobs().size(), 1u);
  EXPECT_EQ((*b)->blobs()[0].blob_id, kBlobId);
  EXPECT_EQ((*b)->blobs()[0].chunk_count, 23u);
  EXPECT_EQ((*b)->chunk_size(), 0x100000u);
  std::map<std::string, std::string> got;
  std::map<std::string, uint64_t> nid_of;
  ASSERT_TRUE((*b)->walk([&](const std::string& p, const InodeView& v) -> Status {
    got[p] = v.is_dir() ? "directory" : v.is_symlink() ? "link" : v.is_reg() ? "file" : "other";
    nid_of[p] = v.nid;
    if (v.is_symlink()) {
      auto t = (*b)->read_link(v);
      if (!t) return std::unexpected(t.error());
      EXPECT_EQ(want.targets.count(p) ? want.targets.at(p) : "?", *t) << p;
    }
    return ok();
  }));
  EXPECT_EQ(got, want.types);
  // Hard links (one inode number in the v5 table, ino 5): one inode here.
  EXPECT_EQ(nid_of["/hardlink-test/foo"], nid_of["/hardlink-test/test.sh"]);
  EXPECT_EQ(nid_of["/hardlink-test/foo"], nid_of["/normal-file-test/test.sh"]);
  auto foo = (*b)->inode(nid_of["/hardlink-test/foo"]);
  ASSERT_TRUE(foo);
  EXPECT_EQ(foo->nlink, 3u);
  EXPECT_EQ(foo->mode, 0100775u);
  EXPECT_EQ(foo->size, 944u);
}

// Every file's bytes, read from the vendored blob through the bootstrap's
// chunks with digest verification, against upstream's md5sum list.
TEST_P(V5Fixture, FileBytesMatchUpstreamMd5) {
  NYDUS_REQUIRE_FIXTURES();
  const Expected want = read_result(v5_dir() / "sha256-nocompress-repeatable.result");
  ASSERT_EQ(want.md5.size(), 23u);
  auto r = ImageReader::open(v5_dir() / GetParam(), BlobLocation{v5_dir(), {}});
  ASSERT_TRUE(r) << r.error().message;
  size_t checked = 0;
  for (const auto& [path, md5] : want.md5) {
    auto nid = (*r)->bootstrap().resolve(path);
    ASSERT_TRUE(nid) << path;
    auto ino = (*r)->bootstrap().inode(*nid);
    ASSERT_TRUE(ino);
    std::vector<uint8_t> data(ino->size);
    auto st = (*r)->read_file(*ino, true, [&](uint64_t off, std::span<const uint8_t> part) -> Status {
      std::memcpy(data.data() + off, part.data(), part.size());
      return ok();
    });
    ASSERT_TRUE(st) << path << ": " << st.error().message;
    EXPECT_EQ(md5_hex(data), md5) << path;
    ++checked;
  }
  EXPECT_EQ(checked, 23u);
}

INSTANTIATE_TEST_SUITE_P(Upstream, V5Fixture,
                         ::testing::Values("sha256-nocompress-repeatable", "blake3-lz4_block-non_repeatable"));

TEST(BootstrapV5, SuperblockFlagsGiveAlgorithms) {
  NYDUS_REQUIRE_FIXTURES();
  auto a = Bootstrap::open(v5_dir() / "sha256-nocompress-repeatable");
  auto b = Bootstrap::open(v5_dir() / "blake3-lz4_block-non_repeatable");
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*a)->digester(), Digester::kSha256);
  EXPECT_EQ((*a)->compressor(), Compressor::kNone);
  EXPECT_EQ((*b)->digester(), Digester::kBlake3);
  // Despite its name, flags 0x5 = COMPRESSION_NONE | HASH_BLAKE3 (chunks stored raw).
  EXPECT_EQ((*b)->compressor(), Compressor::kNone);
  ASSERT_NE((*a)->v5_super_block(), nullptr);
  EXPECT_EQ((*a)->v5_super_block()->flags, 0x9u);
  EXPECT_EQ((*a)->v5_super_block()->inode_table_entries, 54u);
  EXPECT_EQ((*a)->source_size(), 18648u);
  ASSERT_EQ((*a)->v5_blobs().size(), 1u);
  EXPECT_EQ((*a)->v5_blobs()[0].uncompressed_size, 0x358a1eu);  // as recorded, unaligned
}

// ---- hostile images ---------------------------------------------------------------

Status open_mutated(std::vector<uint8_t> b) {
  auto r = Bootstrap::from_bytes(std::move(b));
  if (!r) return std::unexpected(r.error());
  return ok();
}

void expect_corrupt(std::vector<uint8_t> b, const std::string& words) {
  auto st = open_mutated(std::move(b));
  ASSERT_FALSE(st) << "expected an error mentioning '" << words << "'";
  EXPECT_EQ(st.error().code, Errc::kCorrupt) << st.error().message;
  EXPECT_NE(st.error().message.find(words), std::string::npos) << st.error().message;
}

TEST(BootstrapV5Hostile, ChildIndexPointingAtAncestorIsACycle) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = sha256_boot();
  put<uint32_t>(b, kHardlinkDir + kIChildIndex, 1);  // /hardlink-test's children := "/"
  expect_corrupt(b, "already in the tree");
  auto c = sha256_boot();
  put<uint32_t>(c, kRoot + kIChildIndex, 1);  // "/" lists itself
  expect_corrupt(c, "already in the tree");
}

TEST(BootstrapV5Hostile, ChildRangeOutsideInodeTable) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = sha256_boot();
  put<uint32_t>(b, kHardlinkDir + kIChildIndex, 53);
  put<uint32_t>(b, kHardlinkDir + kIChildCount, 5);  // 53..57 of 54
  expect_corrupt(b, "outside the inode table");
  auto c = sha256_boot();
  put<uint32_t>(c, kRoot + kIChildCount, 0xFFFFFFFFu);
  expect_corrupt(c, "outside the inode table");
}

TEST(BootstrapV5Hostile, InodeTableEntryOutsideFile) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = sha256_boot();
  put<uint32_t>(b, 0x2000 + 4, 0x10000000);  // index 2 at 2 GiB
  expect_corrupt(b, "outside the image");
  auto c = sha256_boot();
  put<uint32_t>(c, 0x2000 + 4, 1);  // index 2 inside the superblock
  expect_corrupt(c, "outside the image");
}

TEST(BootstrapV5Hostile, OverlongOrBadNames) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = sha256_boot();
  put<uint16_t>(b, kVersion + kINameSize, 300);
  expect_corrupt(b, "name size");
  auto c = sha256_boot();
  c[kVersion + 128 + 2] = '/';  // "VE/SION"
  expect_corrupt(c, "invalid file name");
  auto d = sha256_boot();
  std::memcpy(d.data() + kVersion + 128, "..\0\0\0\0\0", 7);
  expect_corrupt(d, "invalid file name");
}

TEST(BootstrapV5Hostile, ChunkFieldsOutOfRange) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = sha256_boot();
  put<uint32_t>(b, kVersionChunk + kCBlobIndex, 7);
  expect_corrupt(b, "blob index 7 out of range");
  auto c = sha256_boot();
  put<uint32_t>(c, kVersionChunk + kCIndex, 23);  // blob has 23 chunks
  expect_corrupt(c, "ci index 23");
  auto d = sha256_boot();
  put<uint64_t>(d, kVersionChunk + kCFileOffset, 4096);
  expect_corrupt(d, "file offset");
  auto e = sha256_boot();
  put<uint32_t>(e, kVersionChunk + kCFlags, 0x1000);
  expect_corrupt(e, "unknown flags");
  // Same ci index as another file's chunk, but other offsets: inconsistent.
  auto f = sha256_boot();
  put<uint32_t>(f, kVersionChunk + kCIndex, 0);
  expect_corrupt(f, "described differently");
}

TEST(BootstrapV5Hostile, TablesAndSuperblock) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = sha256_boot();
  put<uint32_t>(b, 0x40, 0x7FFFFFFF);  // blob table size
  expect_corrupt(b, "RAFS v5 blob table");
  auto c = sha256_boot();
  put<uint32_t>(c, 0x38, 0x40000000);  // inode table entries
  expect_corrupt(c, "RAFS v5 inode table");
  auto x = sha256_boot();
  put<uint64_t>(x, 0x48, 0x7FFFFFFF);  // extended blob table offset
  expect_corrupt(x, "extended blob table");
  auto y = sha256_boot();
  put<uint64_t>(y, 0x30, 0x2000);  // blob table over the inode table
  expect_corrupt(y, "RAFS v5 blob table");
  auto d = sha256_boot();
  put<uint32_t>(d, 0x8, 4096);  // sb_size
  expect_corrupt(d, "sb_size");
  auto e = sha256_boot();
  put<uint64_t>(e, 0x10, 0x3);  // two compressors, no digester
  expect_corrupt(e, "exactly one");
  auto f = sha256_boot();
  f.resize(0x3000);  // inodes past the end
  expect_corrupt(f, "outside the image");
  auto g = sha256_boot();
  put<uint32_t>(g, kRoot + kIMode, 0100644);  // root is a file (its 3 "chunks" fail first)
  expect_corrupt(g, "RAFS v5 inode 1:");
  auto h = sha256_boot();
  put<uint32_t>(h, kRoot + kIMode, 0120777);  // root is a symlink without a target
  expect_corrupt(h, "RAFS v5 inode 1:");
}

TEST(BootstrapV5Hostile, SparseFileIsUnsupportedNotACrash) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = sha256_boot();
  put<uint64_t>(b, kVersion + kIFlags, 0x8);  // HAS_HOLE
  put<uint64_t>(b, kVersion + 64, 3u << 20);  // 3 MiB with one chunk
  auto st = open_mutated(b);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kUnsupported) << st.error().message;
}

// Random byte flips and truncations over the whole image: errors only.
TEST(BootstrapV5Hostile, RandomMutationsNeverCrash) {
  NYDUS_REQUIRE_FIXTURES();
  const auto base = sha256_boot();
  std::mt19937_64 rng(15);
  int opened = 0;
  for (int round = 0; round < 3000; ++round) {
    auto b = base;
    const int flips = 1 + int(rng() % 8);
    for (int i = 0; i < flips; ++i) {
      // Mostly in the metadata after the superblock, sometimes in its header.
      const uint64_t off = (rng() % 4 == 0) ? rng() % 96 : 0x2000 + rng() % (b.size() - 0x2000);
      b[off] = uint8_t(rng());
    }
    if (rng() % 16 == 0) b.resize(b.size() - 8 * (1 + rng() % 100));
    auto r = Bootstrap::from_bytes(std::move(b));
    if (!r) continue;
    ++opened;
    // What opens must also walk and read without crashing.
    (void)(*r)->walk([&](const std::string&, const InodeView& v) -> Status {
      if (v.is_reg()) (void)(*r)->chunks(v);
      if (v.is_symlink()) (void)(*r)->read_link(v);
      (void)(*r)->xattrs(v);
      return ok();
    });
  }
  EXPECT_GT(opened, 0);  // many flips hit digests and padding
}

}  // namespace
}  // namespace nydus::format
