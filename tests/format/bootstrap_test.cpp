// Bootstrap reader tests. Expected values come from the upstream fixtures and
// their independent inspector dumps (v6/*.inspect.txt), not from this reader.
// Corruption tests patch copies of the fixture at offsets derived from the
// spec (docs §2/§3) and the hexdump of rafs-v6-2.2.boot:
//   0x400 superblock, 0x480 ext superblock, 0x580 device slot 0,
//   0x1000 blob table, 0x2000 meta area, 0x3000 root inode (nid 128, inline
//   dirents at 0x3040), 0x30a0 /lib.rs (nid 133), 0x3100 /sync_io.rs (nid 136),
//   0x4000 chunk table.
#include "format/bootstrap.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include "common/test_util.h"
#include "format/digest.h"

namespace nydus::format {
namespace {

using test::fixtures_dir;

std::filesystem::path v6_boot() { return fixtures_dir() / "v6" / "rafs-v6-2.2.boot"; }
std::filesystem::path inlined_boot() {
  return fixtures_dir() / "v6" / "2fa78cad-inlined-image.boot.DERIVED";
}


template <class T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
  ASSERT_LE(off + sizeof(T), b.size());
  std::memcpy(b.data() + off, &v, sizeof(T));
}

std::vector<uint8_t> fixture_bytes() { return test::read_file(v6_boot()); }

Result<std::shared_ptr<Bootstrap>> open_bytes(std::vector<uint8_t> b) {
  return Bootstrap::from_bytes(std::move(b));
}

struct Listing {
  std::vector<std::string> paths;
  std::map<std::string, InodeView> inodes;
};

Result<Listing> list(const Bootstrap& b) {
  Listing l;
  NYDUS_TRY(b.walk([&](const std::string& p, const InodeView& v) -> Status {
    l.paths.push_back(p);
    l.inodes[p] = v;
    return ok();
  }));
  return l;
}

// ---- fixture: rafs-v6-2.2.boot ------------------------------------------------

TEST(BootstrapFixture, SuperblockAndBlobTable) {
  NYDUS_REQUIRE_FIXTURES();
  auto r = Bootstrap::open(v6_boot());
  ASSERT_TRUE(r) << r.error().to_string();
  const Bootstrap& b = **r;
  EXPECT_EQ(b.bytes().size(), 20480u);
  EXPECT_EQ(b.root_nid(), 128u);
  EXPECT_EQ(b.super_block().inos, 3u);
  EXPECT_EQ(b.super_block().blocks, 9u);
  EXPECT_EQ(b.super_block().meta_blkaddr, 2u);
  EXPECT_EQ(b.super_block().extra_devices, 1u);
  EXPECT_EQ(b.meta_offset(), 0x2000u);
  EXPECT_EQ(b.flags(), 0x194u);
  EXPECT_EQ(b.chunk_size(), 0x100000u);
  EXPECT_EQ(b.compressor(), Compressor::kZstd);
  EXPECT_EQ(b.digester(), Digester::kBlake3);
  EXPECT_EQ(b.ext_super_block().blob_table_offset, 0x1000u);
  EXPECT_EQ(b.ext_super_block().chunk_table_offset, 0x4000u);
  EXPECT_TRUE(b.prefetch_nids().empty());

  ASSERT_EQ(b.blobs().size(), 1u);
  const BlobInfo& blob = b.blobs()[0];
  EXPECT_EQ(blob.blob_id, "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef");
  EXPECT_EQ(blob.chunk_size, 1048576u);
  EXPECT_EQ(blob.chunk_count, 2u);
  EXPECT_EQ(blob.compressor, Compressor::kZstd);
  EXPECT_EQ(blob.digester, Digester::kBlake3);
  EXPECT_EQ(blob.features, 1879048225u);
  EXPECT_EQ(blob.compressed_size, 14554u);
  EXPECT_EQ(blob.uncompressed_size, 36864u);
  EXPECT_EQ(blob.toc_size, 1024u);
  EXPECT_EQ(blob.ci_compressor, Compressor::kNone);
  EXPECT_EQ(blob.ci_offset, 8314u);
  EXPECT_EQ(blob.ci_compressed_size, 32u);
  EXPECT_EQ(blob.ci_uncompressed_size, 32u);
  EXPECT_EQ(to_hex(blob.toc_digest), "cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde");
  EXPECT_EQ(blob.mapped_blkaddr, 512u);
}

TEST(BootstrapFixture, ChunkTable) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = Bootstrap::open(v6_boot());
  ASSERT_TRUE(b) << b.error().to_string();
  auto t = (*b)->chunk_table();
  ASSERT_TRUE(t) << t.error().to_string();
  ASSERT_EQ(t->size(), 2u);
  const ChunkRecord& a = (*t)[0];
  EXPECT_EQ(to_hex(a.digest), "812465bcc9e88393598311dc5fc93abaeccef0185bcd99f9701d17ebdf9adc3f");
  EXPECT_EQ(a.blob_index, 0u);
  EXPECT_TRUE(a.compressed);
  EXPECT_FALSE(a.has_crc32);
  EXPECT_EQ(a.compressed_size, 2974u);
  EXPECT_EQ(a.uncompressed_size, 13400u);
  EXPECT_EQ(a.compressed_offset, 4828u);
  EXPECT_EQ(a.uncompressed_offset, 20480u);
  EXPECT_EQ(a.ci_index, 1u);
  const ChunkRecord& c = (*t)[1];
  EXPECT_EQ(to_hex(c.digest), "f7e2735f1c6ae9cde91e537416b09d8bb71b306a421d19cc1012a51f93a7fe69");
  EXPECT_EQ(c.compressed_size, 4828u);
  EXPECT_EQ(c.uncompressed_size, 16931u);
  EXPECT_EQ(c.compressed_offset, 0u);
  EXPECT_EQ(c.uncompressed_offset, 0u);
  EXPECT_EQ(c.ci_index, 0u);
}

