#include "daemon/image.h"

#include <unistd.h>

#include <utility>

#include <fmt/chrono.h>
#include <spdlog/spdlog.h>

#include "runtime/image_storage.h"
#include "runtime/metrics_json.h"

namespace nydus::daemon {

using nlohmann::json;

Result<std::unique_ptr<ImageInstance>> ImageInstance::mount(const ImageOptions& opts) {
  std::unique_ptr<ImageInstance> img(new ImageInstance());
  img->opts_ = opts;
  const runtime::DaemonConfig& cfg = opts.config;

  NYDUS_ASSIGN_OR_RETURN(img->boot_, format::Bootstrap::open(opts.bootstrap));
  const auto& blobs = img->boot_->blobs();
  NYDUS_ASSIGN_OR_RETURN(runtime::ImageStorage storage, runtime::open_image_storage(*img->boot_, cfg, opts.fallback_work_dir));
  img->backend_ = std::move(storage.backend);
  img->caches_ = std::move(storage.caches);

  fuse::FsOptions fo;
  fo.enable_xattr = cfg.enable_xattr;
  fo.iostats_files = cfg.iostats_files;
  img->fs_ = std::make_shared<fuse::RafsFs>(img->boot_, img->caches_, fo);

  if (opts.vfs) {
    NYDUS_TRY(opts.vfs->mount(opts.virtual_path, img->fs_));
    img->attached_ = true;
  } else {
    auto vfs = std::make_shared<fuse::Vfs>();
    NYDUS_TRY(vfs->mount("/", img->fs_));
    fuse::SessionOptions so;
    so.max_threads = opts.fuse_threads;
    NYDUS_ASSIGN_OR_RETURN(img->session_, fuse::FuseSession::mount(vfs, opts.mountpoint, so));
    NYDUS_TRY(img->session_->start());
  }
  spdlog::info("mounted {} at {} ({} blobs, cache {})", opts.bootstrap.string(),
               opts.mountpoint, blobs.size(), storage.work_dir.string());

  if (cfg.prefetch.enable && !img->caches_.empty()) {
    img->prefetch_ = std::make_unique<runtime::Prefetcher>(img->boot_, img->caches_, cfg.prefetch, opts.prefetch_files);
    img->prefetch_->start();
  }
  return img;
}

ImageInstance::~ImageInstance() { shutdown(); }

void ImageInstance::shutdown() { stop(false); }
void ImageInstance::leave() { stop(true); }

void ImageInstance::stop(bool leave) {
  if (shut_) return;
  shut_ = true;
  // Stop prefetch first so it doesn't keep fetching into caches we flush.
  if (prefetch_) prefetch_->stop();
  if (session_) leave ? session_->leave() : session_->stop();
  // A daemon's connection stays: only this image leaves it (unless the
  // whole connection is being handed over).
  if (attached_ && !leave) (void)opts_.vfs->umount(opts_.virtual_path);
  for (auto& c : caches_)
    if (auto st = c->flush(); !st) spdlog::warn("flush cache of blob {}: {}", c->info().blob_id, st.error().message);
  spdlog::info("{} {}", leave ? "left the mount to the next daemon:" : "unmounted", opts_.mountpoint);
}

json ImageInstance::info() const {
  // Upstream's FsBackendDescriptor; its config is a ConfigV2.
  const runtime::DaemonConfig& c = opts_.config;
  json backend = json::object();
  if (c.backend.is_object() && c.backend.contains("type")) {
    const std::string type = c.backend.value("type", "");
    backend = json{{"type", type}, {type, c.backend.value("config", json::object())}};
  }
  const std::string cache_type = c.cache_type.empty() ? "dummycache" : c.cache_type;
  const std::string section = cache_type == "blobcache" ? "filecache" : cache_type;
  const storage::CacheConfig cc = runtime::cache_config(c, opts_.fallback_work_dir);
  const std::string work_dir = cc.work_dir.string();
  json cfg{{"version", 2},
           {"id", c.id},
           {"backend", backend},
           {"cache", json{{"type", cache_type}, {"compressed", false}, {"validate", c.digest_validate},
                          {section, json{{"work_dir", work_dir}}}}},
           {"rafs", json{{"mode", c.mode},
                         {"batch_size", cc.amplify_io},  // the value in effect
                         {"validate", c.digest_validate},
                         {"enable_xattr", c.enable_xattr},
                         {"iostats_files", c.iostats_files},
                         {"access_pattern", c.access_pattern},
                         {"latest_read_files", c.latest_read_files},
                         {"prefetch", json{{"enable", c.prefetch.enable},
                                           {"threads", c.prefetch.threads_count},
                                           {"batch_size", c.prefetch.merging_size},
                                           {"bandwidth_limit", c.prefetch.bandwidth_rate},
                                           {"prefetch_all", c.prefetch.prefetch_all}}}}}};
  // time's serde-human-readable OffsetDateTime, in UTC.
  const auto t = mounted_time_.time_since_epoch();
  const auto secs = std::chrono::floor<std::chrono::seconds>(t);
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(t - secs).count();
  const std::string when =
      fmt::format("{:%Y-%m-%d %H:%M:%S}.{} +00:00:00", std::chrono::sys_seconds(secs), nanos);
  return json{{"backend_type", "Rafs"},
              {"mountpoint", opts_.vfs ? opts_.virtual_path : opts_.mountpoint},
              {"mounted_time", when},
              {"config", cfg}};
}

json ImageInstance::fs_metrics() const {
  auto stats = own_io_stats();
  return runtime::fs_io_stats_json(stats.get(), opts_.vfs ? opts_.virtual_path : opts_.mountpoint);
}

json ImageInstance::file_metrics() const {
  auto stats = own_io_stats();
  return stats ? stats->files_json() : json::object();
}

json ImageInstance::backend_metrics() const { return runtime::backend_json(backend_.get()); }

json ImageInstance::cache_metrics() const {
  const auto& c = opts_.config;
  return runtime::blobcache_json(caches_, runtime::cache_config(c, opts_.fallback_work_dir).work_dir,
                        c.prefetch.enable ? c.prefetch.threads_count : 0);
}

}  // namespace nydus::daemon
