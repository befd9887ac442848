// Round trip: directory -> create_image -> unpack_to_dir / unpack_to_tar, and
// unpacking damaged images fails cleanly.
#include "builder/unpack_image.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "format/image_reader.h"

namespace nydus {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

struct EntryInfo {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  dev_t rdev = 0;
  ino_t ino = 0;
  std::string content;  // file data or symlink target
  std::map<std::string, std::string> xattrs;  // user.* only

  bool operator==(const EntryInfo& o) const {
    return mode == o.mode && uid == o.uid && gid == o.gid && size == o.size && mtime_ns == o.mtime_ns &&
           rdev == o.rdev && content == o.content && xattrs == o.xattrs;  // ino compared separately
  }
};

std::ostream& operator<<(std::ostream& os, const EntryInfo& e) {
  os << "{mode " << std::oct << e.mode << std::dec << " uid " << e.uid << " gid " << e.gid << " size " << e.size
     << " mtime " << e.mtime_ns << " rdev " << e.rdev << " content.size " << e.content.size() << " xattrs";
  for (auto& [k, v] : e.xattrs) os << " " << k << "=" << v;
  return os << "}";
}

std::map<std::string, std::string> user_xattrs(const std::string& p) {
  std::map<std::string, std::string> out;
  std::string names(4096, '\0');
  ssize_t n = llistxattr(p.c_str(), names.data(), names.size());
  if (n <= 0) return out;
  for (size_t i = 0; i < size_t(n);) {
    std::string name(names.c_str() + i);
    i += name.size() + 1;
    if (!name.starts_with("user.")) continue;
    std::string v(4096, '\0');
    ssize_t m = lgetxattr(p.c_str(), name.c_str(), v.data(), v.size());
    if (m >= 0) out[name] = v.substr(0, size_t(m));
  }
  return out;
}

EntryInfo describe(const fs::path& p) {
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) throw std::runtime_error("lstat " + p.string());
  EntryInfo e;
  e.mode = st.st_mode;
  e.uid = st.st_uid;
  e.gid = st.st_gid;
  e.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  e.ino = st.st_ino;
  if (S_ISREG(st.st_mode)) {
    e.size = st.st_size;
    auto bytes = test::read_file(p);
    e.content.assign(bytes.begin(), bytes.end());
  } else if (S_ISLNK(st.st_mode)) {
    e.content = fs::read_symlink(p).string();
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    e.rdev = st.st_rdev;
  }
  e.xattrs = user_xattrs(p.string());
  return e;
}

// Every entry below `root` (and root itself as "."), by relative path.
std::map<std::string, EntryInfo> snapshot(const fs::path& root) {
  std::map<std::string, EntryInfo> out;
  out["."] = describe(root);
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it)
    out[it->path().lexically_relative(root).string()]  // not fs::relative: it follows symlinks
        = describe(it->path());
  return out;
}

void set_mtime(const fs::path& p, time_t sec, long nsec) {
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << p;
}

bool xattrs_supported(const fs::path& dir) {
  fs::path probe = dir / ".xattr-probe";
  test::write_file(probe, std::string("x"));
  bool ok = ::setxattr(probe.c_str(), "user.probe", "1", 1, 0) == 0;
  fs::remove(probe);
  return ok;
}

class UnpackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = tmp_ / "src";
    fs::create_directories(src_ / "d" / "ro");
    test::write_file(src_ / "empty", std::string());
    test::write_file(src_ / "small", std::string("hello, nydus\n"));
    std::string big(3 * 4096 + 123, '\0');
    std::mt19937 rng(42);
    for (auto& c : big) c = char(rng());
    big.replace(4096, 4096, std::string(4096, 'z'));  // a chunk shared with "zeds"
    test::write_file(src_ / "big", big);
    test::write_file(src_ / "zeds", std::string(4096, 'z'));
    test::write_file(src_ / "d" / "ro" / "inner", std::string("inside a read-only dir"));
    fs::create_hard_link(src_ / "small", src_ / "d" / "small-link");
    fs::create_symlink("../small", src_ / "d" / "sym");
    fs::create_symlink("/nonexistent/absolute", src_ / "dangling");
    ASSERT_EQ(::mkfifo((src_ / "fifo").c_str(), 0640), 0);
    test::write_file(src_ / "new\nline", std::string("n"));
    test::write_file(src_ / "\xff\xfe-latin", std::string("l"));
    test::write_file(src_ / "ünïcode", std::string("u"));
    fs::permissions(src_ / "small", fs::perms(0604));
    fs::permissions(src_ / "big", fs::perms(0750));
    if (geteuid() == 0) {
      ASSERT_EQ(::mknod((src_ / "cdev").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);
      ASSERT_EQ(::mknod((src_ / "bdev").c_str(), S_IFBLK | 0660, makedev(259, 70000)), 0);
      ASSERT_EQ(::lchown((src_ / "big").c_str(), 1234, 5678), 0);
      ASSERT_EQ(::lchown((src_ / "d" / "sym").c_str(), 42, 43), 0);
    }
    if (xattrs_supported(tmp_.path())) {
      ASSERT_EQ(::setxattr((src_ / "small").c_str(), "user.color", "blue", 4, 0), 0);
      ASSERT_EQ(::setxattr((src_ / "d").c_str(), "user.bin", "\x00\x01\xff", 3, 0), 0);
      ASSERT_EQ(::setxattr(src_.c_str(), "user.root", "r", 1, 0), 0);
    }
    // Times last (children change their parent's mtime), deepest first.
    set_mtime(src_ / "d" / "ro" / "inner", 1000000000, 1);
    set_mtime(src_ / "d" / "sym", 1100000000, 999999999);
    set_mtime(src_ / "small", 1200000000, 123456789);
    fs::permissions(src_ / "d" / "ro", fs::perms(0555));
    set_mtime(src_ / "d" / "ro", 1300000000, 5);
    set_mtime(src_ / "d", 1400000000, 500);
    fs::permissions(src_, fs::perms(0751));
    set_mtime(src_, 1500000000, 42);

    builder::CreateOptions o;
    o.source = src_;
    o.bootstrap = tmp_ / "image.boot";
    o.blob_dir = tmp_ / "blobs";
    o.chunk_size = 0x1000;  // several chunks per file, and a deduplicated one
    o.threads = 2;
    fs::create_directories(o.blob_dir);
    auto r = builder::create_image(o);
    ASSERT_TRUE(r) << r.error().to_string();
    ASSERT_EQ(r->blobs.size(), 1u);
    blob_ = o.blob_dir / r->blobs[0].blob_id;
  }

  Result<std::unique_ptr<format::ImageReader>> open_image(const fs::path& boot, const fs::path& blob) {
    format::BlobLocation loc;
    loc.blob_file = blob;
    return format::ImageReader::open(boot, loc);
  }

  TempDir tmp_;
  fs::path src_, blob_;
};

TEST_F(UnpackTest, ExtractedTreeEqualsSource) {
  auto image = open_image(tmp_ / "image.boot", blob_);
  ASSERT_TRUE(image) << image.error().to_string();
  const fs::path out = tmp_ / "out" / "nested";  // created by unpack
  auto rep = builder::unpack_to_dir(**image, out);
  ASSERT_TRUE(rep) << rep.error().to_string();
  EXPECT_EQ(rep->hardlinks, 1u);
  EXPECT_TRUE(rep->warnings.empty()) << rep->warnings.front();

  auto want = snapshot(src_);
  auto got = snapshot(out);
  for (auto& [path, e] : want) {
    auto it = got.find(path);
    ASSERT_NE(it, got.end()) << "missing " << path;
    EXPECT_EQ(it->second, e) << path;
  }
  for (auto& [path, e] : got) EXPECT_TRUE(want.contains(path)) << "unexpected " << path;
  // Hardlinks come back as one inode.
  EXPECT_EQ(got["small"].ino, got["d/small-link"].ino);
  EXPECT_NE(got["small"].ino, got["zeds"].ino);

  // Extracting again over the existing tree gives the same result.
  auto again = builder::unpack_to_dir(**image, out);
  ASSERT_TRUE(again) << again.error().to_string();
  auto got2 = snapshot(out);
  for (auto& [path, e] : want) EXPECT_EQ(got2[path], e) << path;
}