TEST(BootstrapFixture, TreeInodesAndChunks) {
  NYDUS_REQUIRE_FIXTURES();
  auto r = Bootstrap::open(v6_boot());
  ASSERT_TRUE(r) << r.error().to_string();
  const Bootstrap& b = **r;

  auto l = list(b);
  ASSERT_TRUE(l) << l.error().to_string();
  EXPECT_EQ(l->paths, (std::vector<std::string>{"/", "/lib.rs", "/sync_io.rs"}));

  const InodeView& root = l->inodes["/"];
  EXPECT_EQ(root.nid, 128u);
  EXPECT_EQ(root.offset, 0x3000u);
  EXPECT_TRUE(root.is_dir());
  EXPECT_TRUE(root.extended);
  EXPECT_EQ(root.layout, DataLayout::kFlatInline);
  EXPECT_EQ(root.mode, 040755u);
  EXPECT_EQ(root.size, 67u);
  EXPECT_EQ(root.nlink, 2u);
  EXPECT_EQ(root.mtime, 0u);

  const InodeView& lib = l->inodes["/lib.rs"];
  EXPECT_EQ(lib.nid, 133u);
  EXPECT_TRUE(lib.is_reg());
  EXPECT_EQ(lib.layout, DataLayout::kChunkBased);
  EXPECT_EQ(lib.mode, 0100644u);
  EXPECT_EQ(lib.size, 16931u);
  EXPECT_EQ(lib.u, 0x28u);
  EXPECT_EQ(lib.ino, 2u);
  EXPECT_EQ(lib.nlink, 1u);
  EXPECT_EQ(lib.uid, 0u);
  EXPECT_EQ(lib.gid, 0u);
  EXPECT_EQ(lib.mtime, 1676819553u);
  EXPECT_EQ(lib.mtime_nsec, 628661334u);
  EXPECT_EQ(lib.xattr_size, 0u);

  const InodeView& sio = l->inodes["/sync_io.rs"];
  EXPECT_EQ(sio.nid, 136u);
  EXPECT_EQ(sio.size, 13400u);
  EXPECT_EQ(sio.ino, 3u);
  EXPECT_EQ(sio.mtime, 1676819553u);
  EXPECT_EQ(sio.mtime_nsec, 628993084u);

  auto c1 = b.chunks(lib);
  ASSERT_TRUE(c1) << c1.error().to_string();
  ASSERT_EQ(c1->size(), 1u);
  EXPECT_EQ((*c1)[0].blob_index, 0u);
  EXPECT_EQ((*c1)[0].ci_index, 0u);
  EXPECT_EQ((*c1)[0].blkaddr, 0u);
  auto c2 = b.chunks(sio);
  ASSERT_TRUE(c2) << c2.error().to_string();
  ASSERT_EQ(c2->size(), 1u);
  EXPECT_EQ((*c2)[0].blob_index, 0u);
  EXPECT_EQ((*c2)[0].ci_index, 1u);
  EXPECT_EQ((*c2)[0].blkaddr, 5u);

  // Chunk-table invariant (§3.4): blkaddr * 4096 == uncompressed offset of the ci entry.
  auto t = b.chunk_table();
  ASSERT_TRUE(t);
  for (const auto* cs : {&*c1, &*c2}) {
    bool found = false;
    for (const auto& rec : *t)
      if (rec.ci_index == (*cs)[0].ci_index) found = rec.uncompressed_offset == uint64_t((*cs)[0].blkaddr) * 4096;
    EXPECT_TRUE(found);
  }

  auto xs = b.xattrs(lib);
  ASSERT_TRUE(xs);
  EXPECT_TRUE(xs->empty());
  EXPECT_EQ(b.read_link(lib).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(b.chunks(root).error().code, Errc::kInvalidArgument);
}

TEST(BootstrapFixture, DirentsLookupResolve) {
  NYDUS_REQUIRE_FIXTURES();
  auto r = Bootstrap::open(v6_boot());
  ASSERT_TRUE(r) << r.error().to_string();
  const Bootstrap& b = **r;
  auto root = b.inode(128);
  ASSERT_TRUE(root);

  std::vector<std::tuple<std::string, uint64_t, FileType>> ents;
  ASSERT_TRUE(b.for_each_dirent(*root, [&](const DirEntryView& e) {
    ents.emplace_back(std::string(e.name), e.nid, e.type);
    return true;
  }));
  using T = std::tuple<std::string, uint64_t, FileType>;
  EXPECT_EQ(ents, (std::vector<T>{T{".", 128, FileType::kDirectory}, T{"..", 128, FileType::kDirectory},
                                  T{"lib.rs", 133, FileType::kRegular},
                                  T{"sync_io.rs", 136, FileType::kRegular}}));

  // Early stop.
  int n = 0;
  ASSERT_TRUE(b.for_each_dirent(*root, [&](const DirEntryView&) { return ++n < 2; }));
  EXPECT_EQ(n, 2);

  for (const auto& [name, nid, type] : ents) {
    auto e = b.lookup(*root, name);
    ASSERT_TRUE(e) << e.error().to_string();
    ASSERT_TRUE(e->has_value()) << name;
    EXPECT_EQ((*e)->nid, nid);
    EXPECT_EQ((*e)->name, name);
  }
  for (const char* missing : {"", "a", "lib.r", "lib.rs0", "zzz", "-x", "sync_io.rs/"}) {
    auto e = b.lookup(*root, missing);
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->has_value()) << missing;
  }

  EXPECT_EQ(b.resolve("/").value(), 128u);
  EXPECT_EQ(b.resolve("/lib.rs").value(), 133u);
  EXPECT_EQ(b.resolve("//sync_io.rs").value(), 136u);
  EXPECT_EQ(b.resolve("/./lib.rs").value(), 133u);
  EXPECT_EQ(b.resolve("/nope").error().code, Errc::kNotFound);
  EXPECT_EQ(b.resolve("/lib.rs/x").error().code, Errc::kNotFound);
  EXPECT_EQ(b.resolve("lib.rs").error().code, Errc::kInvalidArgument);

  // The root's inline dirents are readable as data; ranges past i_size are not.
  auto d = b.data_range(*root, 0, 67);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->data(), b.bytes().data() + 0x3040);
  EXPECT_FALSE(b.data_range(*root, 60, 8));
}

