// RafsFs over a real image (builder + localfs backend + blob cache), without
// /dev/fuse: the operations the FUSE callbacks adapt.
#include "fuse/rafs_fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "builder/create_image.h"
#include "fuse/page_pusher.h"
#include "common/test_util.h"
#include "storage/backend.h"

namespace nydus::fuse {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

class RafsFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = tmp_ / "src";
    fs::create_directories(src_ / "dir" / "sub");
    big_ = random_bytes(5 * 4096 + 123, 1);
    test::write_file(src_ / "big", big_);
    test::write_file(src_ / "dir" / "small", std::string("hello\n"));
    test::write_file(src_ / "empty", std::string());
    fs::create_symlink("dir/small", src_ / "link");
    has_xattr_ = ::setxattr((src_ / "dir" / "small").c_str(), "user.k", "val", 3, 0) == 0;
    build(false);
  }

  void build(bool validate) {
    fs_.reset();
    fs::remove_all(tmp_ / "blobs");
    fs::remove_all(tmp_ / "cache");
    fs::create_directories(tmp_ / "blobs");
    builder::CreateOptions o;
    o.source = src_;
    o.bootstrap = tmp_ / "boot";
    o.blob_dir = tmp_ / "blobs";
    o.chunk_size = 0x1000;  // many chunks, to cross boundaries
    auto rep = builder::create_image(o);
    ASSERT_TRUE(rep) << rep.error().message;
    open_fs(validate);
  }

  void open_fs(bool validate) {
    auto boot = format::Bootstrap::open(tmp_ / "boot");
    ASSERT_TRUE(boot) << boot.error().message;
    boot_ = *boot;
    auto be = storage::make_backend(nlohmann::json{{"type", "localfs"}, {"config", {{"dir", (tmp_ / "blobs").string()}}}});
    ASSERT_TRUE(be) << be.error().message;
    storage::CacheConfig cc;
    cc.work_dir = tmp_ / "cache";
    cc.digest_validate = validate;
    fs::create_directories(cc.work_dir);
    std::vector<std::shared_ptr<storage::BlobCache>> caches;
    for (const auto& b : boot_->blobs()) {
      std::vector<format::Digest> digests;
      if (validate) {
        auto table = boot_->chunk_table();
        ASSERT_TRUE(table);
        digests.assign(b.chunk_count, format::Digest{});
        for (const auto& r : *table) digests[r.ci_index] = r.digest;
      }
      auto c = storage::BlobCache::open(b, *be, cc, digests);
      ASSERT_TRUE(c) << c.error().message;
      caches.push_back(*c);
    }
    FsOptions fo;
    fo.iostats_files = true;
    fs_ = std::make_unique<RafsFs>(boot_, caches, fo);
  }

  uint64_t ino_of(uint64_t parent, const char* name) {
    auto r = fs_->lookup(parent, name);
    EXPECT_TRUE(r && *r) << name;
    return r && *r ? (**r).st_ino : 0;
  }

  std::vector<uint8_t> read_all(uint64_t ino, uint64_t off, size_t size) {
    auto f = fs_->open(ino, O_RDONLY);
    EXPECT_TRUE(f);
    std::vector<uint8_t> buf(size);
    auto n = fs_->read(**f, off, buf);
    EXPECT_TRUE(n) << (n ? "" : n.error().message);
    buf.resize(n ? *n : 0);
    return buf;
  }

  test::TempDir tmp_;
  fs::path src_;
  std::vector<uint8_t> big_;
  bool has_xattr_ = false;
  std::shared_ptr<format::Bootstrap> boot_;
  std::unique_ptr<RafsFs> fs_;
};

