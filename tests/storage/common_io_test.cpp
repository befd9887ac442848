// common/io.h and common/file_util.h: the one read/write loop and the one
// atomic replace used by the cache, the backends and the builders. Oracles:
// the kernel (/dev/full answers ENOSPC, a pipe's read end sees the bytes) and
// the file read back with the standard library.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/io.h"

namespace nydus {
namespace {

namespace fs = std::filesystem;

std::span<const uint8_t> bytes_of(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

TEST(CommonIo, ReadFullAtStopsAtEndOfFileAsCorrupt) {
  const fs::path dir = fs::temp_directory_path() / ("nydus-io-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  { std::ofstream(dir / "f") << "0123456789"; }
  int fd = ::open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> four(4);
  ASSERT_TRUE(read_full_at(fd, 3, four, "f"));
  EXPECT_EQ(std::string(four.begin(), four.end()), "3456");
  auto past = read_full_at(fd, 8, four, "f");  // 2 bytes left
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::kCorrupt);
  ::close(fd);
  fs::remove_all(dir);
}

TEST(CommonIo, WriteFullReportsNoSpace) {
  int fd = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto w = write_full_at(fd, 0, bytes_of("x"), "full");
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, Errc::kNoSpace);
  EXPECT_EQ(w.error().sys_errno, ENOSPC);
  ASSERT_FALSE(write_full(fd, bytes_of("x"), "full"));
  ::close(fd);
}

TEST(CommonIo, WriteFullThroughAPipeInPieces) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const std::string msg(1000, 'a');
  ASSERT_TRUE(write_full(p[1], bytes_of(msg), "pipe"));
  ::close(p[1]);
  std::string got;
  char buf[64];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) got.append(buf, size_t(n));
  ::close(p[0]);
  EXPECT_EQ(got, msg);
}

TEST(CommonIo, AtomicReplaceLeavesOnlyTheNewFile) {
  const fs::path dir = fs::temp_directory_path() / ("nydus-replace-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  { std::ofstream(dir / "target") << "old contents, longer"; }
  ASSERT_TRUE(write_file_atomic(dir / "target", bytes_of("new")));
  std::ifstream in(dir / "target");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "new");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 1);  // no temp file left
  EXPECT_FALSE(write_file_atomic(dir / "missing" / "target", bytes_of("x")));
  fs::remove_all(dir);
}

// The parent is resolved, the last component is kept as named and never
// looked at (a FUSE mountpoint without its daemon would hang a stat).
TEST(CommonIo, ResolveParentResolvesOnlyTheParent) {
  const fs::path dir = fs::canonical(fs::temp_directory_path()) / ("nydus-resolve-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "real" / "sub");
  fs::create_directory_symlink(dir / "real", dir / "link");
  fs::create_directory_symlink(dir / "real" / "sub", dir / "real" / "alias");
  EXPECT_EQ(resolve_parent((dir / "link" / "sub").string()), (dir / "real" / "sub").string());
  EXPECT_EQ(resolve_parent((dir / "link" / "sub/").string()), (dir / "real" / "sub").string());
  EXPECT_EQ(resolve_parent((dir / "link" / ".." / "link" / "sub").string()), (dir / "real" / "sub").string());
  // The last component stays as named, symlink or not, existing or not.
  EXPECT_EQ(resolve_parent((dir / "link" / "alias").string()), (dir / "real" / "alias").string());
  EXPECT_EQ(resolve_parent((dir / "link" / "none").string()), (dir / "real" / "none").string());
  EXPECT_EQ(resolve_parent("/"), "/");
  // Relative to the working directory.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir / "link");
  EXPECT_EQ(resolve_parent("sub"), (dir / "real" / "sub").string());
  fs::current_path(cwd);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nydus
