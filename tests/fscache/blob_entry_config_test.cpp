// PUT /api/v2/blobs bodies (upstream's BlobCacheEntry, api/src/config.rs):
// exactly what nydus-snapshotter v0.15.15 sends from BindBlob (legacy
// "config" form), the config_v2 form, and the entry upstream ships in
// misc/configs (tests/compat/fixtures/*, see their READMEs).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/test_util.h"
#include "fscache/blob_entry.h"
#include "storage/backend.h"

namespace nydus::fscache {
namespace {

std::string fixture(const std::string& rel) { return test::compat_fixture(rel); }

TEST(BlobEntryUpstream, SnapshotterBindBlobBody) {
  auto e = parse_blob_entry(fixture("snapshotter-configs/fscache-bindblob.json"));
  ASSERT_TRUE(e) << e.error().message;
  // erofs.FscacheID("12") = sha256("nydus-snapshot-12").
  EXPECT_EQ(e->id.size(), 64u);
  EXPECT_EQ(e->domain_id, e->id);
  EXPECT_EQ(e->metadata_path, "/var/lib/containerd/io.containerd.snapshotter.v1.nydus/snapshots/12/fs/image/image.boot");
  EXPECT_EQ(e->config.cache_type, "fscache");
  EXPECT_EQ(e->config.work_dir, "/var/lib/containerd/io.containerd.snapshotter.v1.nydus/cache");
  EXPECT_TRUE(e->config.prefetch.enable);
  EXPECT_EQ(e->config.prefetch.threads_count, 8u);
  EXPECT_EQ(e->config.prefetch.merging_size, 1u << 20);
  EXPECT_EQ(e->config.backend["type"], "registry");
  EXPECT_EQ(e->config.backend["config"]["auth"], "dXNlcjpwYXNz");
  auto b = storage::make_backend(e->config.backend);
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_STREQ((*b)->type(), "registry");
}

TEST(BlobEntryUpstream, ConfigV2Form) {
  // BlobCacheEntryConfigV2: backend/cache sections by type name, metadata_path.
  auto e = parse_blob_entry(R"({"type": "bootstrap", "id": "img1", "domain_id": "d1",
    "config_v2": {"version": 2, "id": "factory1",
      "backend": {"type": "registry", "registry": {"scheme": "", "host": "ghcr.io", "repo": "a/b",
                  "skip_verify": true, "ca_cert_files": [], "blob_redirected_host": "blobs.example.com"}},
      "cache": {"type": "fscache", "fscache": {"work_dir": "/var/cache/fs"},
                "prefetch": {"enable": true, "threads": 2, "batch_size": 65536, "bandwidth_limit": 0}},
      "metadata_path": "/path/to/image.boot"}})");
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(e->config.work_dir, "/var/cache/fs");
  EXPECT_EQ(e->config.prefetch.threads_count, 2u);
  EXPECT_EQ(e->config.prefetch.merging_size, 65536u);
  EXPECT_EQ(e->metadata_path, "/path/to/image.boot");
  EXPECT_TRUE(storage::make_backend(e->config.backend));
}

TEST(BlobEntryUpstream, ShippedExamples) {
  // misc/configs/nydusd-boostrap-blob-cache-entry.json names "metadata_file",
  // which upstream does not read either: the bootstrap has no metadata path.
  auto e = parse_blob_entry(fixture("upstream-configs/configs--nydusd-boostrap-blob-cache-entry.json"));
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("metadata_path"), std::string::npos);
  // The TOML examples: TOML is not supported.
  for (const char* f : {"configs--nydusd-blob-cache-entry.toml", "configs--nydusd-blob-cache-entry-configuration-v2.toml"})
    EXPECT_FALSE(parse_blob_entry(fixture(std::string("upstream-configs/") + f))) << f;
}

}  // namespace
}  // namespace nydus::fscache