TEST(BootstrapFixture, WalkPropagatesCallbackError) {
  NYDUS_REQUIRE_FIXTURES();
  auto r = Bootstrap::open(v6_boot());
  ASSERT_TRUE(r);
  std::vector<std::string> seen;
  auto st = (*r)->walk([&](const std::string& p, const InodeView&) -> Status {
    seen.push_back(p);
    if (p == "/lib.rs") return errorf(Errc::kNoSpace, "stop here");
    return ok();
  });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kNoSpace);
  EXPECT_EQ(seen, (std::vector<std::string>{"/", "/lib.rs"}));
}

TEST(BootstrapFixture, InlinedBootstrap) {
  NYDUS_REQUIRE_FIXTURES();
  auto r = Bootstrap::open(inlined_boot());
  ASSERT_TRUE(r) << r.error().to_string();
  const Bootstrap& b = **r;
  EXPECT_EQ(b.flags(), 0x94u);
  EXPECT_EQ(b.super_block().inos, 4u);
  ASSERT_EQ(b.blobs().size(), 1u);
  EXPECT_EQ(b.blobs()[0].blob_id, "d788a0eac4ff9779bc2eae3842117a918d847d90fddbea1503f7c5296a4a7de3");
  EXPECT_EQ(b.blobs()[0].features, 1u);
  EXPECT_EQ(b.blobs()[0].chunk_count, 3u);
  EXPECT_EQ(b.blobs()[0].uncompressed_size, 12288u);
  EXPECT_EQ(b.blobs()[0].ci_offset, 3341u);
  EXPECT_EQ(b.blobs()[0].mapped_blkaddr, 0u);

  auto l = list(b);
  ASSERT_TRUE(l) << l.error().to_string();
  EXPECT_EQ(l->paths, (std::vector<std::string>{"/", "/error.rs", "/lib.rs", "/logger.rs"}));
  EXPECT_EQ(l->inodes["/"].size, 86u);
  struct Want { const char* path; uint64_t nid, size; uint32_t ci, blk; };
  for (const Want& w : {Want{"/error.rs", 133, 2816, 0, 0}, Want{"/lib.rs", 136, 678, 1, 1},
                        Want{"/logger.rs", 139, 3115, 2, 2}}) {
    const InodeView& v = l->inodes[w.path];
    EXPECT_EQ(v.nid, w.nid) << w.path;
    EXPECT_EQ(v.size, w.size) << w.path;
    EXPECT_EQ(v.mode, 0100644u);
    auto c = b.chunks(v);
    ASSERT_TRUE(c);
    ASSERT_EQ(c->size(), 1u);
    EXPECT_EQ((*c)[0].ci_index, w.ci) << w.path;
    EXPECT_EQ((*c)[0].blkaddr, w.blk) << w.path;
    EXPECT_EQ(b.resolve(w.path).value(), w.nid);
  }
  EXPECT_EQ(l->inodes["/lib.rs"].mtime, 1667567839u);
  EXPECT_EQ(l->inodes["/lib.rs"].mtime_nsec, 54771639u);

  auto t = b.chunk_table();
  ASSERT_TRUE(t);
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ(to_hex((*t)[0].digest), "28f73b404339f55338edbdf54f1bf877af7a89dfc0c9a1e7d57168d110c7f951");
  EXPECT_EQ((*t)[0].uncompressed_offset, 4096u);
  EXPECT_EQ((*t)[2].uncompressed_size, 2816u);
  EXPECT_EQ((*t)[2].compressed_size, 1211u);
}

TEST(BootstrapFixture, FromBytesEqualsOpen) {
  NYDUS_REQUIRE_FIXTURES();
  auto a = Bootstrap::open(v6_boot());
  auto b = open_bytes(fixture_bytes());
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*b)->resolve("/sync_io.rs").value(), 136u);
  EXPECT_EQ((*a)->blobs()[0].blob_id, (*b)->blobs()[0].blob_id);
}

TEST(BootstrapFixture, ReleasingResidentPagesKeepsTheBytes) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = Bootstrap::open(v6_boot());
  ASSERT_TRUE(b) << b.error().to_string();
  const std::vector<uint8_t> file = fixture_bytes();
  auto bytes = (*b)->bytes();
  ASSERT_EQ(bytes.size(), file.size());
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), file.begin()));  // every page touched
  EXPECT_GT(test::mapping_rss_kb(bytes.data()), 0);
  (*b)->release_resident_pages();
  EXPECT_EQ(test::mapping_rss_kb(bytes.data()), 0);
  // The pages come back from the page cache on the next access.
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), file.begin()));
  EXPECT_EQ((*b)->resolve("/sync_io.rs").value(), 136u);
  // Bytes held in memory are not released.
  auto owned = open_bytes(fixture_bytes());
  ASSERT_TRUE(owned);
  (*owned)->release_resident_pages();
  EXPECT_EQ((*owned)->resolve("/sync_io.rs").value(), 136u);
}

// (RAFS v5 files open too: bootstrap_v5_test.cpp.)
TEST(BootstrapOpen, MissingFile) {
  auto r = Bootstrap::open("/nonexistent/dir/image.boot");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kIo);
}

// A plain EROFS image (Debian's mkfs.erofs) is not RAFS: no compat bit.
TEST(BootstrapOpen, RejectsPlainErofs) {
  if (std::system("command -v mkfs.erofs >/dev/null 2>&1") != 0) NYDUS_SKIP_UNLESS_CI("no mkfs.erofs");
  test::TempDir tmp;
  std::filesystem::create_directory(tmp / "src");
  test::write_file(tmp / "src" / "hello.txt", std::string("hello\n"));
  const std::string cmd = "mkfs.erofs '" + (tmp / "img").string() + "' '" +
                          (tmp / "src").string() + "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "mkfs.erofs failed";
  auto r = Bootstrap::open(tmp / "img");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnsupported);
  EXPECT_NE(r.error().message.find("RAFS v6 compat bit"), std::string::npos) << r.error().message;
  // With the compat bit forced on it is still no RAFS (checksum, incompat, no ext sb).
  auto bytes = test::read_file(tmp / "img");
  ASSERT_GE(bytes.size(), 4096u);
  bytes[0x40b] |= 0x40;
  auto r2 = open_bytes(bytes);
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().code, Errc::kCorrupt) << r2.error().to_string();
}

// ---- corruption --------------------------------------------------------------------

