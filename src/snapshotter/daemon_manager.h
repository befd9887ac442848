// nydusd daemons the snapshotter starts: one dedicated fusedev daemon per
// Nydus image (keyed by the snapshot ID of the image's bootstrap layer), with
// nydus-snapshotter's command line (pkg/daemon/command.BuildCommand order):
//   nydusd fuse --thread-num N --config C --bootstrap B --mountpoint M
//          --apisock A --log-level L --log-rotation-size 100 [--log-file F]
//          --failover-policy resend
// and a config made from the --nydusd-config template with the registry host
// and repository of the image reference filled in (daemonconfig.Supplement).
// --recover-policy (nydus-snapshotter's daemon.recover_policy): what happens
// when a dedicated nydusd dies while the snapshotter runs (a monitor thread
// polls every daemon): "restart" starts the same command line again on a
// cleaned mountpoint (as upstream's doDaemonRestart: containers already
// running keep a dead FUSE connection and get ENOTCONN; new ones work);
// "failover" gives each daemon a Supervisor (--id, --supervisor) holding its
// /dev/fuse fd, and a new nydusd --upgrade takes the connection over
// (takeover, start; --failover-policy resend re-sends what the dead one had
// read): readers only wait; "none" leaves it dead. Whatever the policy, a
// Prepare/Mounts needing a dead or missing daemon starts it (after a reboot
// every daemon is gone and Mounts is what brings each back, lazily).
// --fs-driver fanotify: the same dedicated layout, but `nydusd fanotify`: the
// kernel's EROFS mounts the bootstrap at the mountpoint with the blob cache
// files as devices, and nydusd fills them on fanotify pre-content events.
// When the last fd of a fanotify group closes, unfilled ranges read as zeros
// through the still-mounted EROFS, so every fanotify daemon has a Supervisor
// holding a dup of its group fd, whatever the policy; a death is always met
// by a takeover (restart acts as failover: a new mount could not replace the
// one running containers read), with `none` at the next Prepare/Mounts.
// Shared mode (--daemon-mode shared): one nydusd "shared_daemon" mounted at
// <root>/mnt without a bootstrap, started with the snapshotter; each image is
// POST /api/v1/mount?mountpoint=/<meta id> into it (served at <root>/mnt/<meta
// id>, the same path a dedicated daemon would use) and DELETEd when its last
// snapshot goes; the shared daemon itself keeps running, as upstream's.
// --fs-driver fscache (fscache_images.cpp): the shared daemon is `nydusd
// singleton --fscache <root>/fscache` (whatever --daemon-mode says), mounting
// nothing itself; each image's bootstrap is PUT /api/v2/blobs into it and the
// snapshotter mounts `erofs -o fsid=<id>` at <root>/mnt/<meta id>; Remove
// unmounts it and DELETEs the registration.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "snapshotter/errors.h"
#include "snapshotter/registry_auth.h"
#include "snapshotter/supervisor.h"

namespace nydus::snapshotter {

struct DaemonSettings {
  std::string nydusd_path = "nydusd";
  std::string config_template;  // a file; empty: nydus-snapshotter's fusedev default
  std::string root;             // the snapshotter's --root
  std::string log_level = "info";
  bool log_to_stdout = false;
  int thread_num = 4;
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(30)};
  bool shared = false;  // --daemon-mode shared
  std::string recover_policy = "restart";  // restart | failover | none
  std::string fs_driver = "fusedev";       // fusedev | fanotify (dedicated only) | fscache (always shared)
  // Registry credentials put into each image's daemon config (none when null).
  std::shared_ptr<const Keychain> keychain;
};

struct DaemonInstance {
  std::string id;       // "nydusd-<meta_id>", shared mode: "shared_daemon"
  std::string meta_id;  // the image's bootstrap snapshot
  pid_t pid = -1;
  std::string mountpoint;
  std::string apisock;
  std::string config_path;
  std::string bootstrap;
  std::vector<std::string> args;  // argv[1..]
  bool shared = false;            // an image mounted in the shared daemon (pid is the shared one's)
  std::string fscache_id;         // fscache: the image's fsid (and domain) in the shared daemon (format::fscache_id)
};

// fscache: the PUT /api/v2/blobs entry of an image (upstream's legacy
// "config" shape) from its daemon config (the fusedev-style template output).
Result<std::string> make_fscache_entry(const std::string& daemon_config, const std::string& fscache_id,
                                       const std::string& bootstrap, const std::string& work_dir);

// The daemon config text for an image: the template with registry host/repo
// (docker.io -> index.docker.io as upstream) and the blob cache work_dir set.
Result<std::string> make_daemon_config(std::string_view template_text, std::string_view image_ref,
                                       const std::string& cache_dir);
// nydus-snapshotter's fusedev template (misc/snapshotter/nydusd-config.fusedev.json).
std::string_view default_fusedev_template();

class DaemonManager {
 public:
  explicit DaemonManager(DaemonSettings s) : s_(std::move(s)) {}
  ~DaemonManager();

  // Watches the dedicated daemons and applies the recover policy to a dead one.
  void start_monitor();

