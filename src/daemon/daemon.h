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
#include "daemon/fuse_handover.h"
#include "daemon/image.h"
#include "runtime/external_mount.h"

namespace nydus::daemon {

struct DaemonOptions {
  std::string id;
  std::string apisock;
  // FUSE mode: the daemon's one FUSE connection, mounted here at start
  // (start_fuse) or taken over. Images are served inside it at virtual paths
  // ("/" for the image of the command line; "/<id>" for images mounted
  // through the API in a shared daemon), as upstream's FUSE daemon does.
  // Empty (singleton mode): each image mounted through the API gets a FUSE
  // mount of its own at the host path it names.
  std::string fuse_mountpoint;
  std::filesystem::path fallback_work_dir;  // cache dir for images configured without one
  unsigned fuse_threads = 4;
  bool singleton = false;
  std::map<std::string, runtime::ExternalMounter> mounters;  // by fs_type, besides "rafs" (FUSE)

  // Live upgrade and failover of the FUSE connection (nydus-snapshotter's
  // flow): sendfd hands the /dev/fuse fd and state to `supervisor`; a daemon
  // started with `upgrade` mounts nothing and takes them over from there,
  // serving fuse_mountpoint with `takeover_bootstrap` and `takeover_config`
  // at "/" (its own command line, as upstream; none for a shared daemon)
  // and the API-mounted images the state lists.
  std::string supervisor;
  bool upgrade = false;
  bool failover_resend = true;  // --failover-policy resend: requeue what the old daemon held
  std::filesystem::path takeover_bootstrap;
  runtime::DaemonConfig takeover_config;
};

class Daemon : public api::DaemonApi {
 public:
  explicit Daemon(DaemonOptions opts);
  ~Daemon() override;

  // Mount the daemon's FUSE connection at fuse_mountpoint, serving whatever
  // mount_image adds (an empty directory until then).
  Status start_fuse();
  // Mount an image (fuse mode at start, and the API): at a virtual path of
  // the daemon's connection in FUSE mode, else at a host path.
  Status mount_image(const std::string& mountpoint, const std::filesystem::path& bootstrap,
                     const runtime::DaemonConfig& cfg, std::vector<std::string> prefetch_files = {},
                     std::string config_text = {});
  // Unmount everything (shutdown path). `leave_handed_over`: a mount whose
  // fd went to the supervisor stays mounted for the next daemon (the exit
  // API after sendfd, as in upgrades).
  void shutdown(bool leave_handed_over = false);
  // Mountpoints whose FUSE session ended on its own (external umount).
  std::vector<std::string> dead_mounts();
  void set_state(std::string s);

  // api::DaemonApi
  nlohmann::json daemon_info() override;
  Status mount(const api::MountRequest& req) override;
  Status remount(const api::MountRequest& req) override;
  Status umount(const std::string& mountpoint) override;
  Result<nlohmann::json> metrics(const std::string& kind, const std::map<std::string, std::string>& query) override;
  std::string prometheus_metrics() override;
  Status set_registry_auth(const std::string& id, const std::string& auth_base64) override;
  Result<nlohmann::json> backend_info(const std::string& mountpoint) override;
  Status send_fd() override;
  Status takeover() override;
  Status start() override;

 private:
  bool fuse_mode() const { return !opts_.fuse_mountpoint.empty(); }
  // The key of images_: a normalised virtual path in FUSE mode, else the
  // canonical host path.
  Result<std::string> mount_key(const std::string& mountpoint) const;
  // Each mountpoint gets its own fallback cache dir: two live caches of one
  // blob must not write the same files.
  std::filesystem::path fallback_dir_for(const std::string& mountpoint) const;
  // The FsIoStats counting `img`'s FUSE requests (daemon_api.cpp), with
  // its config's counting options applied.
  std::shared_ptr<runtime::FsIoStats> io_stats_of(const ImageInstance& img);
  // The instance named by ?id= (a mountpoint), or the only one.
  Result<std::shared_ptr<ImageInstance>> pick(const std::map<std::string, std::string>& query);

  DaemonOptions opts_;
  std::mutex ops_mu_;  // serialises mount/umount (slow, does I/O)
  std::mutex mu_;      // guards images_ and state_ only, briefly
  std::map<std::string, std::shared_ptr<ImageInstance>> images_;
  std::map<std::string, std::shared_ptr<runtime::ExternalMount>> externals_;
  std::shared_ptr<fuse::Vfs> vfs_ = std::make_shared<fuse::Vfs>();
  std::unique_ptr<fuse::FuseSession> session_;  // FUSE mode
  std::vector<HandedMount> takeover_mounts_;     // API mounts of the daemon taken over
  std::string state_ = "INIT";
  bool handed_over_ = false;  // sendfd succeeded at least once
};

}  // namespace nydus::daemon
