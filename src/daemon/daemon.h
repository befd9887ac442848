// The nydusd daemon state: mounted images by mountpoint, and the
// api::DaemonApi the HTTP server calls into.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "api/daemon_api.h"
#include "daemon/image.h"

namespace nydus::daemon {

struct DaemonOptions {
  std::string id;
  std::string apisock;
  std::filesystem::path fallback_work_dir;  // cache dir for images configured without one
  unsigned fuse_threads = 4;
  bool singleton = false;
};

class Daemon : public api::DaemonApi {
 public:
  explicit Daemon(DaemonOptions opts);
  ~Daemon() override;

  // Mount an image (fuse mode at start, and the API).
  Status mount_image(const std::string& mountpoint, const std::filesystem::path& bootstrap,
                     const DaemonConfig& cfg, std::vector<std::string> prefetch_files = {});
  // Unmount everything (shutdown path).
  void shutdown();
  // Mountpoints whose FUSE session ended on its own (external umount).
  std::vector<std::string> dead_mounts();
  size_t mount_count();
  void set_state(std::string s);

  // api::DaemonApi
  nlohmann::json daemon_info() override;
  Status mount(const api::MountRequest& req) override;
  Status remount(const api::MountRequest& req) override;
  Status umount(const std::string& mountpoint) override;
  Result<nlohmann::json> metrics(const std::string& kind, const std::map<std::string, std::string>& query) override;
  std::string prometheus_metrics() override;

 private:
  // The instance named by ?id= (a mountpoint), or the only one.
  Result<std::shared_ptr<ImageInstance>> pick(const std::map<std::string, std::string>& query);

  DaemonOptions opts_;
  std::mutex ops_mu_;  // serialises mount/umount (slow, does I/O)
  std::mutex mu_;      // guards images_ and state_ only, briefly
  std::map<std::string, std::shared_ptr<ImageInstance>> images_;
  std::string state_ = "INIT";
};

}  // namespace nydus::daemon