// Expect open() of patched bytes to fail with `code` and a message containing `needle`.
void expect_open_fails(std::vector<uint8_t> bytes, Errc code, const std::string& needle) {
  auto r = open_bytes(std::move(bytes));
  ASSERT_FALSE(r) << "opened although it should fail with: " << needle;
  EXPECT_EQ(r.error().code, code) << r.error().to_string();
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
}

TEST(BootstrapCorrupt, Truncated) {
  NYDUS_REQUIRE_FIXTURES();
  const auto full = fixture_bytes();
  for (size_t len : {size_t(0), size_t(100), size_t(1100), size_t(4095), size_t(4096),
                     size_t(8192), size_t(12288), size_t(16384), size_t(20479)}) {
    std::vector<uint8_t> b(full.begin(), full.begin() + len);
    auto r = open_bytes(b);
    EXPECT_FALSE(r) << "length " << len;
    if (!r) {
      EXPECT_EQ(r.error().code, Errc::kCorrupt) << len << ": " << r.error().to_string();
    }
  }
  // Chunk table cut off (16384 keeps the inodes but loses the table).
  std::vector<uint8_t> b(full.begin(), full.begin() + 16384);
  expect_open_fails(b, Errc::kCorrupt, "chunk table");
  // Via open() as well: a truncated file on disk.
  test::TempDir tmp;
  test::write_file(tmp / "short.boot", std::vector<uint8_t>(full.begin(), full.begin() + 3000));
  auto r = Bootstrap::open(tmp / "short.boot");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
}

TEST(BootstrapCorrupt, SuperblockFields) {
  NYDUS_REQUIRE_FIXTURES();
  const auto orig = fixture_bytes();
  {
    auto b = orig;
    put<uint32_t>(b, 0x400, 0x12345678);
    expect_open_fails(b, Errc::kCorrupt, "bad magic");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x408, 0);
    expect_open_fails(b, Errc::kUnsupported, "compat bit");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x404, 0xdeadbeef);
    expect_open_fails(b, Errc::kCorrupt, "checksum");
  }
  {
    auto b = orig;
    // 512-byte blocks belong to TARFS mode only (upstream's tar-tarfs).
    put<uint8_t>(b, 0x40c, 9);
    expect_open_fails(b, Errc::kCorrupt, "TARFS mode flag");
  }
  {
    auto b = orig;
    uint64_t flags;
    std::memcpy(&flags, b.data() + 0x480, 8);
    put<uint64_t>(b, 0x480, flags | 0x200);  // TARFS_MODE with 4096-byte blocks
    expect_open_fails(b, Errc::kCorrupt, "TARFS mode flag");
  }
  {
    auto b = orig;
    put<uint8_t>(b, 0x40c, 13);
    expect_open_fails(b, Errc::kCorrupt, "blkszbits");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x450, 0x0C | 0x80);  // + 48BIT
    expect_open_fails(b, Errc::kUnsupported, "incompat");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x450, 0x4);  // DEVICE_TABLE missing
    expect_open_fails(b, Errc::kCorrupt, "incompat");
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x458, 12);
    expect_open_fails(b, Errc::kCorrupt, "devt_slotoff");
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x456, 255);
    expect_open_fails(b, Errc::kCorrupt, "devices");
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x456, 2);  // two devices but one blob table entry
    expect_open_fails(b, Errc::kCorrupt, "blob table size");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x428, 100);  // meta_blkaddr past EOF
    expect_open_fails(b, Errc::kCorrupt, "meta_blkaddr");
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x40e, 133);  // root nid -> regular file
    expect_open_fails(b, Errc::kCorrupt, "not a directory");
  }
}

TEST(BootstrapCorrupt, ExtSuperblockAndBlobTable) {
  NYDUS_REQUIRE_FIXTURES();
  const auto orig = fixture_bytes();
  {
    auto b = orig;
    put<uint64_t>(b, 0x480, 0x194 | 0x2);  // zstd + lz4
    expect_open_fails(b, Errc::kCorrupt, "exactly one compressor");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x480, 0x194 | 0x8);  // blake3 + sha256
    expect_open_fails(b, Errc::kCorrupt, "exactly one digester");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x480, 0x194 | 0x1000);
    expect_open_fails(b, Errc::kCorrupt, "unknown flags");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x494, 0x100001);
    expect_open_fails(b, Errc::kCorrupt, "power of two");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x494, 0x800);  // power of two but too small
    expect_open_fails(b, Errc::kCorrupt, "power of two");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x494, 0x200000);  // valid, but differs from the blob's
    expect_open_fails(b, Errc::kCorrupt, "chunk_size");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x488, 0x100000);
    expect_open_fails(b, Errc::kCorrupt, "blob table");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x488, ~uint64_t(0) - 10);  // offset + size overflows
    expect_open_fails(b, Errc::kCorrupt, "blob table");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x1040, 1);
    expect_open_fails(b, Errc::kCorrupt, "blob_index");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x104c, 7);  // compression_algo
    expect_open_fails(b, Errc::kCorrupt, "compression");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x1054, 0x70000021 | 0x4000);  // unknown incompat feature
    expect_open_fails(b, Errc::kCorrupt, "features");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x1060, 36864 + 1);  // uncompressed_size not 4K multiple
    expect_open_fails(b, Errc::kCorrupt, "uncompressed_size");
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x1048, (1u << 24) + 1);  // chunk_count
    expect_open_fails(b, Errc::kCorrupt, "chunk_count");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x1070, ~uint64_t(0) - 4);  // ci_offset + ci_compressed_size overflows
    expect_open_fails(b, Errc::kCorrupt, "overflows");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x1080, 48);  // ci_uncompressed_size != 16 * chunk_count
    expect_open_fails(b, Errc::kCorrupt, "ci_uncompressed_size");
  }
  {
    auto b = orig;
    b[0x580] = 'a';  // device slot tag differs from blob id
    expect_open_fails(b, Errc::kCorrupt, "device slot tag");
  }
  {
    auto b = orig;
    const char evil[] = "../../etc/passwd";
    std::memset(b.data() + 0x1000, 0, 64);
    std::memcpy(b.data() + 0x1000, evil, sizeof(evil) - 1);
    std::memset(b.data() + 0x580, 0, 64);
    std::memcpy(b.data() + 0x580, evil, sizeof(evil) - 1);
    expect_open_fails(b, Errc::kCorrupt, "invalid blob id");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x4a0, 150);  // chunk table size not a multiple of 80
    expect_open_fails(b, Errc::kCorrupt, "chunk table");
  }
  {
    auto b = orig;
    put<uint64_t>(b, 0x4a8, 0x1100);
    put<uint32_t>(b, 0x4b0, 6);  // prefetch size not a multiple of 4
    expect_open_fails(b, Errc::kCorrupt, "prefetch");
  }
}

