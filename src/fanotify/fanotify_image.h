// `nydusd fanotify`: an image served by the kernel's EROFS (file-backed
// mount of the bootstrap with one device= cache file per blob), with the data
// filled lazily by our fanotify pre-content listener. No FUSE, no cachefiles:
// metadata comes from the kernel's EROFS, data from the blob caches.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/daemon_api.h"
#include "common/result.h"
#include "fanotify/listener.h"
#include "format/bootstrap.h"
#include "runtime/config.h"
#include "runtime/external_mount.h"
#include "runtime/prefetch.h"
#include "storage/backend.h"
#include "storage/blob_cache.h"

namespace nydus::fanotify {

struct FanotifyImageOptions {
  std::filesystem::path bootstrap;
  std::string mountpoint;
  runtime::DaemonConfig config;
  std::filesystem::path fallback_work_dir;  // when the config names no work_dir
  unsigned workers = 4;                     // fetch threads
  std::vector<std::string> prefetch_files;
};

// The mount(2) options string: "device=<p1>,device=<p2>" in device-table order.
Result<std::string> erofs_device_options(const std::vector<std::filesystem::path>& data_files);

// Serves its own API in `nydusd fanotify`, and is one mount among others in
// `nydusd singleton` (fs_type "fanotify").
class FanotifyImage : public api::DaemonApi, public runtime::ExternalMount {
 public:
  // Open caches, mark them, mount, start serving and prefetch.
  static Result<std::unique_ptr<FanotifyImage>> mount(const FanotifyImageOptions& opts);
  ~FanotifyImage() override;

  // Stop prefetch, unmount (detaching if busy), stop the listener, flush. Idempotent.
  void shutdown() override;
  // Whether our mount is still in the mount table (false after an external umount).
  bool mounted() const;

  // runtime::ExternalMount
  bool alive() const override { return mounted(); }
  nlohmann::json info() override;
  Result<nlohmann::json> metrics(const std::string& kind) override { return metrics(kind, {}); }

  // api::DaemonApi (read-only: mounting more images through the API is not supported here)
  nlohmann::json daemon_info() override;
  Status mount(const api::MountRequest& req) override;
  Status remount(const api::MountRequest& req) override;
  Status umount(const std::string& mountpoint) override;
  Result<nlohmann::json> metrics(const std::string& kind, const std::map<std::string, std::string>& query) override;
  std::string prometheus_metrics() override;

 private:
  FanotifyImage() = default;

  FanotifyImageOptions opts_;
  std::shared_ptr<format::Bootstrap> boot_;
  std::shared_ptr<storage::Backend> backend_;
  std::vector<std::shared_ptr<storage::BlobCache>> caches_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<runtime::Prefetcher> prefetch_;
  bool mounted_ = false;
  bool shut_ = false;
};

}  // namespace nydus::fanotify
