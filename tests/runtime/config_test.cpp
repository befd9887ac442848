#include "runtime/config.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "builder/create_image.h"
#include "common/test_util.h"
#include "runtime/image_storage.h"
#include "runtime/prefetch.h"
#include "storage/backend.h"

namespace nydus::runtime {
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

// The table's order is not the blob's: files stored side by side still merge
// into one request (one round trip instead of one per file).
// An image of one 5000-byte file per letter of `names` (files "a", "b", ...).
std::shared_ptr<const format::Bootstrap> letters_image(const test::TempDir& tmp, const std::string& names) {
  std::filesystem::create_directories(tmp / "src");
  for (char c : names) test::write_file(tmp / "src" / std::string(1, c), std::string(5000, c));
  builder::CreateOptions o;
  o.source = tmp / "src";
  o.bootstrap = tmp / "boot";
  o.blob_dir = tmp / "blobs";
  if (!builder::create_image(o)) return nullptr;
  auto boot = format::Bootstrap::open(tmp / "boot");
  return boot ? std::shared_ptr<const format::Bootstrap>(std::move(*boot)) : nullptr;
}

TEST(PlanPrefetch, TableOrderAgainstBlobOrderStillMerges) {
  test::TempDir tmp;
  auto boot = letters_image(tmp, "abcdef");
  ASSERT_TRUE(boot);
  std::vector<uint64_t> nids;
  for (const char* p : {"/f", "/b", "/d", "/a", "/e", "/c"}) nids.push_back(*boot->resolve(p));
  auto plan = plan_prefetch(*boot, nids, 1 << 20);
  ASSERT_TRUE(plan) << plan.error().message;
  ASSERT_EQ(plan->size(), 1u);
  EXPECT_EQ((*plan)[0].offset, 0u);
  EXPECT_EQ((*plan)[0].len, 5 * 8192u + 5000);  // six 5000-byte chunks, each starting 4 KiB aligned
  // Ranges come in the table's order: two chunks per range, the one with /f first.
  auto one = plan_prefetch(*boot, nids, 16384);
  ASSERT_TRUE(one);
  ASSERT_EQ(one->size(), 3u);  // a+b, c+d, e+f
  EXPECT_EQ((*one)[0].offset, 4 * 8192u);
  EXPECT_EQ((*one)[1].offset, 0u);
  EXPECT_EQ((*one)[2].offset, 2 * 8192u);
}

// While a reader waits on a miss, the prefetcher keeps at most four fetches
// in flight (eight would leave the read a thin share of the link), and only
// for a bounded time per range: a reader that always waits cannot starve it.
class DemandTarget : public PrefetchTarget {
 public:
  bool is_ready(const PrefetchRange&) override { return false; }
  Status fetch(const PrefetchRange&) override {
    const bool demand = std::chrono::steady_clock::now() < demand_until;
    std::unique_lock lk(mu);
    running++;
    int& peak = demand ? max_during_demand : max_after;
    peak = std::max(peak, running);
    cv.notify_all();
    // After the demand, hold each fetch until more than 4 run at once (or a
    // while): the check does not depend on how the threads get scheduled.
    if (demand) {
      lk.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
      lk.lock();
    } else {
      cv.wait_for(lk, std::chrono::seconds(2), [&] { return max_after > 4; });
    }
    running--;
    fetched++;
    return ok();
  }
  bool demand_waiting() override { return std::chrono::steady_clock::now() < demand_until; }
  std::chrono::steady_clock::time_point demand_until;
  std::mutex mu;
  std::condition_variable cv;
  int running = 0, max_during_demand = 0, max_after = 0, fetched = 0;
};

TEST(Prefetcher, LeavesTheLinkToAWaitingReaderButNotForever) {
  test::TempDir tmp;
  auto shared = letters_image(tmp, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV");
  ASSERT_TRUE(shared);
  PrefetchConfig cfg;
  cfg.prefetch_all = true;
  cfg.threads_count = 8;
  cfg.merging_size = 4096;  // one range per file: 48 ranges (at most ~20 go during the demand)
  for (auto demand : {std::chrono::milliseconds(200), std::chrono::milliseconds(60000)}) {
    auto target = std::make_shared<DemandTarget>();
    const auto t0 = std::chrono::steady_clock::now();
    target->demand_until = t0 + demand;
    Prefetcher p(shared, target, cfg);
    p.start();
    for (int i = 0; i < 1000 && !p.stats().finished; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(p.stats().finished) << "the prefetch waited without bound";
    EXPECT_EQ(target->fetched, 48);
    EXPECT_GE(target->max_during_demand, 1);
    if (demand < std::chrono::seconds(1)) {
      // (With a reader that always waits, a worker past its 500 ms goes anyway:
      // there only the bounded finish above counts.)
      EXPECT_LE(target->max_during_demand, 4) << "more fetches ran while a reader waited";
      EXPECT_GT(target->max_after, 4) << "the prefetch did not get its threads back";
    }
  }
}

}  // namespace
}  // namespace nydus::runtime

// ---- upstream v2.4.4 keys, defaults and meaning (api/src/config.rs) --------

namespace nydus::runtime {
namespace {

std::string fixture(const std::string& rel) { return test::compat_fixture(rel); }

TEST(ConfigUpstream, V2BlobcacheReadsTheFilecacheSection) {
  // upstream is_filecache(): "blobcache" and "filecache" both use `filecache`.
  for (const char* type : {"blobcache", "filecache"}) {
    auto c = parse_config(fmt::format(R"({{"version": 2, "backend": {{"type": "localfs", "localfs": {{"dir": "/b"}}}},
        "cache": {{"type": "{}", "filecache": {{"work_dir": "/var/lib/nydus/cache"}}}}}})", type));
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->cache_type, type);
    EXPECT_EQ(c->work_dir, "/var/lib/nydus/cache") << type;
    EXPECT_TRUE(c->persistent_cache());
  }
  // A section named after the type is not upstream's and is not read.
  auto c = parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "cache": {"type": "blobcache", "blobcache": {"work_dir": "/elsewhere"}}})");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->work_dir.empty());
  // filecache without work_dir: upstream's default ".".
  c = parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "cache": {"type": "filecache", "filecache": {"disable_indexed_map": false}}})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->work_dir, ".");
}

