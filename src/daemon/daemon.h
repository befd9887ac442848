// The nydusd daemon state: mounted images by mountpoint, and the
// api::DaemonApi the HTTP server calls into.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api/daemon_api.h"
#include "daemon/image.h"

namespace nydus::daemon {

// A mount served by something other than this library's FUSE filesystem
// (the fanotify mode): nydusd plugs it in by fs_type, so this library does not
// depend on it.
class ExternalMount {
 public:
  virtual ~ExternalMount() = default;
  virtual void shutdown() = 0;
  virtual bool alive() const = 0;    // still mounted
  virtual nlohmann::json info() = 0;  // its entry in GET /api/v1/daemon
  // GET /api/v1/metrics[/kind] for this mount.
  virtual Result<nlohmann::json> metrics(const std::string& kind) = 0;
};

struct ExternalMountRequest {
  std::string mountpoint;
  std::filesystem::path bootstrap;
  DaemonConfig config;
  std::vector<std::string> prefetch_files;
  std::filesystem::path fallback_work_dir;  // when the config names no work_dir
};
using ExternalMounter = std::function<Result<std::unique_ptr<ExternalMount>>(const ExternalMountRequest&)>;

struct DaemonOptions {
  std::string id;
  std::string apisock;
  std::filesystem::path fallback_work_dir;  // cache dir for images configured without one
  unsigned fuse_threads = 4;
  bool singleton = false;
  std::map<std::string, ExternalMounter> mounters;  // by fs_type, besides "rafs" (FUSE)

  // Live upgrade and failover of the FUSE mount (nydus-snapshotter's flow):
  // sendfd hands the /dev/fuse fd and state to `supervisor`; a daemon
  // started with `upgrade` mounts nothing and takes them over from there,
  // serving `takeover_mountpoint` with `takeover_bootstrap` and
  // `takeover_config` (its own command line, as upstream).
  std::string supervisor;
  bool upgrade = false;
  bool failover_resend = true;  // --failover-policy resend: requeue what the old daemon held
  std::string takeover_mountpoint;
  std::filesystem::path takeover_bootstrap;
  DaemonConfig takeover_config;
};

class Daemon : public api::DaemonApi {
 public:
  explicit Daemon(DaemonOptions opts);
  ~Daemon() override;

  // Mount an image (fuse mode at start, and the API).
  Status mount_image(const std::string& mountpoint, const std::filesystem::path& bootstrap,
                     const DaemonConfig& cfg, std::vector<std::string> prefetch_files = {});
  // Unmount everything (shutdown path). `leave_handed_over`: a mount whose
  // fd went to the supervisor stays mounted for the next daemon (the exit
  // API after sendfd, as in upgrades).
  void shutdown(bool leave_handed_over = false);
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
  Status send_fd() override;
  Status takeover() override;
  Status start() override;

 private:
  // Each mountpoint gets its own fallback cache dir: two live caches of one
  // blob must not write the same files.
  std::filesystem::path fallback_dir_for(const std::string& mountpoint) const;
  // The instance named by ?id= (a mountpoint), or the only one.
  Result<std::shared_ptr<ImageInstance>> pick(const std::map<std::string, std::string>& query);

  DaemonOptions opts_;
  std::mutex ops_mu_;  // serialises mount/umount (slow, does I/O)
  std::mutex mu_;      // guards images_ and state_ only, briefly
  std::map<std::string, std::shared_ptr<ImageInstance>> images_;
  std::map<std::string, std::shared_ptr<ExternalMount>> externals_;
  std::string state_ = "INIT";
  bool handed_over_ = false;  // sendfd succeeded at least once
};

}  // namespace nydus::daemon