TEST_F(RafsFsTest, RootIsFuseRootAndInosAreNids) {
  auto st = fs_->getattr(1);
  ASSERT_TRUE(st);
  EXPECT_TRUE(S_ISDIR(st->st_mode));
  EXPECT_EQ(st->st_ino, 1u);
  const uint64_t dir = ino_of(1, "dir");
  auto iv = boot_->resolve("/dir");
  ASSERT_TRUE(iv);
  EXPECT_EQ(dir, *iv);
  EXPECT_EQ(fs_->to_nid(1), boot_->root_nid());
  EXPECT_EQ(fs_->to_ino(boot_->root_nid()), 1u);
  auto missing = fs_->lookup(1, "nope");
  ASSERT_TRUE(missing);
  EXPECT_FALSE(*missing);
  // Lookup under a file is ENOTDIR.
  auto bad = fs_->lookup(ino_of(1, "big"), "x");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().sys_errno, ENOTDIR);
}

// A walk of a big image keeps only what it touched lately of the mapped
// bootstrap resident: every kReleaseEvery inodes or entries decoded, the
// mapping's pages are released (what a release does to the mapping:
// bootstrap_test.cpp's ReleasingResidentPagesKeepsTheBytes).
TEST_F(RafsFsTest, DecodingManyInodesReleasesTheMappedBootstrap) {
  const uint64_t before = fs_->metrics().bootstrap_releases;
  for (uint64_t i = 0; i + 1 < RafsFs::kReleaseEvery; ++i) ASSERT_TRUE(fs_->getattr(1));
  EXPECT_LE(fs_->metrics().bootstrap_releases, before + 1);
  ASSERT_TRUE(fs_->getattr(1));
  EXPECT_EQ(fs_->metrics().bootstrap_releases, before + 1);  // one within any kReleaseEvery decodes
  // A listing counts each entry.
  uint64_t listed = 0;
  for (uint64_t i = 0; i < RafsFs::kReleaseEvery; i += listed) {
    listed = 0;
    ASSERT_TRUE(fs_->readdir(1, 0, [&](const DirEntry&) { ++listed; return true; }));
    ASSERT_GT(listed, 0u);
  }
  EXPECT_EQ(fs_->metrics().bootstrap_releases, before + 2);
  // The tree still reads right after the releases.
  EXPECT_EQ(read_all(ino_of(1, "big"), 0, big_.size()), big_);
  EXPECT_NE(ino_of(ino_of(1, "dir"), "small"), 0u);
}

TEST_F(RafsFsTest, Getattr) {
  auto st = fs_->getattr(ino_of(1, "big"));
  ASSERT_TRUE(st);
  EXPECT_EQ(uint64_t(st->st_size), big_.size());
  EXPECT_EQ(uint64_t(st->st_blocks), (big_.size() + 511) / 512);
  EXPECT_TRUE(S_ISREG(st->st_mode));
  struct stat real;
  ASSERT_EQ(::lstat((src_ / "big").c_str(), &real), 0);
  EXPECT_EQ(st->st_mtim.tv_sec, real.st_mtim.tv_sec);
  EXPECT_EQ(st->st_mode, real.st_mode);
}

TEST_F(RafsFsTest, ReaddirOrderCookiesAndResume) {
  std::vector<std::string> names;
  std::vector<uint64_t> offs;
  ASSERT_TRUE(fs_->readdir(1, 0, [&](const DirEntry& e) {
    names.push_back(e.name);
    offs.push_back(e.next_off);
    return true;
  }));
  std::vector<std::string> want{".", "..", "big", "dir", "empty", "link"};
  EXPECT_EQ(names, want);
  for (size_t i = 0; i < offs.size(); ++i) EXPECT_EQ(offs[i], i + 1);
  // Resume from a cookie: the rest, none skipped.
  std::vector<std::string> rest;
  ASSERT_TRUE(fs_->readdir(1, 3, [&](const DirEntry& e) {
    rest.push_back(e.name);
    return true;
  }));
  EXPECT_EQ(rest, (std::vector<std::string>{"dir", "empty", "link"}));
  // ".." of the root is the root.
  ASSERT_TRUE(fs_->readdir(1, 1, [&](const DirEntry& e) {
    EXPECT_EQ(e.ino, 1u);
    return false;
  }));
}