TEST(ConfigUpstream, V2FscacheSection) {
  auto c = parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "cache": {"type": "fscache", "filecache": {"work_dir": "/wrong"}, "fscache": {"work_dir": "/fs"}}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->cache_type, "fscache");
  EXPECT_EQ(c->work_dir, "/fs");
}

TEST(ConfigUpstream, DummycacheKeepsNothingAndIgnoresWorkDir) {
  auto v1 = parse_config(R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}},
      "cache": {"type": "dummycache", "config": {"work_dir": "/must/not/be/used"}}}, "mode": "direct"})");
  ASSERT_TRUE(v1) << v1.error().message;
  EXPECT_EQ(v1->cache_type, "dummycache");
  EXPECT_TRUE(v1->work_dir.empty());
  EXPECT_FALSE(v1->persistent_cache());
  auto v2 = parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "cache": {"type": "dummycache", "filecache": {"work_dir": "/x"}}})");
  ASSERT_TRUE(v2) << v2.error().message;
  EXPECT_TRUE(v2->work_dir.empty());
  EXPECT_FALSE(v2->persistent_cache());
  // No cache section at all is upstream's "" (dummy) as well.
  auto none = parse_config(R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}}, "mode": "direct"})");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->persistent_cache());
  auto bad = parse_config(R"({"device": {"backend": {"type": "localfs"}, "cache": {"type": "memcache"}}})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("memcache"), std::string::npos);
}

TEST(ConfigUpstream, V1WorkDirDefaultsToDot) {
  auto c = parse_config(R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}},
      "cache": {"type": "blobcache", "compressed": true, "config": {}}}, "mode": "direct"})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->work_dir, ".");
}

