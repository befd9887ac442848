// nydusd daemons the snapshotter starts: one dedicated fusedev daemon per
// Nydus image (keyed by the snapshot ID of the image's bootstrap layer), with
// nydus-snapshotter's command line (pkg/daemon/command.BuildCommand order):
//   nydusd fuse --thread-num N --config C --bootstrap B --mountpoint M
//          --apisock A --log-level L --log-rotation-size 100 [--log-file F]
//          --failover-policy resend
// and a config made from the --nydusd-config template with the registry host
// and repository of the image reference filled in (daemonconfig.Supplement).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "snapshotter/errors.h"

namespace nydus::snapshotter {

struct DaemonSettings {
  std::string nydusd_path = "nydusd";
  std::string config_template;  // a file; empty: nydus-snapshotter's fusedev default
  std::string root;             // the snapshotter's --root
  std::string log_level = "info";
  bool log_to_stdout = false;
  int thread_num = 4;
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(30)};
};

struct DaemonInstance {
  std::string id;
  pid_t pid = -1;
  std::string mountpoint;
  std::string apisock;
  std::string config_path;
  std::string bootstrap;
  std::vector<std::string> args;  // argv[1..]
};

// The daemon config text for an image: the template with registry host/repo
// (docker.io -> index.docker.io as upstream) and the blob cache work_dir set.
Result<std::string> make_daemon_config(std::string_view template_text, std::string_view image_ref,
                                       const std::string& cache_dir);
// nydus-snapshotter's fusedev template (misc/snapshotter/nydusd-config.fusedev.json).
std::string_view default_fusedev_template();

class DaemonManager {
 public:
  explicit DaemonManager(DaemonSettings s) : s_(std::move(s)) {}
  ~DaemonManager() = default;

  // Starts the daemon of meta snapshot `meta_id` unless it runs already, and
  // waits (bounded) until GET /api/v1/daemon says RUNNING. Returns its mountpoint.
  SResult<std::string> ensure(const std::string& meta_id, const std::string& bootstrap,
                              const std::string& image_ref);
  // Re-attaches to the daemons a previous snapshotter process left running
  // (<root>/socket/nydusd-<id>/api.sock answering RUNNING, mount in place);
  // cleans up the rest. Returns the adopted meta snapshot IDs.
  std::vector<std::string> adopt_running();
  // SIGTERM (then SIGKILL after a grace period), unmount, remove its socket and config.
  SResult<void> stop(const std::string& meta_id);
  std::optional<DaemonInstance> find(const std::string& meta_id) const;
  std::vector<std::string> running() const;
  std::string mountpoint_for(const std::string& meta_id) const;

 private:
  // Until RUNNING; a death is reported with its log's error from `log_offset` on.
  SResult<void> wait_running(const DaemonInstance& d, uintmax_t log_offset);
  void terminate(DaemonInstance& d);

  DaemonSettings s_;
  mutable std::mutex mu_;
  std::map<std::string, DaemonInstance> daemons_;
};

}  // namespace nydus::snapshotter
