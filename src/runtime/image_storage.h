// The storage side of a mounted image, shared by the FUSE and fanotify modes:
// the backend from the config and one blob cache per blob of the bootstrap,
// with the bootstrap's chunk digests when digest validation is on.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>


#include "common/result.h"
#include "format/bootstrap.h"
#include "runtime/config.h"
#include "storage/backend.h"
#include "storage/blob_cache.h"

namespace nydus::runtime {

struct ImageStorage {
  std::shared_ptr<storage::Backend> backend;  // null for an image without blobs
  std::vector<std::shared_ptr<storage::BlobCache>> caches;  // by blob index
  std::filesystem::path work_dir;
};

// The blob cache settings of a config; `fallback_work_dir` is used when the
// config names no cache work_dir.
storage::CacheConfig cache_config(const DaemonConfig& cfg, const std::filesystem::path& fallback_work_dir);
// Each blob's chunk digests by ci index, from the bootstrap's chunk table
// (what digest validation compares against).
Result<std::vector<std::vector<format::Digest>>> chunk_digests(const format::Bootstrap& boot);

// The backend and one blob cache per blob of `boot`.
Result<ImageStorage> open_image_storage(const format::Bootstrap& boot, const DaemonConfig& cfg,
                                        const std::filesystem::path& fallback_work_dir);

}  // namespace nydus::runtime