// amplify_io in effect (cache_config): as written when given (0: none, as
// upstream), else 1 MiB for a remote backend and 128 KiB for a local blob.
TEST(ConfigUpstream, AmplifyIoDefaultsByBackend) {
  auto amplify = [](const std::string& text) -> uint64_t {
    auto c = parse_config(text);
    EXPECT_TRUE(c) << (c ? "" : c.error().message);
    return c ? cache_config(*c, "/tmp").amplify_io : ~0ull;
  };
  const std::string local = R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}}, "mode": "direct")";
  const std::string remote =
      R"({"device": {"backend": {"type": "registry", "config": {"host": "h", "repo": "r"}}}, "mode": "direct")";
  EXPECT_EQ(amplify(local + "}"), 128u << 10);
  EXPECT_EQ(amplify(remote + "}"), 1u << 20);
  EXPECT_EQ(amplify(local + R"(, "amplify_io": 2097152})"), 2u << 20);
  EXPECT_EQ(amplify(local + R"(, "amplify_io": 0})"), 0u);
  EXPECT_EQ(amplify(remote + R"(, "amplify_io": 0})"), 0u);
  EXPECT_EQ(amplify(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "rafs": {"batch_size": 65536}})"), 64u << 10);
  EXPECT_EQ(amplify(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}}})"), 128u << 10);
}

TEST(ConfigUpstream, V1FsPrefetchDefaults) {
  // FsPrefetchControl: threads_count 8, merging_size 1 MiB, prefetch_all true.
  auto c = parse_config(R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}},
      "mode": "direct", "fs_prefetch": {"enable": true}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->prefetch.enable);
  EXPECT_EQ(c->prefetch.threads_count, 8u);
  EXPECT_EQ(c->prefetch.merging_size, 1u << 20);
  EXPECT_EQ(c->prefetch.bandwidth_rate, 0u);
  EXPECT_TRUE(c->prefetch.prefetch_all);
  EXPECT_EQ(c->amplify_io, 1u << 20);
  // An explicit false stays false (the snapshotter writes "prefetch_all": false).
  c = parse_config(R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}},
      "mode": "direct", "fs_prefetch": {"enable": true, "prefetch_all": false, "threads_count": 2}})");
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->prefetch.prefetch_all);
  EXPECT_EQ(c->prefetch.threads_count, 2u);
}

TEST(ConfigUpstream, V2PrefetchDefaultsAndSource) {
  // PrefetchConfigV2: threads 8, batch_size 1 MiB, prefetch_all false.
  auto c = parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "rafs": {"mode": "direct", "prefetch": {"enable": true}}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->prefetch.threads_count, 8u);
  EXPECT_EQ(c->prefetch.merging_size, 1u << 20);
  EXPECT_FALSE(c->prefetch.prefetch_all);
  // Without rafs.prefetch, a blob entry's cache.prefetch drives prefetch.
  c = parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "cache": {"type": "fscache", "fscache": {"work_dir": "/c"},
                "prefetch": {"enable": true, "threads": 3, "batch_size": 4096, "bandwidth_limit": 7}}})");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->prefetch.enable);
  EXPECT_EQ(c->prefetch.threads_count, 3u);
  EXPECT_EQ(c->prefetch.merging_size, 4096u);
  EXPECT_EQ(c->prefetch.bandwidth_rate, 7u);
}

TEST(ConfigUpstream, ValidationBoundsAsUpstream) {
  const std::string base = R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}}, "mode": "direct", )";
  EXPECT_FALSE(parse_config(base + R"("fs_prefetch": {"enable": true, "threads_count": 0}})"));
  EXPECT_TRUE(parse_config(base + R"("fs_prefetch": {"enable": false, "threads_count": 0}})"));
  EXPECT_FALSE(parse_config(base + R"("fs_prefetch": {"enable": true, "threads_count": 1025}})"));
  EXPECT_FALSE(parse_config(base + R"("fs_prefetch": {"enable": true, "merging_size": 268435457}})"));
  EXPECT_FALSE(parse_config(base + R"("amplify_io": 268435457})"));
  EXPECT_TRUE(parse_config(base + R"("amplify_io": 0})"));
  EXPECT_FALSE(parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "rafs": {"mode": "weird"}})"));
  // Encryption of the cache is refused, not silently ignored.
  auto enc = parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "cache": {"type": "filecache", "filecache": {"work_dir": "/c", "enable_encryption": true}}})");
  ASSERT_FALSE(enc);
  EXPECT_EQ(enc.error().code, Errc::kUnsupported);
}