TEST_F(UnpackTest, TarStreamHoldsEveryEntry) {
  auto image = open_image(tmp_ / "image.boot", blob_);
  ASSERT_TRUE(image) << image.error().to_string();
  const fs::path tar = tmp_ / "out.tar";
  int fd = ::open(tar.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  auto rep = builder::unpack_to_tar(**image, fd);
  ::close(fd);
  ASSERT_TRUE(rep) << rep.error().to_string();
  auto want = snapshot(src_);
  EXPECT_EQ(rep->entries, want.size());
  EXPECT_EQ(rep->hardlinks, 1u);
  EXPECT_EQ(rep->bytes, uint64_t(fs::file_size(src_ / "big") + fs::file_size(src_ / "small") + 4096 + 3 + 22));
  EXPECT_EQ(fs::file_size(tar) % 512, 0u);
}

TEST_F(UnpackTest, TruncatedBlobIsAnError) {
  const fs::path blob = tmp_ / "short.blob";
  fs::copy_file(blob_, blob);
  fs::resize_file(blob, fs::file_size(blob) / 2);
  auto image = open_image(tmp_ / "image.boot", blob);
  if (!image) GTEST_SKIP() << "rejected at open: " << image.error().to_string();
  auto rep = builder::unpack_to_dir(**image, tmp_ / "out");
  ASSERT_FALSE(rep);
  EXPECT_FALSE(rep.error().message.empty());
}

TEST_F(UnpackTest, FlippedDataByteFailsDigestCheck) {
  const fs::path blob = tmp_ / "bad.blob";
  fs::copy_file(blob_, blob);
  auto bytes = test::read_file(blob);
  bytes[100] ^= 0x5a;  // inside the first stored chunk ("big" comes first... or any data chunk)
  test::write_file(blob, bytes);
  auto image = open_image(tmp_ / "image.boot", blob);
  ASSERT_TRUE(image) << image.error().to_string();
  int fd = ::open("/dev/null", O_WRONLY);
  auto rep = builder::unpack_to_tar(**image, fd);
  ::close(fd);
  ASSERT_FALSE(rep);
}

TEST_F(UnpackTest, CorruptBootstrapsNeverCrash) {
  const auto orig = test::read_file(tmp_ / "image.boot");
  ASSERT_GT(orig.size(), 4096u);
  const fs::path boot = tmp_ / "fuzz.boot";

  // Damaged magic: a certain error.
  auto bad = orig;
  bad[1024] ^= 0xff;
  test::write_file(boot, bad);
  EXPECT_FALSE(open_image(boot, blob_));

  // Flipped bytes all over the metadata: an error or a (possibly different)
  // tree, but never a crash or a hang.
  std::mt19937 rng(7);
  int errors = 0;
  for (int round = 0; round < 300; round++) {
    bad = orig;
    const int flips = 1 + int(rng() % 4);
    for (int i = 0; i < flips; i++) bad[1024 + rng() % (orig.size() - 1024)] ^= uint8_t(1u << (rng() % 8));
    test::write_file(boot, bad);
    auto image = open_image(boot, blob_);
    if (!image) {
      errors++;
      continue;
    }
    int fd = ::open("/dev/null", O_WRONLY);
    auto rep = builder::unpack_to_tar(**image, fd);
    ::close(fd);
    errors += !rep;
    if (round % 10 == 0) {  // the extraction path too, into a fresh directory
      const fs::path out = tmp_ / ("fuzz-out-" + std::to_string(round));
      (void)builder::unpack_to_dir(**image, out);
      std::error_code ec;
      fs::permissions(out, fs::perms::owner_all, fs::perm_options::add, ec);
    }
  }
  EXPECT_GT(errors, 0);

  // Truncated bootstrap.
  bad.assign(orig.begin(), orig.begin() + long(orig.size() / 2));
  test::write_file(boot, bad);
  auto image = open_image(boot, blob_);
  if (image) {
    int fd = ::open("/dev/null", O_WRONLY);
    EXPECT_FALSE(builder::unpack_to_tar(**image, fd));
    ::close(fd);
  }
}

}  // namespace
}  // namespace nydus
