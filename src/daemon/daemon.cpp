#include "daemon/daemon.h"

#include <spdlog/spdlog.h>

namespace nydus::daemon {

using nlohmann::json;

namespace {
std::string canonical_mountpoint(const std::string& mp) {
  std::error_code ec;
  auto c = std::filesystem::weakly_canonical(mp, ec);
  return ec ? mp : c.string();
}
}  // namespace

Daemon::Daemon(DaemonOptions opts) : opts_(std::move(opts)) {}
Daemon::~Daemon() { shutdown(); }

void Daemon::set_state(std::string s) {
  std::lock_guard lk(mu_);
  state_ = std::move(s);
}

Status Daemon::mount_image(const std::string& mountpoint, const std::filesystem::path& bootstrap,
                           const DaemonConfig& cfg, std::vector<std::string> prefetch_files) {
  std::lock_guard ops(ops_mu_);
  const std::string mp = canonical_mountpoint(mountpoint);
  {
    std::lock_guard lk(mu_);
    if (images_.count(mp)) return errorf(Errc::kExists, "{} is already mounted by this daemon", mp);
  }
  ImageOptions io;
  std::error_code ec;
  io.bootstrap = std::filesystem::absolute(bootstrap, ec);
  if (ec) io.bootstrap = bootstrap;
  io.mountpoint = mp;
  io.config = cfg;
  // Each mountpoint gets its own fallback dir: two live caches of one blob
  // must not write the same files.
  io.fallback_work_dir = opts_.fallback_work_dir / fmt::format("{:016x}", std::hash<std::string>{}(mp));
  io.fuse_threads = opts_.fuse_threads;
  io.prefetch_files = std::move(prefetch_files);
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageInstance> img, ImageInstance::mount(io));
  std::lock_guard lk(mu_);
  images_[mp] = std::shared_ptr<ImageInstance>(std::move(img));
  state_ = "RUNNING";
  return ok();
}

void Daemon::shutdown() {
  std::lock_guard ops(ops_mu_);
  std::map<std::string, std::shared_ptr<ImageInstance>> imgs;
  {
    std::lock_guard lk(mu_);
    imgs.swap(images_);
    state_ = "STOPPED";
  }
  for (auto& [mp, img] : imgs) img->shutdown();
}

std::vector<std::string> Daemon::dead_mounts() {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (auto& [mp, img] : images_)
    if (!img->serving()) out.push_back(mp);
  return out;
}

size_t Daemon::mount_count() {
  std::lock_guard lk(mu_);
  return images_.size();
}

json Daemon::daemon_info() {
  std::lock_guard lk(mu_);
  json coll = json::object();
  for (auto& [mp, img] : images_) coll[mp] = img->info();
  return json{{"id", opts_.id},
              {"version", json{{"package_ver", "0.1.0"},
                               {"git_commit", ""},
                               {"build_time", ""},
                               {"profile", "release"},
                               {"rustc", "n/a (C++ reimplementation)"}}},
              {"supervisor", nullptr},
              {"state", state_},
              {"backend_collection", coll}};
}

Status Daemon::mount(const api::MountRequest& req) {
  if (!req.fs_type.empty() && req.fs_type != "rafs")
    return errorf(Errc::kUnsupported, "fs_type \"{}\" is not supported (rafs only)", req.fs_type);
  if (req.mountpoint.empty()) return errorf(Errc::kInvalidArgument, "missing mountpoint");
  if (req.source.empty()) return errorf(Errc::kInvalidArgument, "missing source (bootstrap path)");
  NYDUS_ASSIGN_OR_RETURN(DaemonConfig cfg, parse_config(req.config));
  return mount_image(req.mountpoint, req.source, cfg, req.prefetch_files);
}

Status Daemon::remount(const api::MountRequest& req) {
  // Upstream swaps the image under a live FUSE mount; we would need an
  // indirection in RafsFs for that.
  return errorf(Errc::kUnsupported, "remount is not supported yet");
}

Status Daemon::umount(const std::string& mountpoint) {
  std::lock_guard ops(ops_mu_);
  const std::string mp = canonical_mountpoint(mountpoint);
  std::shared_ptr<ImageInstance> img;
  {
    std::lock_guard lk(mu_);
    auto it = images_.find(mp);
    if (it == images_.end()) return errorf(Errc::kNotFound, "nothing mounted at {}", mp);
    img = it->second;
    images_.erase(it);
  }
  img->shutdown();
  return ok();
}

Result<std::shared_ptr<ImageInstance>> Daemon::pick(const std::map<std::string, std::string>& query) {
  std::lock_guard lk(mu_);
  auto id = query.find("id");
  if (id != query.end() && !id->second.empty()) {
    auto it = images_.find(canonical_mountpoint(id->second));
    if (it == images_.end()) return errorf(Errc::kNotFound, "no image mounted at {}", id->second);
    return it->second;
  }
  if (images_.size() == 1) return images_.begin()->second;
  if (images_.empty()) return errorf(Errc::kNotFound, "no image mounted");
  return errorf(Errc::kInvalidArgument, "several images mounted: pass ?id=<mountpoint>");
}

Result<json> Daemon::metrics(const std::string& kind, const std::map<std::string, std::string>& query) {
  if (kind == "inflight") return json::array();
  if (kind == "blobcache") {
    // ?id= may name a blob id rather than a mountpoint.
    std::lock_guard lk(mu_);
    auto id = query.find("id");
    json arr = json::array();
    for (auto& [mp, img] : images_)
      for (auto& c : img->cache_metrics())
        if (id == query.end() || id->second.empty() || c["id"] == id->second || mp == id->second) arr.push_back(c);
    return arr;
  }
  NYDUS_ASSIGN_OR_RETURN(std::shared_ptr<ImageInstance> img, pick(query));
  if (kind.empty()) return img->fs_metrics();
  if (kind == "files") {
    if (!img->options().config.iostats_files)
      return errorf(Errc::kUnsupported, "per-file metrics need \"iostats_files\": true");
    return img->file_metrics();
  }
  if (kind == "pattern") return json::array();
  if (kind == "backend") return img->backend_metrics();
  return errorf(Errc::kNotFound, "unknown metrics kind \"{}\"", kind);
}

std::string Daemon::prometheus_metrics() {
  std::lock_guard lk(mu_);
  std::string out;
  out += "# HELP nydusd_read_bytes_total Bytes served by FUSE reads.\n# TYPE nydusd_read_bytes_total counter\n";
  for (auto& [mp, img] : images_)
    out += fmt::format("nydusd_read_bytes_total{{mountpoint=\"{}\"}} {}\n", mp, img->fs().metrics().read_bytes);
  out += "# HELP nydusd_read_errors_total FUSE reads answered EIO.\n# TYPE nydusd_read_errors_total counter\n";
  for (auto& [mp, img] : images_)
    out += fmt::format("nydusd_read_errors_total{{mountpoint=\"{}\"}} {}\n", mp, img->fs().metrics().read_errors);
  out += "# HELP nydusd_backend_read_bytes_total Bytes read from backends.\n"
         "# TYPE nydusd_backend_read_bytes_total counter\n";
  for (auto& [mp, img] : images_)
    out += fmt::format("nydusd_backend_read_bytes_total{{mountpoint=\"{}\"}} {}\n", mp,
                       img->caches().empty() ? 0 : img->backend().metrics().read_bytes);
  return out;
}

}  // namespace nydus::daemon
