// Garbage collection of the blob cache the snapshotter's daemons share
// (<root>/cache, the blobcache work_dir of every daemon config): files named
// after a blob ID (nydus-snapshotter's pkg/cache: <id>, <id>.blob.data,
// <id>.chunk_map, <id>.blob.data.chunk_map, <id>.blob.meta, <id>.image.disk,
// <id>.layer.disk) whose blob no remaining image uses are removed.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace nydus::snapshotter {

// The blob ID a cache file belongs to ("" when the name is not a blob cache
// file: only 64 lowercase hex digits plus one of the known suffixes count).
std::string blob_id_of_cache_file(std::string_view name);

struct CacheGcResult {
  std::vector<std::string> removed;  // file names, sorted
  std::set<std::string> removed_ids;
  std::set<std::string> kept_ids;    // blob IDs with files left (in use)
  size_t errors = 0;                 // files that could not be removed
};
// Removes the blob cache files in `cache_dir` whose blob ID is not in `used`.
CacheGcResult remove_unused_cache_files(const std::string& cache_dir, const std::set<std::string>& used);

}  // namespace nydus::snapshotter
