#include "daemon/image.h"

#include <unistd.h>

#include <utility>

#include <spdlog/spdlog.h>

#include "daemon/image_storage.h"

namespace nydus::daemon {

using nlohmann::json;

Result<std::unique_ptr<ImageInstance>> ImageInstance::mount(const ImageOptions& opts) { return open(opts, {}); }

Result<std::unique_ptr<ImageInstance>> ImageInstance::adopt(const ImageOptions& opts, AdoptedConnection conn) {
  return open(opts, std::move(conn));
}

Result<std::unique_ptr<ImageInstance>> ImageInstance::open(const ImageOptions& opts,
                                                           std::optional<AdoptedConnection> adopted) {
  // Until a session owns the adopted fd, it is ours to close on failure.
  struct FdGuard {
    int* fd;
    ~FdGuard() {
      if (fd && *fd >= 0) ::close(*fd);
    }
  } guard{adopted ? &adopted->fd : nullptr};
  std::unique_ptr<ImageInstance> img(new ImageInstance());
  img->opts_ = opts;
  const DaemonConfig& cfg = opts.config;

  NYDUS_ASSIGN_OR_RETURN(img->boot_, format::Bootstrap::open(opts.bootstrap));
  const auto& blobs = img->boot_->blobs();
  NYDUS_ASSIGN_OR_RETURN(ImageStorage storage, open_image_storage(*img->boot_, cfg, opts.fallback_work_dir));
  img->backend_ = std::move(storage.backend);
  img->caches_ = std::move(storage.caches);

  fuse::FsOptions fo;
  fo.enable_xattr = cfg.enable_xattr;
  fo.iostats_files = cfg.iostats_files;
  img->fs_ = std::make_shared<fuse::RafsFs>(img->boot_, img->caches_, fo);

  fuse::SessionOptions so;
  so.max_threads = opts.fuse_threads;
  if (adopted) {
    const int fd = std::exchange(adopted->fd, -1);
    NYDUS_ASSIGN_OR_RETURN(img->session_,
                           fuse::FuseSession::adopt(img->fs_, opts.mountpoint, fd, std::move(adopted->init), so));
  } else {
    NYDUS_ASSIGN_OR_RETURN(img->session_, fuse::FuseSession::mount(img->fs_, opts.mountpoint, so));
  }
  NYDUS_TRY(img->session_->start());
  spdlog::info("{} {} at {} ({} blobs, cache {})", adopted ? "took over" : "mounted", opts.bootstrap.string(),
               opts.mountpoint, blobs.size(), storage.work_dir.string());

  if (cfg.prefetch.enable && !img->caches_.empty()) {
    img->prefetch_ = std::make_unique<Prefetcher>(img->boot_, img->caches_, cfg.prefetch, opts.prefetch_files);
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
  for (auto& c : caches_)
    if (auto st = c->flush(); !st) spdlog::warn("flush cache of blob {}: {}", c->info().blob_id, st.error().message);
  spdlog::info("{} {}", leave ? "left the mount to the next daemon:" : "unmounted", opts_.mountpoint);
}

json ImageInstance::info() const {
  return json{{"mountpoint", opts_.mountpoint},
              {"fs_type", "rafs"},
              {"source", opts_.bootstrap.string()},
              {"config", json{{"mode", opts_.config.mode},
                              {"digest_validate", opts_.config.digest_validate},
                              {"enable_xattr", opts_.config.enable_xattr},
                              {"iostats_files", opts_.config.iostats_files},
                              {"device", json{{"backend", opts_.config.backend},
                                              {"cache", json{{"type", opts_.config.cache_type},
                                                             {"config", json{{"work_dir",
                                                                              opts_.config.work_dir.string()}}}}}}}}}};
}

json ImageInstance::fs_metrics() const {
  const auto m = fs_->metrics();
  json j{{"id", opts_.mountpoint},
         {"nr_opens", m.opens},
         {"data_read", m.read_bytes},
         {"fop_hits", json{{"lookup", m.lookups}, {"getattr", m.getattrs}, {"open", m.opens},
                           {"read", m.reads}, {"readdir", m.readdirs}}},
         {"fop_errors", json{{"read", m.read_errors}, {"all", m.errors}}},
         // requests a crashed predecessor held, sent again by the kernel to us
         {"fuse_resent_requests", session_ ? session_->resent_requests() : 0}};
  if (prefetch_) {
    const auto p = prefetch_->stats();
    j["prefetch"] = json{{"ranges_total", p.ranges_total}, {"ranges_done", p.ranges_done},
                         {"bytes", p.bytes},               {"errors", p.errors},
                         {"finished", p.finished}};
  }
  return j;
}

json ImageInstance::file_metrics() const {
  json arr = json::array();
  for (const auto& f : fs_->file_stats())
    arr.push_back(json{{"nid", f.nid}, {"ino", fs_->to_ino(f.nid)}, {"nr_read", f.reads}, {"data_read", f.bytes}});
  return arr;
}

json ImageInstance::backend_metrics() const { return backend_metrics_json(backend_.get()); }

json ImageInstance::cache_metrics() const { return cache_metrics_json(caches_); }

}  // namespace nydus::daemon