TEST_F(RafsFsTest, ReadWholeAndAcrossChunksAndEof) {
  const uint64_t ino = ino_of(1, "big");
  EXPECT_EQ(read_all(ino, 0, big_.size() + 100), big_);
  auto mid = read_all(ino, 4090, 8200);
  EXPECT_EQ(mid, std::vector<uint8_t>(big_.begin() + 4090, big_.begin() + 4090 + 8200));
  auto tail = read_all(ino, big_.size() - 10, 4096);
  EXPECT_EQ(tail.size(), 10u);
  EXPECT_TRUE(read_all(ino, big_.size(), 4096).empty());
  EXPECT_TRUE(read_all(ino, uint64_t(1) << 62, 4096).empty());
  EXPECT_TRUE(read_all(ino_of(1, "empty"), 0, 4096).empty());
  auto stats = fs_->file_stats();
  ASSERT_FALSE(stats.empty());
  EXPECT_EQ(fs_->metrics().read_errors, 0u);
}

// What a FUSE READ does without an OPEN before it: by inode, in pieces, so
// the decoded file is kept between reads (and read whole, so it is not).
TEST_F(RafsFsTest, ReadByInodeInPiecesAndWhole) {
  const uint64_t ino = ino_of(1, "big");
  for (int round = 0; round < 2; round++) {
    std::vector<uint8_t> got;
    for (uint64_t off = 0;; off += 3000) {
      std::vector<uint8_t> buf(3000);
      auto n = fs_->read_ino(ino, off, buf);
      ASSERT_TRUE(n) << n.error().message;
      if (*n == 0) break;
      got.insert(got.end(), buf.begin(), buf.begin() + ptrdiff_t(*n));
    }
    EXPECT_EQ(got, big_) << "round " << round;
  }
  std::vector<uint8_t> whole(big_.size() + 4096);
  auto n = fs_->read_ino(ino, 0, whole);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, big_.size());
  EXPECT_TRUE(std::equal(big_.begin(), big_.end(), whole.begin()));
  std::vector<uint8_t> buf(10);
  EXPECT_FALSE(fs_->read_ino(uint64_t(1) << 40, 0, buf)) << "no such inode";
}

TEST_F(RafsFsTest, WritesAreRefused) {
  const uint64_t ino = ino_of(1, "big");
  for (int fl : {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC}) {
    auto f = fs_->open(ino, fl);
    ASSERT_FALSE(f);
    EXPECT_EQ(f.error().sys_errno, EROFS);
  }
  auto a = fs_->access(ino, W_OK);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().sys_errno, EROFS);
  EXPECT_TRUE(fs_->access(ino, R_OK));
}

TEST_F(RafsFsTest, ReadlinkXattrStatfs) {
  auto l = fs_->readlink(ino_of(1, "link"));
  ASSERT_TRUE(l);
  EXPECT_EQ(*l, "dir/small");
  const uint64_t small = ino_of(ino_of(1, "dir"), "small");
  if (has_xattr_) {
    auto v = fs_->getxattr(small, "user.k");
    ASSERT_TRUE(v);
    EXPECT_EQ(std::string(v->begin(), v->end()), "val");
    auto names = fs_->listxattr(small);
    ASSERT_TRUE(names);
    EXPECT_NE(names->find(std::string("user.k\0", 7)), std::string::npos);
  }
  auto none = fs_->getxattr(small, "user.absent");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().sys_errno, ENODATA);
  auto sv = fs_->statfs();
  EXPECT_EQ(sv.f_bsize, 4096u);
  EXPECT_EQ(sv.f_namemax, 255u);
  EXPECT_GE(sv.f_blocks, 7u);
  // The oracle is the source tree, not the superblock statfs reads: one inode per
  // distinct (dev, ino) below the root, plus the root.
  std::set<std::pair<dev_t, ino_t>> inodes;
  for (const auto& e : fs::recursive_directory_iterator(src_)) {
    struct stat st{};
    ASSERT_EQ(::lstat(e.path().c_str(), &st), 0) << e.path();
    inodes.insert({st.st_dev, st.st_ino});
  }
  EXPECT_EQ(inodes.size() + 1, 7u);  // root, dir, dir/sub, big, dir/small, empty, link
  EXPECT_EQ(sv.f_files, inodes.size() + 1);
}