TEST(BootstrapCorrupt, PrefetchTable) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = fixture_bytes();
  // Put a prefetch table in the zero area after the blob table: {128, 133, 0, 136}.
  put<uint64_t>(b, 0x4a8, 0x1100);
  put<uint32_t>(b, 0x4b0, 16);
  put<uint32_t>(b, 0x1100, 128);
  put<uint32_t>(b, 0x1104, 133);
  put<uint32_t>(b, 0x110c, 136);
  auto r = open_bytes(b);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ((*r)->prefetch_nids(), (std::vector<uint32_t>{128, 133}));
  put<uint64_t>(b, 0x4a8, 20480 - 8);  // past EOF
  expect_open_fails(b, Errc::kCorrupt, "prefetch table");
}

TEST(BootstrapCorrupt, ChunkTableRecords) {
  NYDUS_REQUIRE_FIXTURES();
  const auto orig = fixture_bytes();
  for (auto [off, val, needle] : {std::tuple<size_t, uint32_t, const char*>{0x4020, 1, "blob index"},
                                  {0x4024, 0x100, "unknown flags"},
                                  {0x4048, 2, "ci index"},
                                  {0x402c, 0, "uncompressed size"}}) {
    auto b = orig;
    put<uint32_t>(b, off, val);
    auto r = open_bytes(b);
    ASSERT_TRUE(r) << r.error().to_string();  // records are decoded lazily
    auto t = (*r)->chunk_table();
    ASSERT_FALSE(t) << needle;
    EXPECT_EQ(t.error().code, Errc::kCorrupt);
    EXPECT_NE(t.error().message.find(needle), std::string::npos) << t.error().message;
  }
}

TEST(BootstrapCorrupt, DirentNidOutOfRange) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = fixture_bytes();
  put<uint64_t>(b, 0x3058, 0xFFFFFFFFFFull);  // lib.rs -> far beyond the image
  auto r = open_bytes(b);
  ASSERT_TRUE(r) << r.error().to_string();
  auto e = (*r)->lookup(*(*r)->inode(128), "lib.rs");
  ASSERT_TRUE(e && e->has_value());
  auto ino = (*r)->inode((*e)->nid);
  ASSERT_FALSE(ino);
  EXPECT_EQ(ino.error().code, Errc::kCorrupt);
  EXPECT_NE(ino.error().message.find("beyond image"), std::string::npos);
  auto w = list(**r);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, Errc::kCorrupt);
  EXPECT_NE(w.error().message.find("/lib.rs"), std::string::npos) << w.error().message;
  EXPECT_FALSE((*r)->inode(~uint64_t(0)));
  EXPECT_FALSE((*r)->inode((20480 - 0x2000) / 32));  // first nid past EOF
  EXPECT_FALSE((*r)->inode((20480 - 0x2000) / 32 - 1));  // last slot: 32 < 64 bytes
}

TEST(BootstrapCorrupt, DirentNameoffGarbage) {
  NYDUS_REQUIRE_FIXTURES();
  const auto orig = fixture_bytes();
  // First nameoff at 0x3048 (48): not multiple of 12, too small, beyond the block,
  // then a later nameoff going backwards / beyond the directory.
  for (auto [off, val] : {std::pair<size_t, uint16_t>{0x3048, 7}, {0x3048, 0}, {0x3048, 0xFFFF},
                          {0x3048, 60}, {0x3060, 0x10}, {0x3060, 0x31}, {0x306c, 0x500},
                          {0x306c, 67}}) {
    auto b = orig;
    put<uint16_t>(b, off, val);
    auto r = open_bytes(b);
    ASSERT_TRUE(r) << r.error().to_string();
    auto root = (*r)->inode(128);
    ASSERT_TRUE(root);
    auto st = (*r)->for_each_dirent(*root, [](const DirEntryView&) { return true; });
    ASSERT_FALSE(st) << std::hex << off << "=" << val;
    EXPECT_EQ(st.error().code, Errc::kCorrupt);
    EXPECT_NE(st.error().message.find("inode 128"), std::string::npos) << st.error().message;
    EXPECT_FALSE(list(**r));
  }
  {
    auto b = orig;
    b[0x3077] = 0;  // "lib.rs" (at 0x3073) -> "lib." + NUL: name cut at the NUL
    auto r = open_bytes(b);
    ASSERT_TRUE(r);
    auto e = (*r)->lookup(*(*r)->inode(128), "lib.");
    ASSERT_TRUE(e);
    EXPECT_TRUE(e->has_value());
  }
  {
    auto b = orig;
    b[0x3074] = '/';  // name with a slash
    auto r = open_bytes(b);
    ASSERT_TRUE(r);
    EXPECT_FALSE(list(**r));
  }
  {
    auto b = orig;
    b[0x3062] = 9;  // bad file type
    auto r = open_bytes(b);
    ASSERT_TRUE(r);
    EXPECT_FALSE(list(**r));
  }
  {
    auto b = orig;
    b[0x3062] = 7;  // dirent says symlink, inode is a regular file
    auto r = open_bytes(b);
    ASSERT_TRUE(r);
    auto w = list(**r);
    ASSERT_FALSE(w);
    EXPECT_NE(w.error().message.find("does not match"), std::string::npos) << w.error().message;
  }
}

TEST(BootstrapCorrupt, DirectoryLoop) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = fixture_bytes();
  put<uint64_t>(b, 0x3058, 128);  // /lib.rs -> the root itself
  b[0x3062] = uint8_t(FileType::kDirectory);
  auto r = open_bytes(b);
  ASSERT_TRUE(r) << r.error().to_string();
  int calls = 0;
  auto st = (*r)->walk([&](const std::string&, const InodeView&) -> Status {
    ++calls;
    return ok();
  });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kCorrupt);
  EXPECT_NE(st.error().message.find("loop"), std::string::npos) << st.error().message;
  EXPECT_LE(calls, 3);
  // resolve() goes through the loop any number of times without hanging.
  EXPECT_EQ((*r)->resolve("/lib.rs/lib.rs/lib.rs/sync_io.rs").value(), 136u);
}