TEST(ConfigUpstream, ValidateFromCacheOrRafs) {
  // is_chunk_validation_enabled(): cache.validate || rafs.validate; v1 cache.validate too.
  auto v1 = parse_config(R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}},
      "cache": {"type": "blobcache", "validate": true, "config": {"work_dir": "/c"}}}, "mode": "direct"})");
  ASSERT_TRUE(v1);
  EXPECT_TRUE(v1->digest_validate);
  auto v2 = parse_config(R"({"version": 2, "backend": {"type": "localfs", "localfs": {"dir": "/b"}},
      "cache": {"type": "filecache", "validate": true, "filecache": {"work_dir": "/c"}},
      "rafs": {"validate": false}})");
  ASSERT_TRUE(v2);
  EXPECT_TRUE(v2->digest_validate);
}

TEST(ConfigUpstream, V2HttpProxyBackendSectionName) {
  auto c = parse_config(R"({"version":2,"backend":{"type":"http-proxy","http-proxy":{"addr":"/tmp"}}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->backend["type"], "http-proxy");
  EXPECT_EQ(c->backend["config"]["addr"], "/tmp");
}

TEST(ConfigUpstream, UpstreamUnitTestSamples) {
  // api/src/config.rs test_sample_config_file and test_snapshotter_sample_config.
  auto a = parse_config(R"({"device": {"backend": {"type": "localfs", "config": {"dir": "/tmp/AM7TxD/blobs",
      "readahead": true}}, "cache": {"type": "blobcache", "compressed": true, "config": {"work_dir":
      "/tmp/AM7TxD/cache"}}}, "mode": "cached", "digest_validate": true, "iostats_files": false})");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->work_dir, "/tmp/AM7TxD/cache");
  auto b = parse_config(R"({"device": {"backend": {"type": "registry", "config": {"readahead": false,
      "host": "localhost", "repo": "vke/golang", "auth": "", "scheme": "https", "proxy": {"fallback": false},
      "timeout": 5, "connect_timeout": 5, "retry_limit": 2}}, "cache": {"type": "blobcache", "compressed": true,
      "config": {"work_dir": "/var/lib/containerd/io.containerd.snapshotter.v1.nydus/cache",
      "disable_indexed_map": false}}}, "mode": "direct", "digest_validate": false, "enable_xattr": true,
      "fs_prefetch": {"enable": true, "prefetch_all": true, "threads_count": 8, "merging_size": 1048576,
      "bandwidth_rate": 0}})");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_TRUE(storage::make_backend(b->backend)) << "registry backend from the snapshotter sample";
}

TEST(ConfigUpstream, ImagePullAuthReplacesRegistryAuth) {
  test::TempDir tmp;
  const auto path = tmp / "c.json";
  test::write_file(path, fixture("snapshotter-configs/fusedev-registry.json"));
  ::unsetenv("IMAGE_PULL_AUTH");
  auto plain = load_config(path);
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(plain->backend["config"]["auth"], "dXNlcjpwYXNz");
  ::setenv("IMAGE_PULL_AUTH", "bmV3Om5ldw==", 1);
  auto over = load_config(path);
  auto parsed = parse_config(fixture("snapshotter-configs/fusedev-registry.json"));  // API mounts: not applied
  auto localfs_path = tmp / "l.json";
  test::write_file(localfs_path, fixture("snapshotter-configs/fusedev-localfs.json"));
  auto localfs = load_config(localfs_path);
  ::unsetenv("IMAGE_PULL_AUTH");
  ASSERT_TRUE(over && parsed && localfs);
  EXPECT_EQ(over->backend["config"]["auth"], "bmV3Om5ldw==");
  EXPECT_EQ(parsed->backend["config"]["auth"], "dXNlcjpwYXNz");
  EXPECT_FALSE(localfs->backend["config"].contains("auth"));
}

TEST(ConfigUpstream, TooBigFileRefused) {
  test::TempDir tmp;
  test::write_file(tmp / "big.json", std::string(1 << 20, ' ') + "{}");
  EXPECT_FALSE(load_config(tmp / "big.json"));
}