TEST_F(RafsFsTest, CorruptBlobWithValidationIsAnErrorNotWrongBytes) {
  build(true);
  // Flip a byte inside the stored data of the blob (the chunks come first).
  fs::path blob;
  for (const auto& e : fs::directory_iterator(tmp_ / "blobs")) blob = e.path();
  ASSERT_FALSE(blob.empty());
  auto bytes = test::read_file(blob);
  bytes[10] ^= 0xFF;
  test::write_file(blob, bytes);
  const uint64_t ino = ino_of(1, "big");
  auto f = fs_->open(ino, O_RDONLY);
  ASSERT_TRUE(f);
  std::vector<uint8_t> buf(big_.size());
  auto n = fs_->read(**f, 0, buf);
  EXPECT_FALSE(n);
  EXPECT_GE(fs_->metrics().read_errors, 1u);
}

// A cache that always fails: the read is an error, never zeros.
class FailingCache : public storage::BlobCache {
 public:
  explicit FailingCache(format::BlobInfo b) : b_(std::move(b)) {}
  const format::BlobInfo& info() const override { return b_; }
  uint32_t chunk_count() const override { return 0; }
  format::ChunkRecord chunk(uint32_t) const override { return {}; }
  Status read(uint64_t, std::span<uint8_t>) override { return make_error(Errc::kIo, "backend down"); }
  Status fetch_range(uint64_t, uint64_t, bool) override { return make_error(Errc::kIo, "backend down"); }
  void read_ahead(uint64_t, uint64_t) override {}
  bool is_ready(uint64_t, uint64_t) const override { return false; }
  int data_fd() const override { return -1; }
  std::filesystem::path data_path() const override { return {}; }
  storage::CacheMetrics metrics() const override { return {}; }
  Status flush() override { return ok(); }

 private:
  format::BlobInfo b_;
};

TEST_F(RafsFsTest, BackendFailureIsAnError) {
  std::vector<std::shared_ptr<storage::BlobCache>> caches;
  for (const auto& b : boot_->blobs()) caches.push_back(std::make_shared<FailingCache>(b));
  RafsFs broken(boot_, caches, FsOptions{});
  auto st = broken.lookup(1, "big");
  ASSERT_TRUE(st && *st);
  auto f = broken.open((**st).st_ino, O_RDONLY);
  ASSERT_TRUE(f);
  std::vector<uint8_t> buf(100);
  EXPECT_FALSE(broken.read(**f, 0, buf));
  // No caches at all (blob missing): still an error, not a crash.
  RafsFs none(boot_, {}, FsOptions{});
  auto f2 = none.open((**st).st_ino, O_RDONLY);
  ASSERT_TRUE(f2);
  EXPECT_FALSE(none.read(**f2, 0, buf));
}


