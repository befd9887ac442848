// Blob entries as nydus-snapshotter sends them, and the registry that maps the
// kernel's (volume, cookie) keys back to images: domains, sharing, removal.
#include "fscache/blob_registry.h"

#include <gtest/gtest.h>

#include "fscache/fscache_test_util.h"

namespace nydus::fscache {
namespace {

using nlohmann::json;

TEST(BlobEntry, V2AndLegacyShapes) {
  nydus::test::TempDir tmp;
  auto v2 = parse_blob_entry(R"({"type":"bootstrap","id":"img","domain_id":"d","config_v2":{"version":2,
      "backend":{"type":"localfs","localfs":{"dir":"/b"}},
      "cache":{"type":"fscache","fscache":{"work_dir":"/w"},"prefetch":{"enable":true,"threads_count":3}},
      "metadata_path":"/m/boot"}})");
  ASSERT_TRUE(v2) << v2.error().message;
  EXPECT_EQ(v2->id, "img");
  EXPECT_EQ(v2->domain_id, "d");
  EXPECT_EQ(v2->metadata_path, "/m/boot");
  EXPECT_EQ(v2->config.work_dir, "/w");
  EXPECT_EQ(v2->config.backend["type"], "localfs");
  EXPECT_TRUE(v2->config.prefetch.enable);
  EXPECT_EQ(v2->config.prefetch.threads_count, 3u);

  auto legacy = parse_blob_entry(R"({"type":"bootstrap","id":"img","config":{"id":"x",
      "backend_type":"registry","backend_config":{"host":"h","repo":"r"},
      "cache_type":"fscache","cache_config":{"work_dir":"/w2"},
      "prefetch_config":{"enable":true,"threads_count":2,"merging_size":65536},"metadata_path":"/m/b"}})");
  ASSERT_TRUE(legacy) << legacy.error().message;
  EXPECT_EQ(legacy->config.backend["type"], "registry");
  EXPECT_EQ(legacy->config.backend["config"]["host"], "h");
  EXPECT_EQ(legacy->config.work_dir, "/w2");
  EXPECT_EQ(legacy->config.prefetch.merging_size, 65536u);
}

TEST(BlobEntry, BadEntriesAreRefusedWithAReason) {
  for (const char* body : {
           "not json", "[]", R"({"id":"x"})", R"({"type":"datablob","id":"x","config_v2":{}})",
           R"({"type":"bootstrap","id":"a/b","config_v2":{"version":2,"backend":{"type":"localfs"},"metadata_path":"/m"}})",
           R"({"type":"bootstrap","id":"a,b","config_v2":{"version":2,"backend":{"type":"localfs"},"metadata_path":"/m"}})",
           R"({"type":"bootstrap","id":"a b","config_v2":{"version":2,"backend":{"type":"localfs"},"metadata_path":"/m"}})",
           R"({"type":"bootstrap","id":"x","config_v2":{"version":"2","backend":{"type":"localfs"},"metadata_path":"/m"}})",
           R"({"type":"bootstrap","id":"x","config_v2":{"version":2,"backend":{"type":"localfs"}}})",
           R"({"type":"bootstrap","id":"x"})", R"({"type":"bootstrap","id":7,"config_v2":{}})"}) {
    auto e = parse_blob_entry(body);
    ASSERT_FALSE(e) << body;
    EXPECT_EQ(e.error().code, Errc::kInvalidArgument) << body;
  }
}

class BlobRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override { img_ = test::build_image(tmp_ / "img", 3); }
  Status add(const std::string& fsid, const std::string& domain) {
    auto e = parse_blob_entry(test::entry_json(img_, fsid, domain, tmp_ / "work"));
    if (!e) return std::unexpected(e.error());
    return reg_.add(*e);
  }
  nydus::test::TempDir tmp_;
  test::TestImage img_;
  BlobRegistry reg_{tmp_.path() / "default"};
};

TEST_F(BlobRegistryTest, KernelKeysFindTheirObjects) {
  ASSERT_TRUE(add("solo", ""));
  ASSERT_TRUE(add("a", "dom"));
  // Without a domain the volume is named after the fsid.
  auto boot = reg_.find("erofs,solo", "solo");
  ASSERT_TRUE(boot);
  EXPECT_TRUE(boot->is_bootstrap);
  EXPECT_EQ(boot->source->size(), nydus::test::read_file(img_.bootstrap).size());
  auto blob = reg_.find("erofs,solo", img_.blob_id);
  ASSERT_TRUE(blob);
  EXPECT_FALSE(blob->is_bootstrap);
  EXPECT_EQ(blob->source->size(), img_.blob_size);
  EXPECT_TRUE(reg_.find("erofs,dom", "a"));
  EXPECT_TRUE(reg_.find("erofs,dom", img_.blob_id));
  // Keys of other volumes do not leak across.
  EXPECT_FALSE(reg_.find("erofs,dom", "solo"));
  EXPECT_FALSE(reg_.find("erofs,a", "a"));
  EXPECT_FALSE(reg_.find("erofs,other", img_.blob_id));
  EXPECT_FALSE(reg_.find("erofs,solo", "nope"));
  // Both registrations of one blob in one cache dir share one source.
  EXPECT_EQ(blob->source, reg_.find("erofs,dom", img_.blob_id)->source);
}