// Every RAFS config upstream ships (tests/compat/fixtures/upstream-configs, see its README).
TEST(ConfigUpstream, UpstreamExampleFiles) {
  for (const char* f : {"dragonfly--nydusd-config.json", "dragonfly--nydusd-http-proxy-nofallback-config.json",
                        "dragonfly--nydusd-proxy-error-fallback.json", "dragonfly--nydusd-proxy-error-nofallback.json",
                        "dragonfly--nydusd-sdk-config.json", "dragonfly--nydusd-sdk-fallback-config.json"}) {
    auto c = parse_config(fixture(std::string("upstream-configs/") + f));
    ASSERT_TRUE(c) << f << ": " << c.error().message;
    EXPECT_EQ(c->backend["config"]["host"], "ghcr.io") << f;
    EXPECT_EQ(c->cache_type, "blobcache");
    EXPECT_TRUE(c->work_dir.string().starts_with("/tmp/nydus-")) << f;
    EXPECT_TRUE(c->digest_validate) << f;  // "digest_validate" and cache "validate"
    EXPECT_EQ(c->prefetch.threads_count, 10u);
    EXPECT_EQ(c->prefetch.merging_size, 131072u);
    EXPECT_EQ(c->prefetch.bandwidth_rate, 1048576u);
    EXPECT_TRUE(c->prefetch.prefetch_all);  // v1 default
    auto b = storage::make_backend(c->backend);
    EXPECT_TRUE(b) << f << ": " << (b ? "" : b.error().message);
  }
  auto sdk = parse_config(fixture("upstream-configs/dragonfly--nydusd-sdk-config.json"));
  EXPECT_EQ(sdk->backend["config"]["proxy"]["dragonfly_scheduler_endpoint"], "http://127.0.0.1:8002");
  // Refused by upstream (registry without host / repo): the backend refuses them here.
  for (const char* f : {"configs--nydusd-config.json", "performance--nydusd_config.json"}) {
    auto c = parse_config(fixture(std::string("upstream-configs/") + f));
    ASSERT_TRUE(c) << f << ": " << c.error().message;
    EXPECT_FALSE(storage::make_backend(c->backend)) << f;
  }
  auto perf = parse_config(fixture("upstream-configs/performance--nydusd_config.json"));
  EXPECT_EQ(perf->work_dir, "/var/lib/containerd/io.containerd.snapshotter.v1.nydus/cache");
  EXPECT_FALSE(perf->prefetch.enable);
  auto toml = parse_config(fixture("upstream-configs/configs--nydusd-config-v2.toml"));
  ASSERT_FALSE(toml);
  EXPECT_EQ(toml.error().code, Errc::kUnsupported);
}

// What nydus-snapshotter v0.15.15 writes for fusedev (tests/compat/fixtures/snapshotter-configs).
TEST(ConfigUpstream, SnapshotterGeneratedConfigs) {
  auto reg = parse_config(fixture("snapshotter-configs/fusedev-registry.json"));
  ASSERT_TRUE(reg) << reg.error().message;
  EXPECT_EQ(reg->id, "/12");
  EXPECT_EQ(reg->work_dir, "/var/lib/containerd/io.containerd.snapshotter.v1.nydus/cache");
  EXPECT_TRUE(reg->prefetch.enable);
  EXPECT_TRUE(reg->prefetch.prefetch_all);
  EXPECT_EQ(reg->prefetch.threads_count, 8u);
  auto rb = storage::make_backend(reg->backend);
  ASSERT_TRUE(rb) << rb.error().message;
  EXPECT_STREQ((*rb)->type(), "registry");
  auto mirrors = parse_config(fixture("snapshotter-configs/fusedev-registry-token-mirrors.json"));
  ASSERT_TRUE(mirrors) << mirrors.error().message;
  auto mb = storage::make_backend(mirrors->backend);
  EXPECT_TRUE(mb) << mb.error().message;
  auto lfs = parse_config(fixture("snapshotter-configs/fusedev-localfs.json"));
  ASSERT_TRUE(lfs) << lfs.error().message;
  EXPECT_FALSE(lfs->prefetch.prefetch_all);
  EXPECT_EQ(lfs->prefetch.threads_count, 2u);
  EXPECT_EQ(lfs->prefetch.merging_size, 1u << 20);
  EXPECT_TRUE(storage::make_backend(lfs->backend));
}

}  // namespace
}  // namespace nydus::runtime
