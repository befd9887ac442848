#include "daemon/config.h"

#include <gtest/gtest.h>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "daemon/prefetch.h"

namespace nydus::daemon {
namespace {

TEST(Config, UpstreamV1) {
  auto c = parse_config(R"({
    "device": {"backend": {"type": "localfs", "config": {"dir": "/blobs"}},
               "cache": {"type": "blobcache", "config": {"work_dir": "/cache"}}},
    "mode": "cached", "digest_validate": true, "iostats_files": true, "enable_xattr": true,
    "amplify_io": 4096, "latest_read_files": true, "unknown": {"x": 1},
    "fs_prefetch": {"enable": true, "threads_count": 3, "merging_size": 65536,
                    "bandwidth_rate": 1000, "prefetch_all": true}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->backend["type"], "localfs");
  EXPECT_EQ(c->backend["config"]["dir"], "/blobs");
  EXPECT_EQ(c->cache_type, "blobcache");
  EXPECT_EQ(c->work_dir, "/cache");
  EXPECT_EQ(c->mode, "cached");
  EXPECT_TRUE(c->digest_validate);
  EXPECT_TRUE(c->iostats_files);
  EXPECT_TRUE(c->enable_xattr);
  EXPECT_EQ(c->amplify_io, 4096u);
  EXPECT_TRUE(c->prefetch.enable);
  EXPECT_EQ(c->prefetch.threads_count, 3u);
  EXPECT_EQ(c->prefetch.merging_size, 65536u);
  EXPECT_EQ(c->prefetch.bandwidth_rate, 1000u);
  EXPECT_TRUE(c->prefetch.prefetch_all);
}

TEST(Config, DefaultsAndEmptyCache) {
  auto c = parse_config(R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}},
                                       "cache": {"type": ""}}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->cache_type, "");
  EXPECT_TRUE(c->work_dir.empty());
  EXPECT_EQ(c->mode, "direct");
  EXPECT_FALSE(c->digest_validate);
  EXPECT_FALSE(c->prefetch.enable);
}

TEST(Config, V2) {
  auto c = parse_config(R"({"version": 2, "id": "x",
    "backend": {"type": "localfs", "localfs": {"dir": "/blobs"}},
    "cache": {"type": "filecache", "filecache": {"work_dir": "/cache"}},
    "rafs": {"mode": "direct", "validate": true, "enable_xattr": true,
             "prefetch": {"enable": true, "threads": 2, "batch_size": 8192, "bandwidth_limit": 5}}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->backend["type"], "localfs");
  EXPECT_EQ(c->backend["config"]["dir"], "/blobs");
  EXPECT_EQ(c->work_dir, "/cache");
  EXPECT_TRUE(c->digest_validate);
  EXPECT_TRUE(c->enable_xattr);
  EXPECT_EQ(c->prefetch.threads_count, 2u);
  EXPECT_EQ(c->prefetch.merging_size, 8192u);
  EXPECT_EQ(c->prefetch.bandwidth_rate, 5u);
}

TEST(Config, Errors) {
  // Wrong types name the field.
  auto c = parse_config(R"({"device": {"backend": {"type": "localfs"}}, "digest_validate": "yes"})");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("digest_validate"), std::string::npos);
  c = parse_config(R"({"device": {"backend": {}}, "fs_prefetch": {"threads_count": -1}})");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("fs_prefetch.threads_count"), std::string::npos);
  EXPECT_FALSE(parse_config(R"({"device": {"backend": {}}, "mode": "weird"})"));
  EXPECT_FALSE(parse_config(R"({})"));
  EXPECT_FALSE(parse_config("not json"));
  EXPECT_FALSE(parse_config("[]"));
  c = parse_config(R"({"version": 3})");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Errc::kUnsupported);
}

TEST(TokenBucket, UnlimitedAndLimited) {
  TokenBucket unlimited(0);
  EXPECT_EQ(unlimited.reserve(1 << 30), 0u);
  TokenBucket b(1000);  // starts with one second's worth
  EXPECT_EQ(b.reserve(1000), 0u);
  const uint64_t wait = b.reserve(500);  // ~0.5 s of debt
  EXPECT_GT(wait, 400'000'000u);
  EXPECT_LT(wait, 600'000'000u);
}

TEST(PlanPrefetch, DirectoryExpandsAndMerges) {
  test::TempDir tmp;
  auto src = tmp / "src";
  std::filesystem::create_directories(src / "d" / "e");
  const std::string f1 = std::string(4096, 'a') + std::string(4096, 'b') + std::string(4096, 'c');
  test::write_file(src / "d" / "f1", f1);
  test::write_file(src / "d" / "e" / "f2", std::string(4096, 'x') + std::string(10, 'y'));
  test::write_file(src / "d" / "dup", f1);  // dedups with f1
  test::write_file(src / "other", std::string(4096, 'z'));
  builder::CreateOptions o;
  o.source = src;
  o.bootstrap = tmp / "boot";
  o.blob_dir = tmp / "blobs";
  o.chunk_size = 0x1000;
  std::filesystem::create_directories(o.blob_dir);
  ASSERT_TRUE(builder::create_image(o));
  auto boot = format::Bootstrap::open(tmp / "boot");
  ASSERT_TRUE(boot);
  auto d = (*boot)->resolve("/d");
  ASSERT_TRUE(d);
  auto all = plan_prefetch(**boot, {*d}, 1 << 20);
  ASSERT_TRUE(all) << all.error().message;
  uint64_t bytes = 0;
  for (const auto& r : *all) bytes += r.len;
  // f1's 3 chunks + f2's 2 chunks; dup adds nothing, "other" is outside /d.
  EXPECT_EQ(bytes, 3 * 4096u + 4096 + 10);
  // Merging limited to one chunk: one range per chunk.
  auto small = plan_prefetch(**boot, {*d}, 4096);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->size(), 5u);
  EXPECT_LE(all->size(), small->size());
  for (const auto& r : *small) EXPECT_LE(r.len, 4096u);
}

}  // namespace
}  // namespace nydus::daemon