  // Starts the daemon of meta snapshot `meta_id` unless it runs already, and
  // waits (bounded) until GET /api/v1/daemon says RUNNING. Returns its mountpoint.
  // The start runs without this manager's lock: other images' daemons, find()
  // and running() are served meanwhile; concurrent calls for the same image
  // wait for the one start and share its result.
  // `labels`: the bootstrap snapshot's, where pull credentials may be (registry_auth.h).
  SResult<std::string> ensure(const std::string& meta_id, const std::string& bootstrap,
                              const std::string& image_ref, const std::map<std::string, std::string>& labels = {});
  // Re-attaches to the daemons a previous snapshotter process left running
  // (<root>/socket/nydusd-<id>/api.sock answering RUNNING, mount in place);
  // cleans up the rest. Returns the adopted meta snapshot IDs.
  // Shared mode: also takes over (or starts) the shared daemon; its images
  // mounted at <root>/mnt/<id> with a config under <root>/config/shared_daemon/<id>
  // are adopted. An error: the shared daemon could not be started.
  SResult<std::vector<std::string>> adopt_running();
  // Shared mode: the shared daemon's process (pid -1 when not started).
  DaemonInstance shared_daemon() const;
  // SIGTERM (then SIGKILL after a grace period), unmount, remove its socket and config.
  SResult<void> stop(const std::string& meta_id);
  // stop() in two halves, so a caller can decide under its own lock and wait
  // outside it: detach() unpublishes the daemon (an ensure() for it now waits
  // until finish_stop() is done, then starts a new one).
  std::optional<DaemonInstance> detach(const std::string& meta_id);
  void finish_stop(DaemonInstance d);
  std::optional<DaemonInstance> find(const std::string& meta_id) const;
  std::vector<std::string> running() const;
  // The published daemons (an image in the shared daemon: one each), for credential renewal.
  std::vector<DaemonInstance> instances() const;
  std::string mountpoint_for(const std::string& meta_id) const;
  // One image of the shared daemon `sd`, from its config dir <root>/config/<daemon>/<meta id>.
  DaemonInstance shared_image(const DaemonInstance& sd, const std::filesystem::path& config_dir) const;
  // The daemon config an image's nydusd would get (template, host/repo, credentials).
  SResult<std::string> config_for_image(const std::string& image_ref,
                                        const std::map<std::string, std::string>& labels) const {
    return image_config(image_ref, labels);
  }

 private:
  // Until the API says `state`; a death is reported with its log's error from `log_offset` on.
  SResult<void> wait_state(const DaemonInstance& d, uintmax_t log_offset, std::string_view state = "RUNNING");
  // Spawns nydusd and waits for RUNNING (no lock held): the instance, or why not.
  SResult<DaemonInstance> start(const std::string& meta_id, const std::string& bootstrap,
                                const std::string& image_ref, const std::map<std::string, std::string>& labels);
  void terminate(DaemonInstance& d);
  // SIGTERM, then SIGKILL after a grace period; nothing else.
  void kill_process(DaemonInstance& d);
  // --log-file and --failover-policy: the tail of every nydusd command line.
  void append_common_tail(DaemonInstance& d, const std::string& log_dir) const;
  // Forks nydusd with d.args (logs in `log_dir`) and waits for `state`; kills it on failure.
  SResult<void> spawn(DaemonInstance& d, const std::string& log_dir, std::string_view state = "RUNNING");
  // Failover: the daemon's supervisor (created when missing) and PUT sendfd so it holds the fd.
  std::string supervisor_path(const std::string& daemon_id) const;
  // Its supervisor holds its fd: with --recover-policy failover, or always for fanotify.
  bool supervised(const DaemonInstance& d) const;
  SResult<void> open_supervisor(const std::string& daemon_id);
  void save_state(const DaemonInstance& d);
  bool supervisor_holds_state(const std::string& daemon_id) const;
  // A dead dedicated daemon served again at its mountpoint, per the policy
  // (failover: takeover from the supervisor, else the same command line anew).
  SResult<DaemonInstance> recover(const DaemonInstance& dead, bool* took_over = nullptr);
  void monitor();
  // Failover of the shared daemon: taken over, its images served again with the new pid.
  void fail_over_shared();
  // The daemon config of an image from the template.
  // With the registry credentials the keychain finds for it (labels first).
  SResult<std::string> image_config(const std::string& image_ref,
                                    const std::map<std::string, std::string>& labels) const;
  // Shared mode: the shared daemon runs (started when missing or dead).
  SResult<DaemonInstance> ensure_shared_daemon();
  SResult<DaemonInstance> mount_in_shared(const std::string& meta_id, const std::string& bootstrap,
                                          const std::string& image_ref,
                                          const std::map<std::string, std::string>& labels);
  std::vector<std::string> adopt_shared_images();
  bool fscache() const { return s_.fs_driver == "fscache"; }
  // fscache (fscache_images.cpp): register the image's blobs and mount its EROFS.
  SResult<DaemonInstance> mount_in_fscache(const DaemonInstance& sd, const std::string& meta_id,
                                           const std::string& bootstrap, const std::string& cfg);
  // Unmount the image's EROFS and unregister it (the daemon may be dead: unmounted anyway).
  void unmount_from_fscache(const DaemonInstance& d);
  // The images a live fscache daemon serves: EROFS mounted at <root>/mnt/<id>, config kept.
  std::vector<std::string> adopt_fscache_images(const DaemonInstance& sd);

  // One start in progress: its waiters read the result once `done`.
  struct StartState {
    bool done = false;
    SResult<std::string> result;
  };

  DaemonSettings s_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // a start or a stop finished
  std::map<std::string, DaemonInstance> daemons_;  // published: RUNNING when started
  std::map<std::string, std::shared_ptr<StartState>> starting_;
  std::set<std::string> stopping_;
  mutable std::mutex shared_mu_;  // the shared daemon's start (not under mu_: it waits)
  DaemonInstance shared_;
  mutable std::mutex sup_mu_;
  std::map<std::string, std::unique_ptr<Supervisor>> supervisors_;  // by daemon id (failover)
  std::set<std::string> reported_dead_;  // policy none: logged once (under mu_)
  std::mutex monitor_mu_;
  std::condition_variable monitor_cv_;
  bool monitor_stop_ = false;
  std::thread monitor_;
};

}  // namespace nydus::snapshotter
