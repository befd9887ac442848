#include "daemon/image_storage.h"

namespace nydus::daemon {

Result<ImageStorage> open_image_storage(const format::Bootstrap& boot, const DaemonConfig& cfg,
                                        const std::filesystem::path& fallback_work_dir) {
  ImageStorage out;
  const auto& blobs = boot.blobs();
  if (!blobs.empty()) {
    NYDUS_ASSIGN_OR_RETURN(out.backend, storage::make_backend(cfg.backend));
  }
  storage::CacheConfig cc;
  cc.work_dir = cfg.work_dir.empty() ? fallback_work_dir : cfg.work_dir;
  cc.digest_validate = cfg.digest_validate;
  if (cfg.amplify_io > 0) cc.amplify_io = cfg.amplify_io;
  std::error_code ec;
  std::filesystem::create_directories(cc.work_dir, ec);
  if (ec) return sys_error(fmt::format("create cache dir {}", cc.work_dir.string()), ec.value());
  out.work_dir = cc.work_dir;

  // Digests by ci index per blob, for validation against the bootstrap.
  std::vector<std::vector<format::Digest>> digests(blobs.size());
  if (cfg.digest_validate && !blobs.empty()) {
    NYDUS_ASSIGN_OR_RETURN(std::vector<format::ChunkRecord> table, boot.chunk_table());
    for (size_t b = 0; b < blobs.size(); ++b) digests[b].assign(blobs[b].chunk_count, format::Digest{});
    for (const auto& r : table)
      if (r.blob_index < blobs.size() && r.ci_index < digests[r.blob_index].size())
        digests[r.blob_index][r.ci_index] = r.digest;
  }
  for (size_t b = 0; b < blobs.size(); ++b) {
    auto c = storage::BlobCache::open(blobs[b], out.backend, cc, std::move(digests[b]));
    if (!c) return std::unexpected(std::move(c).error().context(fmt::format("blob {}", blobs[b].blob_id)));
    out.caches.push_back(std::move(*c));
  }
  return out;
}

}  // namespace nydus::daemon
