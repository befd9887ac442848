// --fs-driver fscache: the images of the shared `nydusd singleton --fscache`
// daemon. As upstream's Daemon.sharedErofsMount / sharedErofsUmount: the
// image's bootstrap is registered with PUT /api/v2/blobs (fsid = domain id =
// FscacheID(snapshot id)), then the snapshotter mounts `erofs -o fsid=<id>`
// at <root>/mnt/<meta id>; removing it unmounts, DELETEs the domain and culls
// the bootstrap's cache file.
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <linux/magic.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "api/api_client.h"
#include "format/digest.h"
#include "snapshotter/daemon_manager.h"

namespace nydus::snapshotter {
namespace fs = std::filesystem;
namespace {

// An EROFS mounted at `path` (not just a directory on the root's filesystem).
bool is_erofs_mount(const std::string& path) {
  struct statfs sf{};
  struct stat a{}, b{};
  if (::statfs(path.c_str(), &sf) != 0 || sf.f_type != EROFS_SUPER_MAGIC_V1) return false;
  if (::stat(path.c_str(), &a) != 0 || ::stat((path + "/..").c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

// Anything mounted there (a stale EROFS of a daemon gone, or one left by a crash).
bool is_mounted(const std::string& path) {
  struct stat a{}, b{};
  if (::stat(path.c_str(), &a) != 0) return errno == ENOTCONN || errno == EIO;
  if (::stat((path + "/..").c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

void unmount(const std::string& path) {
  if (!is_mounted(path)) return;
  if (::umount2(path.c_str(), 0) == 0) return;
  // Busy (a container still reads it): detached, gone when the last reader closes.
  spdlog::warn("umount {}: {}; detaching it", path, std::strerror(errno));
  ::umount2(path.c_str(), MNT_DETACH);
}

}  // namespace

Result<std::string> make_fscache_entry(const std::string& daemon_config, const std::string& fscache_id,
                                       const std::string& bootstrap, const std::string& work_dir) {
  using nlohmann::json;
  auto j = json::parse(daemon_config, nullptr, false);
  if (!j.is_object() || !j.contains("device") || !j["device"].is_object())
    return make_error(Errc::kInvalidArgument, "fscache blob entry: the daemon config has no \"device\" object");
  const json& dev = j["device"];
  if (!dev.contains("backend") || !dev["backend"].is_object() || !dev["backend"].contains("type") ||
      !dev["backend"]["type"].is_string())
    return make_error(Errc::kInvalidArgument, "fscache blob entry: the daemon config has no device.backend.type");
  const json& backend = dev["backend"];
  json cfg{{"id", fscache_id},
           {"backend_type", backend["type"]},
           {"backend_config", backend.contains("config") && backend["config"].is_object() ? backend["config"]
                                                                                            : json::object()},
           {"cache_type", "fscache"},
           {"cache_config", {{"work_dir", work_dir}}},
           {"metadata_path", bootstrap}};
  // Upstream's nydusd-config.fscache.json prefetch_config: the template's fs_prefetch.
  if (auto p = j.find("fs_prefetch"); p != j.end() && p->is_object()) {
    json pc = json::object();
    for (const char* k : {"enable", "threads_count", "merging_size", "bandwidth_rate", "prefetch_all"})
      if (p->contains(k)) pc[k] = (*p)[k];
    cfg["prefetch_config"] = pc;
  }
  json entry{{"type", "bootstrap"}, {"id", fscache_id}, {"domain_id", fscache_id}, {"config", cfg}};
  return entry.dump(2);
}

SResult<DaemonInstance> DaemonManager::mount_in_fscache(const DaemonInstance& sd, const std::string& meta_id,
                                                        const std::string& bootstrap, const std::string& cfg) {
  DaemonInstance d;
  d.id = sd.id;
  d.meta_id = meta_id;
  d.pid = sd.pid;
  d.shared = true;
  d.mountpoint = mountpoint_for(meta_id);
  d.apisock = sd.apisock;
  d.config_path = s_.root + "/config/" + sd.id + "/" + meta_id + "/config.json";
  d.bootstrap = bootstrap;
  d.fscache_id = format::fscache_id(meta_id);
  const std::string work_dir = s_.root + "/cache";
  auto entry = make_fscache_entry(cfg, d.fscache_id, bootstrap, work_dir);
  if (!entry) return from_error(entry.error(), "fscache blob entry of snapshot " + meta_id);
  std::error_code ec;
  for (const auto& dir : {fs::path(d.config_path).parent_path().string(), d.mountpoint, work_dir}) {
    fs::create_directories(dir, ec);
    if (ec) return snap_error(Code::kInternal, "mkdir {}: {}", dir, ec.message());
  }
  // Not published, so whatever is mounted here is stale (a daemon gone, a crash).
  unmount(d.mountpoint);
  {
    std::ofstream out(d.config_path, std::ios::binary | std::ios::trunc);
    out << *entry;
    if (!out.flush()) return snap_error(Code::kInternal, "write {}", d.config_path);
    fs::permissions(d.config_path, fs::perms::owner_read | fs::perms::owner_write, ec);  // may hold credentials
  }
  api::ApiClient c(d.apisock, s_.ready_timeout);
  Status reg = c.create_blob(*entry);
  if (!reg && reg.error().code == Errc::kExists) {
    // Registered by a daemon state this snapshotter did not adopt: replaced.
    (void)c.delete_blobs(d.fscache_id, "");
    reg = c.create_blob(*entry);
  }
  if (!reg) {
    fs::remove_all(fs::path(d.config_path).parent_path(), ec);
    return snap_error(Code::kUnavailable, "fscache nydusd: register bootstrap {} of snapshot {} (PUT /api/v2/blobs): {}",
                      bootstrap, meta_id, reg.error().to_string());
  }
  // As upstream's erofs.Mount: domain == fsid, so only the fsid is named.
  const std::string opts = "fsid=" + d.fscache_id;
  if (::mount("erofs", d.mountpoint.c_str(), "erofs", 0, opts.c_str()) != 0) {
    const int err = errno;
    (void)c.delete_blobs(d.fscache_id, "");
    fs::remove_all(fs::path(d.config_path).parent_path(), ec);
    return snap_error(Code::kUnavailable, "mount -t erofs -o {} {}: {}{}", opts, d.mountpoint, std::strerror(err),
                      err == EINVAL || err == ENODEV
                          ? " (the kernel needs EROFS with CONFIG_EROFS_FS_ONDEMAND and cachefiles on-demand)"
                          : "");
  }
  spdlog::info("fscache: snapshot {} registered as fsid {} and mounted (erofs) at {}", meta_id, d.fscache_id,
               d.mountpoint);
  save_state(sd);  // a failover daemon gets the registrations back from the supervisor
  return d;
}

void DaemonManager::unmount_from_fscache(const DaemonInstance& d) {
  const std::string id = d.fscache_id.empty() ? format::fscache_id(d.meta_id) : d.fscache_id;
  // Unmounted first: the kernel drops its objects of the image, then the daemon forgets it.
  unmount(d.mountpoint);
  std::error_code ec;
  fs::remove(d.mountpoint, ec);
  const DaemonInstance sd = shared_daemon();
  if (sd.pid <= 0 || ::kill(sd.pid, 0) != 0) return;  // gone: nothing registered any more
  api::ApiClient c(sd.apisock, std::chrono::seconds(10));
  if (auto st = c.delete_blobs(id, ""); !st)
    spdlog::warn("fscache nydusd: unregister fsid {} of snapshot {}: {}", id, d.meta_id, st.error().to_string());
  // Upstream also culls the bootstrap's cache file by its id (no domain): a miss is not an error.
  if (auto st = c.delete_blobs("", id); !st && st.error().code != Errc::kNotFound)
    spdlog::debug("fscache nydusd: cull cache files of {}: {}", id, st.error().to_string());
  save_state(sd);
}

std::vector<std::string> DaemonManager::adopt_fscache_images(const DaemonInstance& sd) {
  std::vector<std::string> adopted;
  api::ApiClient c(sd.apisock, std::chrono::seconds(5));
  std::lock_guard lk(mu_);
  std::error_code ec;
  for (fs::directory_iterator it(s_.root + "/config/" + sd.id, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory()) continue;
    DaemonInstance d = shared_image(sd, it->path());
    d.fscache_id = format::fscache_id(d.meta_id);
    auto listed = c.list_blobs(d.fscache_id);
    const bool registered = listed && listed->is_array() && !listed->empty();
    if (is_erofs_mount(d.mountpoint) && registered) {
      daemons_[d.meta_id] = d;
      adopted.push_back(d.meta_id);
      continue;
    }
    // Half there: cleared, so the next Prepare/Mounts registers and mounts it anew.
    spdlog::info("fscache: snapshot {} not adopted (erofs mounted: {}, registered: {}); cleared", d.meta_id,
                 is_erofs_mount(d.mountpoint), registered);
    unmount(d.mountpoint);
    if (registered) (void)c.delete_blobs(d.fscache_id, "");
    std::error_code e2;
    fs::remove_all(it->path(), e2);
  }
  return adopted;
}

}  // namespace nydus::snapshotter
