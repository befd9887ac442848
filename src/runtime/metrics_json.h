// The metrics bodies of upstream nydusd v2.4.4's API, field by field as its
// serde output (utils/src/metrics.rs) and as nydus-snapshotter v0.15.x
// decodes them (pkg/daemon/types: FsMetrics, CacheMetrics,
// InflightMetrics). Shared by the FUSE, fanotify and fscache modes.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/fs_io_stats.h"
#include "storage/backend.h"
#include "storage/blob_cache.h"

namespace nydus::runtime {

// GET /api/v1/metrics: FsIoStats (all zero when `stats` is null: a mode
// without FUSE requests).
nlohmann::json fs_io_stats_json(const runtime::FsIoStats* stats, const std::string& id);
// GET /api/v1/metrics/blobcache: ONE BlobcacheMetrics object for the caches
// of one image (upstream: one per cache manager). `underlying_files` holds
// each blob's cache file name (`<blob_id>.blob.data`, in `store_path`), which
// the snapshotter's cache GC keeps; our per-blob detail is in "blobs".
nlohmann::json blobcache_json(const std::vector<std::shared_ptr<storage::BlobCache>>& caches,
                              const std::filesystem::path& store_path, unsigned prefetch_workers);
// GET /api/v1/metrics/backend: BackendMetrics.
nlohmann::json backend_json(const storage::Backend* backend);
// GET /api/v1/metrics/inflight: [{inode, opcode, unique, timestamp_secs}],
// or null when nothing is in progress (upstream answers 204).
nlohmann::json inflight_json(const std::vector<runtime::InflightOp>& ops);

}  // namespace nydus::runtime

namespace nydus::runtime {
// The "version" object of GET /api/v1/daemon (upstream's BuildTimeInfo:
// package_ver, git_commit, build_time, profile, rustc).
nlohmann::json build_time_info_json();
}  // namespace nydus::runtime
