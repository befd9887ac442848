// `nydusd fanotify`: an image served by the kernel's EROFS (file-backed
// mount of the bootstrap with one device= cache file per blob), with the data
// filled lazily by our fanotify pre-content listener. No FUSE, no cachefiles:
// metadata comes from the kernel's EROFS, data from the blob caches.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
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
  // --supervisor: the group fd can be handed to it (PUT .../fuse/sendfd), and
  // pending events are journaled so a takeover can finish them.
  std::string supervisor;
  std::string id;  // names the journal (the pid when empty)
};

// The mount(2) options string: "device=<p1>,device=<p2>" in device-table order.
Result<std::string> erofs_device_options(const std::vector<std::filesystem::path>& data_files);

// Serves its own API in `nydusd fanotify`, and is one mount among others in
// `nydusd singleton` (fs_type "fanotify").
class FanotifyImage : public api::DaemonApi, public runtime::ExternalMount {
 public:
  // Open caches, mark them, mount, start serving and prefetch.
  static Result<std::unique_ptr<FanotifyImage>> mount(const FanotifyImageOptions& opts);
  // --upgrade: serve nothing (state INIT) until takeover() brings the group
  // of a dead daemon from the supervisor; its EROFS mount stays in place.
  static std::unique_ptr<FanotifyImage> awaiting_takeover(const FanotifyImageOptions& opts);
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
  Status send_fd() override;
  Status takeover() override;
  Status start() override;

 private:
  FanotifyImage() = default;
  // Open the image's bootstrap and caches.
  Status open_storage();
  void start_prefetch();
  // Before a takeover opens the caches: each data file is there at its size
  // (else opening would truncate it, raising an event nobody reads yet).
  Status check_cache_files() const;
  // After a takeover: fill and allow what the journal says the dead daemon
  // was answering, deny every other event it left pending.
  void finish_orphans(const std::vector<InflightJournal::Entry>& recorded, int fd_limit);

  FanotifyImageOptions opts_;
  std::shared_ptr<format::Bootstrap> boot_;
  std::shared_ptr<storage::Backend> backend_;
  std::vector<std::shared_ptr<storage::BlobCache>> caches_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<runtime::Prefetcher> prefetch_;
  std::filesystem::path work_dir_;
  std::unique_ptr<InflightJournal> journal_;
  std::mutex ops_mu_;  // sendfd / takeover / start
  std::string state_ = "RUNNING";
  bool mounted_ = false;
  bool shut_ = false;
};

}  // namespace nydus::fanotify
