// The localfs backend and make_backend's JSON handling.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "common/test_util.h"
#include "storage/localfs_backend.h"
#include "storage_test_util.h"

namespace nydus::storage {
namespace {

using nydus::test::TempDir;
using nydus::test::write_file;
using test::Bytes;
using json = nlohmann::json;

TEST(LocalFsBackend, ReadsExactRangesFromDir) {
  TempDir dir;
  const Bytes data = test::random_bytes(10000, 1);
  write_file(dir / "blob1", data);
  auto b = make_backend(json{{"type", "localfs"}, {"config", {{"dir", dir.path().string()}}}});
  ASSERT_TRUE(b.has_value()) << b.error().message;
  EXPECT_STREQ((*b)->type(), "localfs");
  Bytes out(1000);
  ASSERT_TRUE((*b)->read("blob1", 5000, out).has_value());
  EXPECT_TRUE(std::equal(out.begin(), out.end(), data.begin() + 5000));
  ASSERT_TRUE((*b)->read("blob1", 0, std::span<uint8_t>()).has_value());
  EXPECT_EQ((*b)->blob_size("blob1").value(), 10000u);
  // Last byte exactly, then one past the end.
  Bytes one(1);
  ASSERT_TRUE((*b)->read("blob1", 9999, one).has_value());
  EXPECT_EQ(one[0], data[9999]);
  auto m = (*b)->metrics();
  EXPECT_EQ(m.read_count, 3u);
  EXPECT_EQ(m.read_bytes, 1001u);
}

TEST(LocalFsBackend, ShortReadIsCorrupt) {
  TempDir dir;
  write_file(dir / "blob1", test::random_bytes(100, 2));
  auto b = make_backend(json{{"type", "localfs"}, {"config", {{"dir", dir.path().string()}}}});
  ASSERT_TRUE(b.has_value());
  Bytes out(50);
  auto r = (*b)->read("blob1", 60, out);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
  r = (*b)->read("blob1", 1000, out);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
  EXPECT_EQ((*b)->metrics().read_errors, 2u);
}

TEST(LocalFsBackend, MissingBlobIsAnError) {
  TempDir dir;
  auto b = make_backend(json{{"type", "localfs"}, {"config", {{"dir", dir.path().string()}}}});
  ASSERT_TRUE(b.has_value());
  Bytes out(1);
  auto r = (*b)->read("nope", 0, out);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().sys_errno, ENOENT);
}

TEST(LocalFsBackend, RejectsBadBlobIds) {
  TempDir dir;
  std::filesystem::create_directories(dir / "sub");
  write_file(dir / "sub" / "x", std::string("secret"));
  write_file(dir.path().parent_path() / "outside", std::string("secret"));
  auto b = make_backend(json{{"type", "localfs"}, {"config", {{"dir", (dir / "sub").string()}}}});
  ASSERT_TRUE(b.has_value());
  Bytes out(1);
  const std::vector<std::string> bad_ids = {"", ".", "..", "../outside", "a/b", "/etc/passwd", "x/..", "a..b",
                                            std::string("x\0y", 3)};
  for (const std::string& id : bad_ids) {
    auto r = (*b)->read(id, 0, out);
    ASSERT_FALSE(r.has_value()) << id;
    EXPECT_EQ(r.error().code, Errc::kInvalidArgument) << id;
    EXPECT_FALSE((*b)->blob_size(id).has_value()) << id;
  }
  EXPECT_TRUE((*b)->read("x", 0, out).has_value());
}

TEST(LocalFsBackend, BlobFileServesEveryIdAndAltDirsAreSearched) {
  TempDir dir;
  const Bytes data = test::random_bytes(300, 3);
  write_file(dir / "the.blob", data);
  auto b = make_backend(json{{"config", {{"blob_file", (dir / "the.blob").string()}}}});
  ASSERT_TRUE(b.has_value()) << b.error().message;
  Bytes out(10);
  ASSERT_TRUE((*b)->read("aaaa", 0, out).has_value());
  ASSERT_TRUE((*b)->read("bbbb", 0, out).has_value());
  EXPECT_TRUE(std::equal(out.begin(), out.end(), data.begin()));
  EXPECT_FALSE((*b)->read("../x", 0, out).has_value());

  std::filesystem::create_directories(dir / "a");
  std::filesystem::create_directories(dir / "b");
  write_file(dir / "b" / "blob2", data);
  auto alt = make_backend(json{{"type", "localfs"},
                               {"config", {{"dir", (dir / "a").string()}, {"alt_dirs", {(dir / "b").string()}}}}});
  ASSERT_TRUE(alt.has_value()) << alt.error().message;
  ASSERT_TRUE((*alt)->read("blob2", 290, out).has_value());
  EXPECT_TRUE(std::equal(out.begin(), out.end(), data.begin() + 290));
}

TEST(MakeBackend, RejectsUnknownTypesAndBadConfigs) {
  auto r = make_backend(json{{"type", "ftp"}, {"config", json::object()}});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kUnsupported);
  EXPECT_NE(r.error().message.find("localfs"), std::string::npos);
  EXPECT_FALSE(make_backend(json::array()).has_value());
  EXPECT_FALSE(make_backend(json{{"type", "localfs"}, {"config", json::object()}}).has_value());
  EXPECT_FALSE(make_backend(json{{"type", "localfs"}, {"config", {{"dir", 5}}}}).has_value());
  EXPECT_FALSE(make_backend(json{{"type", "localfs"}, {"config", "x"}}).has_value());
  EXPECT_FALSE(make_backend(json{{"type", 3}}).has_value());
}

TEST(LocalFsBackend, ConcurrentReadsShareOneFd) {
  TempDir dir;
  const Bytes data = test::random_bytes(1 << 16, 4);
  write_file(dir / "blob", data);
  auto b = make_backend(json{{"type", "localfs"}, {"config", {{"dir", dir.path().string()}}}});
  ASSERT_TRUE(b.has_value());
  std::vector<std::thread> ts;
  std::atomic<int> bad{0};
  for (int t = 0; t < 8; t++)
    ts.emplace_back([&, t] {
      Bytes out(4096);
      for (int i = 0; i < 50; i++) {
        uint64_t off = uint64_t((t * 50 + i) * 97 % (data.size() - out.size()));
        if (!(*b)->read("blob", off, out) || !std::equal(out.begin(), out.end(), data.begin() + ptrdiff_t(off))) bad++;
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ((*b)->metrics().read_count, 400u);
}

}  // namespace
}  // namespace nydus::storage