// Read-ahead across a directory's files, over a real image: the files a
// read in listing order asks to push are the next ones of the listing (as
// readdir numbers them), and the pusher hands the kernel each file's exact
// bytes under the kernel's inode number.
TEST_F(RafsFsTest, ReadInListingOrderPushesTheNextFilesWithTheirBytes) {
  fs::create_directories(src_ / "many");
  std::map<std::string, std::vector<uint8_t>> want;
  for (int i = 0; i < 40; ++i) {
    const std::string name = fmt::format("f{:02}", i);
    want[name] = random_bytes(i == 3 ? 300000 : 100 + i * 50, 100 + i);  // f03: three pieces
    test::write_file(src_ / "many" / name, want[name]);
  }
  build(false);
  const uint64_t dir = ino_of(1, "many");
  std::vector<std::pair<uint64_t, std::string>> order;  // regular files as readdir lists them
  ASSERT_TRUE(fs_->readdir(dir, 0, [&](const DirEntry& e) {
    if (e.mode == S_IFREG) {
      fs_->listed(dir, e.next_off - 1, e.ino, order.empty());
      order.emplace_back(e.ino, e.name);
    }
    return true;
  }));
  ASSERT_EQ(order.size(), 40u);
  // The first file read: the next few of the listing, in order.
  const std::vector<uint64_t> p = fs_->files_to_push(order[0].first, 0);
  ASSERT_FALSE(p.empty());
  for (size_t i = 0; i < p.size(); ++i) EXPECT_EQ(p[i], order[i + 1].first) << i;
  EXPECT_TRUE(fs_->files_to_push(order[0].first, 4096).empty()) << "only a read from offset 0 counts";

  std::shared_ptr<RafsFs> sfs(std::move(fs_));
  std::mutex mu;
  std::map<uint64_t, std::vector<uint8_t>> stored;
  {
    PagePusher pusher([&](uint64_t kino, uint64_t off, std::span<const uint8_t> bytes) {
      std::lock_guard lk(mu);
      auto& v = stored[kino];
      EXPECT_EQ(off, v.size()) << "pieces in order, no gap";
      EXPECT_TRUE(off % 4096 == 0) << "pieces start on a page";
      v.insert(v.end(), bytes.begin(), bytes.end());
      return 0;
    }, 2);
    for (uint64_t ino : p) ASSERT_TRUE(pusher.push(sfs, ino, ino + 1000));
    ASSERT_TRUE(test::wait_for([&] { return pusher.pushed_files() == p.size(); }, std::chrono::seconds(5)));
    pusher.stop();
  }
  ASSERT_EQ(stored.size(), p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const auto& [ino, name] = order[i + 1];
    ASSERT_TRUE(stored.contains(ino + 1000)) << name;
    EXPECT_EQ(stored[ino + 1000], want[name]) << name << ": the source's bytes";
  }
}

// A cache whose reads wait until released: a backend that does not answer.
class BlockedCache : public FailingCache {
 public:
  using FailingCache::FailingCache;
  Status read(uint64_t, std::span<uint8_t>) override {
    std::unique_lock lk(mu_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lk, [&] { return released_; });
    return make_error(Errc::kIo, "gave up");
  }
  void wait_entered() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return entered_; });
  }
  void release() {
    std::lock_guard lk(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, released_ = false;
};

TEST_F(RafsFsTest, PusherStopDoesNotWaitForAStuckRead) {
  auto cache = std::make_shared<BlockedCache>(boot_->blobs().at(0));
  auto sfs = std::make_shared<RafsFs>(boot_, std::vector<std::shared_ptr<storage::BlobCache>>{cache}, FsOptions{});
  const uint64_t big = ino_of(1, "big");
  std::atomic<int> stores{0};
  auto pusher = std::make_unique<PagePusher>([&](uint64_t, uint64_t, std::span<const uint8_t>) {
    stores++;
    return 0;
  });
  ASSERT_TRUE(pusher->push(sfs, big, big));
  cache->wait_entered();
  const auto t0 = std::chrono::steady_clock::now();
  pusher->stop(std::chrono::milliseconds(200));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2)) << "stop waited for the stuck read";
  EXPECT_FALSE(pusher->push(sfs, big, big)) << "a stopped pusher takes nothing";
  pusher.reset();  // the thread still holds what it needs
  cache->release();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(stores.load(), 0);
}

}  // namespace
}  // namespace nydus::fuse
