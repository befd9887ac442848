#include "runtime/image_storage.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>

namespace nydus::runtime {

namespace {
constexpr size_t kBlobOpenThreads = 4;
}  // namespace

storage::CacheConfig cache_config(const DaemonConfig& cfg, const std::filesystem::path& fallback_work_dir) {
  storage::CacheConfig cc;
  cc.work_dir = cfg.work_dir.empty() ? fallback_work_dir : cfg.work_dir;
  cc.digest_validate = cfg.digest_validate;
  // Bytes merged into one backend request after a miss (0: none). Unless
  // the config says, 1 MiB amortises a remote backend's round trip; a local
  // blob has none to amortise, and every byte fetched is decompressed, so
  // 128 KiB there (a cold python start over a local blob: 0.30 -> 0.25 s,
  // bench/README.md).
  if (cfg.amplify_io_set)
    cc.amplify_io = cfg.amplify_io;
  else if (cfg.backend.is_object() && cfg.backend.value("type", "") == "localfs")
    cc.amplify_io = 128 << 10;
  return cc;
}

Result<std::vector<std::vector<format::Digest>>> chunk_digests(const format::Bootstrap& boot) {
  const auto& blobs = boot.blobs();
  std::vector<std::vector<format::Digest>> digests(blobs.size());
  if (blobs.empty()) return digests;
  NYDUS_ASSIGN_OR_RETURN(std::vector<format::ChunkRecord> table, boot.chunk_table());
  for (size_t b = 0; b < blobs.size(); ++b) digests[b].assign(blobs[b].chunk_count, format::Digest{});
  for (const auto& r : table)
    if (r.blob_index < blobs.size() && r.ci_index < digests[r.blob_index].size())
      digests[r.blob_index][r.ci_index] = r.digest;
  return digests;
}

Result<ImageStorage> open_image_storage(const format::Bootstrap& boot, const DaemonConfig& cfg,
                                        const std::filesystem::path& fallback_work_dir) {
  ImageStorage out;
  const auto& blobs = boot.blobs();
  if (!blobs.empty()) {
    NYDUS_ASSIGN_OR_RETURN(out.backend, storage::make_backend(cfg.backend));
    // The handshake runs beside the start: the blob metas' fetches or, when
    // the start fetches nothing (an eStargz TOC is in the bootstrap), the
    // first read take the socket. Nothing waits for it here.
    out.backend->preconnect();
  }
  const storage::CacheConfig cc = cache_config(cfg, fallback_work_dir);
  std::error_code ec;
  std::filesystem::create_directories(cc.work_dir, ec);
  if (ec) return sys_error(fmt::format("create cache dir {}", cc.work_dir.string()), ec.value());
  out.work_dir = cc.work_dir;
  if (!cfg.persistent_cache()) {
    // dummycache / "": nothing survives from an earlier open (upstream keeps
    // no cache at all; we keep chunks only for this open's lifetime).
    for (const auto& b : blobs)
      for (const char* ext : {".blob.data", ".chunk_map", ".blob.meta"})
        std::filesystem::remove(cc.work_dir / (b.blob_id + ext), ec);
  }

  // Digests by ci index per blob, for validation against the bootstrap.
  std::vector<std::vector<format::Digest>> digests(blobs.size());
  // eStargz TOC blobs are always validated (see BlobCacheImpl::init).
  if (cfg.digest_validate || std::ranges::any_of(blobs, [](const auto& b) { return format::is_legacy_stargz(b); })) {
    NYDUS_ASSIGN_OR_RETURN(digests, chunk_digests(boot));
  }
  // Opening a cache may fetch its blob meta: one round trip per blob on a
  // cold start, so the blobs are opened side by side (a few threads at most).
  std::vector<std::optional<Result<std::shared_ptr<storage::BlobCache>>>> opened(blobs.size());
  std::atomic<size_t> next{0};
  auto opener = [&] {
    for (size_t b; (b = next.fetch_add(1)) < blobs.size();)
      opened[b].emplace(storage::BlobCache::open(blobs[b], out.backend, cc, std::move(digests[b])));
  };
  {
    std::vector<std::jthread> pool;
    for (size_t t = 1; t < std::min<size_t>(blobs.size(), kBlobOpenThreads); ++t) pool.emplace_back(opener);
    opener();
  }
  for (size_t b = 0; b < blobs.size(); ++b) {
    auto& c = *opened[b];
    if (!c) return std::unexpected(std::move(c).error().context(fmt::format("blob {}", blobs[b].blob_id)));
    out.caches.push_back(std::move(*c));
  }
  return out;
}

}  // namespace nydus::runtime