TEST(BootstrapCorrupt, InodeFields) {
  NYDUS_REQUIRE_FIXTURES();
  const auto orig = fixture_bytes();
  auto inode_err = [](std::vector<uint8_t> b, uint64_t nid) -> Error {
    auto r = open_bytes(std::move(b));
    EXPECT_TRUE(r) << r.error().to_string();
    if (!r) return {};
    auto v = (*r)->inode(nid);
    EXPECT_FALSE(v);
    return v ? Error{} : v.error();
  };
  {
    auto b = orig;
    put<uint16_t>(b, 0x30a2, 0xFFFF);  // icount huge
    auto e = inode_err(b, 133);
    EXPECT_EQ(e.code, Errc::kCorrupt);
    EXPECT_EQ(e.message, "inode 133: xattr area exceeds image");
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x30a0, 0x9 | 0x20);  // i_format bit above 4
    EXPECT_NE(inode_err(b, 133).message.find("i_format"), std::string::npos);
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x30a0, 0x9 | 0x10);  // bit 4
    EXPECT_NE(inode_err(b, 133).message.find("i_format"), std::string::npos);
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x30a0, 0x3);  // layout 1 (compressed)
    EXPECT_NE(inode_err(b, 133).message.find("layout"), std::string::npos);
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x30a4, 0644);  // no file type bits
    EXPECT_NE(inode_err(b, 133).message.find("file type"), std::string::npos);
  }
  {
    auto b = orig;
    put<uint16_t>(b, 0x30a4, 040755);  // directory with chunk-based layout
    EXPECT_NE(inode_err(b, 133).message.find("chunk-based"), std::string::npos);
  }
}

TEST(BootstrapCorrupt, XattrsParsedAndBounded) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = fixture_bytes();
  // Give /lib.rs (inode 0x30a0..0x30e0) inline xattrs {user.ab="xyz",
  // system.posix_acl_access=[1,2]} = 12 + 12 + 8 = 32 bytes, icount 6; move its
  // chunk index to align(0x30e0 + 32, 8) = 0x3100 — which overlaps /sync_io.rs,
  // fine for this test since only lib.rs is read.
  put<uint16_t>(b, 0x30a2, 6);
  std::memset(b.data() + 0x30e0, 0, 32);
  const uint8_t xa[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,                 // header
                        2, 1, 3, 0, 'a', 'b', 'x', 'y', 'z', 0, 0, 0,       // user.ab
                        0, 2, 2, 0, 1, 2, 0, 0};                             // acl
  std::memcpy(b.data() + 0x30e0, xa, sizeof(xa));
  std::vector<uint8_t> idx = {0, 0, 1, 0, 0, 0, 0, 0};
  std::memcpy(b.data() + 0x3100, idx.data(), idx.size());
  auto r = open_bytes(b);
  ASSERT_TRUE(r) << r.error().to_string();
  auto v = (*r)->inode(133);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->xattr_size, 32u);
  auto xs = (*r)->xattrs(*v);
  ASSERT_TRUE(xs) << xs.error().to_string();
  ASSERT_EQ(xs->size(), 2u);
  EXPECT_EQ((*xs)[0].name, "user.ab");
  EXPECT_EQ(std::string((*xs)[0].value.begin(), (*xs)[0].value.end()), "xyz");
  EXPECT_EQ((*xs)[1].name, "system.posix_acl_access");
  EXPECT_EQ((*xs)[1].value.size(), 2u);
  auto c = (*r)->chunks(*v);
  ASSERT_TRUE(c) << c.error().to_string();
  ASSERT_EQ(c->size(), 1u);
  EXPECT_EQ((*c)[0].ci_index, 0u);

  auto patched_err = [&](size_t off, uint8_t val) {
    auto bb = b;
    bb[off] = val;
    auto rr = open_bytes(bb);
    EXPECT_TRUE(rr);
    auto x = (*rr)->xattrs(*(*rr)->inode(133));
    EXPECT_FALSE(x) << std::hex << off;
    return x ? std::string() : x.error().message;
  };
  EXPECT_NE(patched_err(0x30ee, 200).find("exceeds xattr area"), std::string::npos);  // value_size
  EXPECT_NE(patched_err(0x30ec, 100).find("exceeds xattr area"), std::string::npos);  // name_len
  EXPECT_NE(patched_err(0x30ed, 9).find("unknown name index"), std::string::npos);
  EXPECT_NE(patched_err(0x30e4, 1).find("shared xattrs"), std::string::npos);
  EXPECT_NE(patched_err(0x30f8, 1).find("name length"), std::string::npos);  // ACL with a name
}

TEST(BootstrapCorrupt, ZeroedXattrsAndChunkIndexes) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = fixture_bytes();
  put<uint16_t>(b, 0x30a2, 3);  // 20 bytes of "xattrs" that are really the chunk index + zeros
  auto r = open_bytes(b);
  ASSERT_TRUE(r);
  auto v = (*r)->inode(133);
  ASSERT_TRUE(v);
  EXPECT_FALSE((*r)->xattrs(*v));
  auto c = (*r)->chunks(*v);  // index now read from zeros: device 0
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("device 0"), std::string::npos) << c.error().message;
}

TEST(BootstrapCorrupt, ChunkIndexFields) {
  NYDUS_REQUIRE_FIXTURES();
  const auto orig = fixture_bytes();
  for (auto [dev, needle] : {std::pair<uint16_t, const char*>{2, "blob index 1"},
                             {0x0101, "ci index"}, {0, "device 0"}}) {
    auto b = orig;
    put<uint16_t>(b, 0x30e2, dev);
    auto r = open_bytes(b);
    ASSERT_TRUE(r);
    auto c = (*r)->chunks(*(*r)->inode(133));
    ASSERT_FALSE(c) << needle;
    EXPECT_NE(c.error().message.find(needle), std::string::npos) << c.error().message;
  }
  {
    auto b = orig;
    put<uint32_t>(b, 0x30b0, 0x28 | 0x40);  // 48BIT chunk format
    auto r = open_bytes(b);
    ASSERT_TRUE(r);
    EXPECT_FALSE((*r)->chunks(*(*r)->inode(133)));
  }
}

