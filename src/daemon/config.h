// nydusd's JSON configuration, as upstream writes it. Two shapes:
//   v1: {"device": {"backend": {"type", "config"}, "cache": {"type", "config": {"work_dir"}}},
//        "mode", "digest_validate", "iostats_files", "enable_xattr", "amplify_io",
//        "fs_prefetch": {"enable", "threads_count", "merging_size", "bandwidth_rate", "prefetch_all"}}
//   v2: {"version": 2, "backend": {"type": T, T: {...}}, "cache": {"type": C, C: {"work_dir"}},
//        "rafs": {"mode", "validate", "enable_xattr", "iostats_files", "batch_size",
//                 "prefetch": {"enable", "threads_count"|"threads", "batch_size", "bandwidth_limit", "prefetch_all"}}}
// Unknown fields are ignored; a known field of the wrong type is an error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace nydus::daemon {

struct PrefetchConfig {
  bool enable = false;
  unsigned threads_count = 4;
  uint64_t merging_size = 1 << 20;  // bytes merged into one fetch_range
  uint64_t bandwidth_rate = 0;      // bytes/s, 0 = unlimited
  bool prefetch_all = false;
};

struct DaemonConfig {
  nlohmann::json backend;           // v1 shape {"type", "config"}, for storage::make_backend
  std::string cache_type;           // "blobcache", "filecache", "" (none)
  std::filesystem::path work_dir;   // empty: the daemon picks one
  std::string mode = "direct";      // "direct" | "cached"
  bool digest_validate = false;
  bool iostats_files = false;
  bool enable_xattr = false;
  uint64_t amplify_io = 1 << 20;
  PrefetchConfig prefetch;
};

Result<DaemonConfig> parse_config(std::string_view json_text);
Result<DaemonConfig> load_config(const std::filesystem::path& path);

}  // namespace nydus::daemon
