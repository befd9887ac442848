// One mounted image: its bootstrap, backend, one blob cache per blob, the
// FUSE filesystem and session, and the prefetcher. Created by nydusd at start
// (fuse mode) or by the API (singleton mode).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "format/bootstrap.h"
#include "fuse/rafs_fs.h"
#include "fuse/vfs.h"
#include "runtime/config.h"
#include "runtime/prefetch.h"
#include "storage/backend.h"
#include "storage/blob_cache.h"

namespace nydus::daemon {

struct ImageOptions {
  std::filesystem::path bootstrap;
  // Where users see the image. With `vfs` set, the image joins that FUSE
  // connection (the daemon's) at `virtual_path` and `mountpoint` is only for
  // show; without it, the image gets a FUSE mount of its own at `mountpoint`.
  std::string mountpoint;
  std::shared_ptr<fuse::Vfs> vfs;
  std::string virtual_path;
  std::string config_text;  // the config as given, for the hand-over state
  runtime::DaemonConfig config;
  // Cache directory when the config names none (no cache configured): the
  // daemon still caches, in a directory of its own.
  std::filesystem::path fallback_work_dir;
  unsigned fuse_threads = 4;
  std::vector<std::string> prefetch_files;  // image paths from the API
};

class ImageInstance {
 public:
  // Open everything and mount; the FUSE loop and prefetch are running on return.
  static Result<std::unique_ptr<ImageInstance>> mount(const ImageOptions& opts);
  ~ImageInstance();

  // Unmount, stop prefetch, flush caches. Idempotent.
  void shutdown();
  // Stop serving but keep the mount for the daemon that took it over.
  void leave();
  bool serving() const { return opts_.vfs || (session_ && session_->running()); }

  const ImageOptions& options() const { return opts_; }
  const std::string& mountpoint() const { return opts_.mountpoint; }
  fuse::RafsFs& fs() { return *fs_; }
  const format::Bootstrap& bootstrap() const { return *boot_; }
  storage::Backend& backend() { return *backend_; }
  const std::vector<std::shared_ptr<storage::BlobCache>>& caches() const { return caches_; }

  // The FsIoStats of the FUSE connection this image has to itself (null when
  // it is served inside the daemon's connection).
  std::shared_ptr<runtime::FsIoStats> own_io_stats() const { return session_ ? session_->io_stats() : nullptr; }
  const fuse::FuseSession* own_session() const { return session_.get(); }
  // When it was mounted (upstream's FsBackendDescriptor.mounted_time).
  std::chrono::system_clock::time_point mounted_time() const { return mounted_time_; }

  nlohmann::json info() const;             // for GET /api/v1/daemon backend_collection
  nlohmann::json fs_metrics() const;       // GET /api/v1/metrics
  nlohmann::json file_metrics() const;     // GET /api/v1/metrics/files
  nlohmann::json backend_metrics() const;  // GET /api/v1/metrics/backend
  nlohmann::json cache_metrics() const;    // GET /api/v1/metrics/blobcache

 private:
  ImageInstance() = default;
  void stop(bool leave);

  ImageOptions opts_;
  std::shared_ptr<format::Bootstrap> boot_;
  std::shared_ptr<storage::Backend> backend_;
  std::vector<std::shared_ptr<storage::BlobCache>> caches_;
  std::shared_ptr<fuse::RafsFs> fs_;
  std::unique_ptr<fuse::FuseSession> session_;
  std::unique_ptr<runtime::Prefetcher> prefetch_;
  bool shut_ = false;
  std::chrono::system_clock::time_point mounted_time_ = std::chrono::system_clock::now();
  bool attached_ = false;  // serving inside opts_.vfs
};

}  // namespace nydus::daemon