TEST_F(BlobRegistryTest, DuplicatesAndBadBootstraps) {
  ASSERT_TRUE(add("a", "dom"));
  auto dup = add("a", "dom");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, Errc::kExists);
  ASSERT_TRUE(add("a", "other"));  // the same fsid in another domain is fine
  nydus::test::write_file(tmp_ / "junk", std::string(8192, 'x'));
  auto e = parse_blob_entry(json{{"type", "bootstrap"},
                                 {"id", "junk"},
                                 {"config_v2",
                                  {{"version", 2},
                                   {"backend", {{"type", "localfs"}, {"localfs", {{"dir", "/"}}}}},
                                   {"metadata_path", (tmp_ / "junk").string()}}}}
                                .dump());
  ASSERT_TRUE(e);
  EXPECT_FALSE(reg_.add(*e)) << "not a RAFS bootstrap";
  EXPECT_FALSE(reg_.find("erofs,junk", "junk"));
}

// A backend that only records the credentials it is given.
class AuthRecordingBackend : public storage::Backend {
 public:
  Status read(const std::string&, uint64_t, std::span<uint8_t>) override { return make_error(Errc::kIo, "no reads here"); }
  Result<uint64_t> blob_size(const std::string&) override { return make_error(Errc::kIo, "no reads here"); }
  const char* type() const override { return "registry"; }
  storage::BackendMetrics metrics() const override { return {}; }
  Status update_auth(const std::string& auth) override {
    auths.push_back(auth);
    return {};
  }
  std::vector<std::string> auths;
};

TEST_F(BlobRegistryTest, RenewedCredentialsReachTheBackendAndTheFailoverState) {
  // The legacy entry nydus-snapshotter (and ours) sends for a registry image.
  const json legacy{{"type", "bootstrap"}, {"id", "fs1"}, {"domain_id", "fs1"},
                    {"config", {{"id", "fs1"}, {"backend_type", "registry"},
                                {"backend_config", {{"host", "h"}, {"repo", "r"}, {"auth", "b2xkOm9sZA=="}}},
                                {"cache_type", "fscache"}, {"cache_config", {{"work_dir", (tmp_ / "work").string()}}},
                                {"metadata_path", img_.bootstrap.string()}}}};
  auto e = parse_blob_entry(legacy.dump());
  ASSERT_TRUE(e) << e.error().message;
  auto backend = std::make_shared<AuthRecordingBackend>();
  ASSERT_TRUE(reg_.add(*e, backend));
  ASSERT_TRUE(add("other", ""));  // another image: untouched

  auto n = reg_.update_auth("fs1", "bmV3Om5ldw==");
  ASSERT_TRUE(n) << n.error().message;
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(backend->auths, std::vector<std::string>{"bmV3Om5ldw=="});
  bool seen = false;
  for (const auto& entry : reg_.entries())
    if (entry["id"] == "fs1") {
      seen = true;
      EXPECT_EQ(entry["config"]["backend_config"]["auth"], "bmV3Om5ldw==");  // a failover re-registers with it
      EXPECT_EQ(entry["config"]["backend_config"]["host"], "h");
    } else {
      EXPECT_FALSE(entry.dump().find("bmV3Om5ldw==") != std::string::npos) << entry.dump();
    }
  EXPECT_TRUE(seen);
  auto none = reg_.update_auth("nope", "eDp5");
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, 0);
  EXPECT_EQ(backend->auths.size(), 1u);
}

TEST_F(BlobRegistryTest, RemovalReferenceCountsSharedBlobs) {
  ASSERT_TRUE(add("a", "dom"));
  ASSERT_TRUE(add("b", "dom"));
  EXPECT_EQ(reg_.list("dom", "").size(), 3u);  // two bootstraps, one shared blob
  auto gone = reg_.remove("dom", "a");
  ASSERT_TRUE(gone);
  EXPECT_EQ(*gone, (std::vector<CacheObjectName>{{"dom", "a"}})) << "b still uses the blob";
  EXPECT_TRUE(reg_.find("erofs,dom", img_.blob_id));
  gone = reg_.remove("dom", "b");
  ASSERT_TRUE(gone);
  EXPECT_EQ(*gone, (std::vector<CacheObjectName>{{"dom", "b"}, {"dom", img_.blob_id}}));
  EXPECT_FALSE(reg_.find("erofs,dom", img_.blob_id));
  EXPECT_EQ(reg_.remove("dom", "b").error().code, Errc::kNotFound);

  ASSERT_TRUE(add("x", "d2"));
  ASSERT_TRUE(add("y", "d2"));
  gone = reg_.remove("d2", "");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->size(), 3u);
  EXPECT_TRUE(reg_.list("d2", "").empty());
  EXPECT_EQ(reg_.entries().size(), 0u);
}

}  // namespace
}  // namespace nydus::fscache