TEST(BootstrapCorrupt, HugeFileSize) {
  NYDUS_REQUIRE_FIXTURES();
  for (uint64_t size : {~uint64_t(0), ~uint64_t(0) - 0xFFFFF, uint64_t(1) << 63, uint64_t(3) << 20}) {
    auto b = fixture_bytes();
    put<uint64_t>(b, 0x30a8, size);
    auto r = open_bytes(b);
    ASSERT_TRUE(r);
    auto v = (*r)->inode(133);
    ASSERT_TRUE(v);
    EXPECT_EQ(v->size, size);
    auto c = (*r)->chunks(*v);
    // 3 MiB -> 3 indexes, the 2nd/3rd read from zeros (device 0).
    ASSERT_FALSE(c) << size;
    EXPECT_EQ(c.error().code, Errc::kCorrupt);
  }
}

TEST(BootstrapCorrupt, SymlinkPatched) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = fixture_bytes();
  // Turn /sync_io.rs (0x3100) into an inline symlink to "target.txt".
  put<uint16_t>(b, 0x3100, 0x5);
  put<uint16_t>(b, 0x3104, 0120777);
  put<uint64_t>(b, 0x3108, 10);
  std::memcpy(b.data() + 0x3140, "target.txt", 10);
  b[0x306e] = uint8_t(FileType::kSymlink);
  {
    auto r = open_bytes(b);
    ASSERT_TRUE(r);
    auto v = (*r)->inode(136);
    ASSERT_TRUE(v);
    EXPECT_TRUE(v->is_symlink());
    EXPECT_EQ((*r)->read_link(*v).value(), "target.txt");
    EXPECT_TRUE(list(**r));
    EXPECT_EQ((*r)->resolve("/sync_io.rs").value(), 136u);  // not followed
  }
  for (uint64_t size : {~uint64_t(0), uint64_t(1) << 40, uint64_t(4097)}) {
    auto bb = b;
    put<uint64_t>(bb, 0x3108, size);
    auto r = open_bytes(bb);
    ASSERT_TRUE(r);
    auto l = (*r)->read_link(*(*r)->inode(136));
    ASSERT_FALSE(l);
    EXPECT_NE(l.error().message.find("symlink size"), std::string::npos);
  }
  {
    // Inline tail may not cross the inode's block: 0x3140 % 4096 + 4000 > 4096.
    auto bb = b;
    put<uint64_t>(bb, 0x3108, 4000);
    auto r = open_bytes(bb);
    ASSERT_TRUE(r);
    auto l = (*r)->read_link(*(*r)->inode(136));
    ASSERT_FALSE(l);
    EXPECT_NE(l.error().message.find("crosses a block"), std::string::npos) << l.error().message;
  }
  {
    // Plain layout with data blocks beyond the image.
    auto bb = b;
    put<uint16_t>(bb, 0x3100, 0x1);
    put<uint32_t>(bb, 0x3110, 1000);
    auto r = open_bytes(bb);
    ASSERT_TRUE(r);
    auto l = (*r)->read_link(*(*r)->inode(136));
    ASSERT_FALSE(l);
    EXPECT_NE(l.error().message.find("exceed image"), std::string::npos) << l.error().message;
    // ... and inside it: block 4 (the chunk table) read as the target bytes.
    put<uint32_t>(bb, 0x3110, 4);
    auto r2 = open_bytes(bb);
    ASSERT_TRUE(r2);
    auto l2 = (*r2)->read_link(*(*r2)->inode(136));
    ASSERT_TRUE(l2) << l2.error().to_string();
    EXPECT_EQ(*l2, std::string(reinterpret_cast<const char*>(bb.data() + 0x4000), 10));
  }
}

TEST(BootstrapCorrupt, DirectoryHugeSize) {
  NYDUS_REQUIRE_FIXTURES();
  auto b = fixture_bytes();
  put<uint64_t>(b, 0x3008, ~uint64_t(0));  // root i_size
  auto r = open_bytes(b);
  ASSERT_TRUE(r);
  auto root = (*r)->inode(128);
  ASSERT_TRUE(root);
  EXPECT_FALSE((*r)->for_each_dirent(*root, [](const DirEntryView&) { return true; }));
  EXPECT_FALSE((*r)->lookup(*root, "lib.rs"));
  EXPECT_FALSE(list(**r));
}

// ---- multi-block directory (hand-built per spec §3.5) ----------------------------------

// Append a FLAT_PLAIN root directory with `names` (plus "." and "..") in new
// blocks at the end of the fixture; every entry points at /lib.rs.
std::vector<uint8_t> with_big_root(std::vector<std::string> names, uint64_t* dsize) {
  auto b = fixture_bytes();
  names.push_back(".");
  names.push_back("..");
  std::sort(names.begin(), names.end());
  // Group into blocks: an entry never straddles a block.
  std::vector<std::vector<std::string>> blocks(1);
  uint64_t used = 0, d = 0;
  for (const auto& n : names) {
    if (used + 12 + n.size() > 4096) {
      blocks.emplace_back();
      d = align_up(d, 4096);
      used = 0;
    }
    blocks.back().push_back(n);
    used += 12 + n.size();
    d += 12 + n.size();
  }
  const uint64_t start = b.size();
  b.resize(start + blocks.size() * 4096);
  for (size_t i = 0; i < blocks.size(); ++i) {
    uint8_t* blk = b.data() + start + i * 4096;
    uint16_t nameoff = uint16_t(12 * blocks[i].size());
    for (size_t j = 0; j < blocks[i].size(); ++j) {
      const std::string& n = blocks[i][j];
      const bool dot = n == "." || n == "..";
      Dirent de{dot ? 128u : 133u, nameoff, uint8_t(dot ? 2 : 1), 0};
      std::memcpy(blk + 12 * j, &de, sizeof(de));
      std::memcpy(blk + nameoff, n.data(), n.size());
      nameoff = uint16_t(nameoff + n.size());
    }
  }
  put<uint16_t>(b, 0x3000, 0x1);  // extended, FLAT_PLAIN
  put<uint64_t>(b, 0x3008, d);
  put<uint32_t>(b, 0x3010, uint32_t(start / 4096));
  *dsize = d;
  return b;
}

