// nydusd's JSON configuration, with upstream v2.4.4's keys, defaults and meaning
// (api/src/config.rs). Two shapes:
//   v1 (RafsConfig): {"device": {"id", "backend": {"type", "config"},
//                                "cache": {"type", "compressed", "validate", "config": {"work_dir", ...}}},
//        "mode", "digest_validate", "iostats_files", "enable_xattr", "access_pattern",
//        "latest_read_files", "amplify_io",
//        "fs_prefetch": {"enable", "threads_count", "merging_size", "bandwidth_rate", "prefetch_all"}}
//   v2 (ConfigV2): {"version": 2, "id", "backend": {"type": T, T: {...}},
//        "cache": {"type": C, "compressed", "validate", "prefetch": {...},
//                  "filecache": {"work_dir", ...}, "fscache": {"work_dir"}},
//        "rafs": {"mode", "batch_size", "validate", "enable_xattr", "iostats_files",
//                 "access_pattern", "latest_read_files",
//                 "prefetch": {"enable", "threads", "batch_size", "bandwidth_limit", "prefetch_all"}}}
// Cache types: "blobcache" and "filecache" read the v2 `filecache` section (v1:
// `config`); "fscache" the `fscache` section; "" and "dummycache" mean no
// persistent cache (see DaemonConfig::persistent_cache). Unknown fields are
// ignored; a known field of the wrong type is an error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace nydus::runtime {

// Upstream's defaults (default_prefetch_threads_count, default_prefetch_batch_size).
inline constexpr unsigned kDefaultPrefetchThreads = 8;
inline constexpr uint64_t kDefaultPrefetchBatch = 1 << 20;
// Upstream's validation bound for batch sizes (0x10000000).
inline constexpr uint64_t kMaxBatchSize = 0x10000000;

struct PrefetchConfig {
  bool enable = false;
  unsigned threads_count = kDefaultPrefetchThreads;
  uint64_t merging_size = kDefaultPrefetchBatch;  // bytes merged into one fetch_range
  uint64_t bandwidth_rate = 0;                    // bytes/s, 0 = unlimited
  // Prefetch the whole filesystem. Upstream's default is true for v1's
  // `fs_prefetch` and false for v2's `prefetch` sections.
  bool prefetch_all = false;
};

struct DaemonConfig {
  std::string id;                   // v1 device.id / v2 id (informational)
  nlohmann::json backend;           // v1 shape {"type", "config"}, for storage::make_backend
  std::string cache_type;           // as written: "blobcache", "filecache", "fscache", "dummycache", ""
  // Where the cache files go; empty: the daemon picks a scratch dir. For
  // blobcache/filecache a section without "work_dir" means "." (upstream's default).
  std::filesystem::path work_dir;
  std::string mode = "direct";      // "direct" | "cached"
  bool digest_validate = false;     // v1 digest_validate / cache.validate, v2 rafs.validate / cache.validate
  bool iostats_files = false;
  bool enable_xattr = false;
  bool access_pattern = false;      // accepted; no access-pattern recording here
  bool latest_read_files = false;   // accepted; no read-file trace here
  uint64_t amplify_io = 1 << 20;    // v1 amplify_io / v2 rafs.batch_size; 0 = no amplification
  bool amplify_io_set = false;      // given in the config (else cache_config picks by backend)
  PrefetchConfig prefetch;

  // "" / "dummycache": upstream keeps no local cache and reads the backend
  // every time. We keep chunks in the daemon's scratch dir instead (never in a
  // configured work_dir) and drop them when the image is opened again.
  bool persistent_cache() const { return !cache_type.empty() && cache_type != "dummycache"; }
};

Result<DaemonConfig> parse_config(std::string_view json_text);
// Reads a config file (at most 1 MiB, as upstream) and applies the
// IMAGE_PULL_AUTH environment variable: when set, it replaces the registry
// backend's "auth" (base64 "user:pass"), as upstream nydusd does for --config.
Result<DaemonConfig> load_config(const std::filesystem::path& path);

}  // namespace nydus::runtime
