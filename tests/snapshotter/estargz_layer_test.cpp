// The eStargz TOC read from registry bytes (untrusted): the gzip'd tar
// between the footer's TOC offset and the footer.
#include "snapshotter/estargz_layer.h"

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_util.h"
#include "snapshotter/labels.h"
#include "snapshotter/snapshotter.h"

namespace nydus::snapshotter {
namespace {

// A ustar header for a regular file NAME of SIZE bytes (checksum is not read).
std::string tar_header(const std::string& name, uint64_t size, char type = '0') {
  std::string h(512, '\0');
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(h.data() + 124, 12, "%011llo", static_cast<unsigned long long>(size));
  h[156] = type;
  std::memcpy(h.data() + 257, "ustar", 5);
  return h;
}

std::string tar_member(const std::string& name, const std::string& data, char type = '0') {
  std::string t = tar_header(name, data.size(), type) + data;
  t.resize((t.size() + 511) / 512 * 512, '\0');
  return t;
}

std::vector<uint8_t> gzip(const std::string& in) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&z, in.size()) + 64);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

const std::string kJson = R"({"version":1,"entries":[{"name":"a","type":"reg","size":0}]})";

TEST(EstargzToc, FindsTheIndexMember) {
  auto gz = gzip(tar_member("stargz.index.json", kJson) + std::string(1024, '\0'));
  auto r = toc_json_from_gzip_tar(gz, 1 << 20);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, kJson);
}

TEST(EstargzToc, SkipsOtherMembersAndPaxHeaders) {
  auto gz = gzip(tar_member("PaxHeaders/x", "20 path=whatever\n", 'x') + tar_member("other", "zzz") +
                 tar_member("./stargz.index.json", kJson) + std::string(1024, '\0'));
  auto r = toc_json_from_gzip_tar(gz, 1 << 20);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, kJson);
}

TEST(EstargzToc, NoIndexMemberIsAnError) {
  auto gz = gzip(tar_member("something.json", kJson) + std::string(1024, '\0'));
  auto r = toc_json_from_gzip_tar(gz, 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
}

TEST(EstargzToc, JsonOverTheBoundIsRefused) {
  auto gz = gzip(tar_member("stargz.index.json", std::string(5000, ' ') + kJson) + std::string(1024, '\0'));
  auto r = toc_json_from_gzip_tar(gz, 4096);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
}

TEST(EstargzToc, GzipBombStopsAtTheBound) {
  // 64 MiB of zeros inflating from a few KiB: refused once past the bound, never held whole.
  auto gz = gzip(tar_header("stargz.index.json", 64u << 20) + std::string(64u << 20, '\0'));
  auto r = toc_json_from_gzip_tar(gz, 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
  EXPECT_NE(r.error().message.find("more than"), std::string::npos) << r.error().message;
}

TEST(EstargzToc, MemberSizePastTheStreamIsRefused) {
  auto gz = gzip(tar_header("stargz.index.json", 1 << 19) + kJson);
  auto r = toc_json_from_gzip_tar(gz, 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kCorrupt);
}

TEST(EstargzToc, TruncatedOrGarbageGzipIsAnError) {
  auto gz = gzip(tar_member("stargz.index.json", kJson));
  gz.resize(gz.size() / 2);
  EXPECT_FALSE(toc_json_from_gzip_tar(gz, 1 << 20));
  std::vector<uint8_t> junk(100, 0x42);
  EXPECT_FALSE(toc_json_from_gzip_tar(junk, 1 << 20));
  EXPECT_FALSE(toc_json_from_gzip_tar({}, 1 << 20));
}

// A Snapshotter with enable_stargz; no registry answers (port 1).
class EstargzSnapshotter : public ::testing::Test {
 protected:
  void SetUp() override { open(); }
  void open() {
    sn_.reset();
    SnapshotterOptions o;
    o.root = (dir_ / "root").string();
    o.index_off = false;
    o.userxattr = false;
    o.enable_stargz = true;
    o.nydus_image_path = "/nonexistent/nydus-image";
    o.daemon.nydusd_path = "/nonexistent/nydusd";
    o.daemon.ready_timeout = std::chrono::seconds(2);
    auto s = Snapshotter::open(o);
    ASSERT_TRUE(s) << s.error().message;
    sn_ = std::move(*s);
  }
  nydus::test::TempDir dir_;
  std::unique_ptr<Snapshotter> sn_;
};

TEST_F(EstargzSnapshotter, TheStargzMarkFromAClientIsDropped) {
  // An image annotation "containerd.io/snapshot/stargz" reaches Prepare and
  // Commit as a label: it must not turn an unpacked layer into an eStargz one.
  const Labels forged{{std::string(label::kStargzLayer), "true"}};
  auto m = sn_->prepare("extract-a", "", forged);
  ASSERT_TRUE(m) << m.error().message;
  ASSERT_TRUE(sn_->commit("a", "extract-a", forged));
  auto info = sn_->stat("a");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->labels.count(std::string(label::kStargzLayer)), 0u);
  auto c = sn_->prepare("container", "a", {});
  ASSERT_TRUE(c) << c.error().message;  // an ordinary rootfs, no nydusd asked for
  EXPECT_EQ(c->front().type, "overlay");
}

TEST_F(EstargzSnapshotter, LayersHalfPreparedByADeadProcessAreRemovedAtOpen) {
  const auto tmp = dir_ / "root" / "estargz-tmp" / "0123456789ab-XXXXXX";
  std::filesystem::create_directories(tmp);
  std::ofstream(tmp / "stargz.index.json") << "{}";
  open();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "root" / "estargz-tmp"));
}

TEST_F(EstargzSnapshotter, ALayerWhoseTocCannotBeReadIsLeftToContainerd) {
  // The registry is unreachable: the Prepare of the pulled layer answers with
  // mounts (containerd downloads and unpacks it), not AlreadyExists.
  const Labels pull{{std::string(label::kTargetSnapshotRef), "sha256:chain1"},
                    {std::string(label::kStargzReference), "127.0.0.1:1/test/esgz:v1"},
                    {std::string(label::kStargzDigest), "sha256:" + std::string(64, 'a')}};
  auto m = sn_->prepare("extract-1", "", pull);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->front().type, "bind");
  ASSERT_TRUE(sn_->commit("sha256:chain1", "extract-1", pull));
  auto info = sn_->stat("sha256:chain1");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->labels.count(std::string(label::kStargzLayer)), 0u);
}

}  // namespace
}  // namespace nydus::snapshotter