TEST(BootstrapDir, MultiBlockLookup) {
  NYDUS_REQUIRE_FIXTURES();
  std::vector<std::string> names;
  for (int i = 0; i < 1200; ++i) names.push_back(fmt::format("file-{:05d}-{}", i * 2, std::string(i % 37, 'x')));
  names.push_back("+plus");  // sorts before "."
  names.push_back("-dash");
  names.push_back(std::string(255, 'z'));
  uint64_t dsize = 0;
  auto img = with_big_root(names, &dsize);
  ASSERT_GT(dsize, 4u * 4096);  // really several blocks
  auto r = open_bytes(img);
  ASSERT_TRUE(r) << r.error().to_string();
  const Bootstrap& b = **r;
  auto root = b.inode(128);
  ASSERT_TRUE(root);
  EXPECT_EQ(root->layout, DataLayout::kFlatPlain);

  std::vector<std::string> seen;
  ASSERT_TRUE(b.for_each_dirent(*root, [&](const DirEntryView& e) {
    seen.emplace_back(e.name);
    return true;
  }));
  auto want = names;
  want.push_back(".");
  want.push_back("..");
  std::sort(want.begin(), want.end());
  EXPECT_EQ(seen, want);

  for (const auto& n : want) {
    auto e = b.lookup(*root, n);
    ASSERT_TRUE(e) << e.error().to_string();
    ASSERT_TRUE(e->has_value()) << n;
    EXPECT_EQ((*e)->name, n);
  }
  for (int i = 0; i < 1200; ++i) {  // odd numbers fall between existing names
    auto e = b.lookup(*root, fmt::format("file-{:05d}", i * 2 + 1));
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->has_value());
  }
  for (const char* n : {"!", "+", "file-", "zzzz", "\x7f", "\xff"}) {
    auto e = b.lookup(*root, n);
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->has_value()) << n;
  }
  auto l = list(b);
  ASSERT_TRUE(l) << l.error().to_string();  // hardlinks to a file are fine
  EXPECT_EQ(l->paths.size(), names.size() + 1);
  EXPECT_EQ(b.resolve("/-dash").value(), 133u);
}

// ---- randomized mutations ---------------------------------------------------------------

// Touch everything reachable; errors are fine, crashes and hangs are not.
void exercise(const Bootstrap& b) {
  (void)b.chunk_table();
  for (uint32_t nid : b.prefetch_nids()) (void)b.inode(nid);
  auto touch = [&](const InodeView& v) {
    (void)b.xattrs(v);
    if (v.is_reg()) (void)b.chunks(v);
    if (v.is_symlink()) (void)b.read_link(v);
    if (v.is_dir()) {
      std::vector<std::string> names;
      (void)b.for_each_dirent(v, [&](const DirEntryView& e) {
        names.emplace_back(e.name);
        if (auto c = b.inode(e.nid)) {
          (void)b.xattrs(*c);
          if (c->is_reg()) (void)b.chunks(*c);
          if (c->is_symlink()) (void)b.read_link(*c);
        }
        return names.size() < 10000;
      });
      for (const auto& n : names) (void)b.lookup(v, n);
      (void)b.lookup(v, "lib.rs");
    }
    (void)b.data_range(v, 0, std::min<uint64_t>(v.size, 8192));
  };
  if (auto root = b.inode(b.root_nid())) touch(*root);
  (void)b.walk([&](const std::string&, const InodeView& v) -> Status {
    touch(v);
    return ok();
  });
  for (const char* p : {"/", "/lib.rs", "/sync_io.rs", "/error.rs", "/a/b/c"}) (void)b.resolve(p);
}

void mutate_loop(const std::vector<uint8_t>& orig, uint32_t seed, int iters,
                 const std::vector<std::pair<size_t, size_t>>& regions) {
  std::mt19937 rng(seed);
  int opened = 0;
  for (int it = 0; it < iters; ++it) {
    auto b = orig;
    const int flips = 1 + int(rng() % 8);
    for (int k = 0; k < flips; ++k) {
      const auto& [lo, hi] = regions[rng() % regions.size()];
      const size_t off = lo + rng() % (hi - lo);
      if (rng() % 2) b[off] ^= uint8_t(1u << (rng() % 8));
      else b[off] = uint8_t(rng());
    }
    auto r = Bootstrap::from_bytes(std::move(b));
    if (!r) continue;
    ++opened;
    exercise(**r);
  }
  fprintf(stderr, "seed %u: %d/%d mutated images opened\n", seed, opened, iters);
  // The loop is only useful if many mutants get past open() into the readers.
  EXPECT_GT(opened, iters / 10);
}

TEST(BootstrapFuzz, RandomMutations) {
  NYDUS_REQUIRE_FIXTURES();
  const auto orig = fixture_bytes();
  ASSERT_EQ(orig.size(), 20480u);
  exercise(**open_bytes(orig));
  mutate_loop(orig, 12345, 2000, {{0, 20480}});
  // Concentrate on the bytes that are actually parsed.
  mutate_loop(orig, 777, 2000,
              {{0x400, 0x4c0}, {0x580, 0x5c8}, {0x1000, 0x1100}, {0x3000, 0x3148}, {0x4000, 0x40a0}});
}

TEST(BootstrapFuzz, RandomMutationsInlined) {
  NYDUS_REQUIRE_FIXTURES();
  const auto orig = test::read_file(inlined_boot());
  mutate_loop(orig, 4242, 1000, {{0x400, 0x4c0}, {0x1000, 0x1100}, {0x3000, 0x3200}, {0x4000, 0x40f0}});
}

TEST(BootstrapFuzz, RandomMutationsMultiBlockDir) {
  NYDUS_REQUIRE_FIXTURES();
  std::vector<std::string> names;
  for (int i = 0; i < 600; ++i) names.push_back(fmt::format("n{:04d}{}", i, std::string(i % 23, 'q')));
  uint64_t dsize = 0;
  const auto orig = with_big_root(names, &dsize);
  mutate_loop(orig, 99, 500, {{0x3000, 0x3040}, {20480, orig.size()}});
}

}  // namespace
}  // namespace nydus::format
