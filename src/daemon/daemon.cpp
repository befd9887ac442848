#include "daemon/daemon.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "common/fd_passing.h"
#include "daemon/fuse_handover.h"
#include "fuse/fuse_channel.h"

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

std::filesystem::path Daemon::fallback_dir_for(const std::string& mountpoint) const {
  return opts_.fallback_work_dir / fmt::format("{:016x}", std::hash<std::string>{}(mountpoint));
}

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
  io.fallback_work_dir = fallback_dir_for(mp);
  io.fuse_threads = opts_.fuse_threads;
  io.prefetch_files = std::move(prefetch_files);
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageInstance> img, ImageInstance::mount(io));
  std::lock_guard lk(mu_);
  images_[mp] = std::shared_ptr<ImageInstance>(std::move(img));
  state_ = "RUNNING";
  return ok();
}

void Daemon::shutdown(bool leave_handed_over) {
  std::lock_guard ops(ops_mu_);
  std::map<std::string, std::shared_ptr<ImageInstance>> imgs;
  std::map<std::string, std::shared_ptr<ExternalMount>> exts;
  bool leave;
  {
    std::lock_guard lk(mu_);
    imgs.swap(images_);
    exts.swap(externals_);
    state_ = "STOPPED";
    leave = leave_handed_over && handed_over_;
  }
  for (auto& [mp, img] : imgs) leave ? img->leave() : img->shutdown();
  for (auto& [mp, ext] : exts) ext->shutdown();
}

std::vector<std::string> Daemon::dead_mounts() {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (auto& [mp, img] : images_)
    if (!img->serving()) out.push_back(mp);
  for (auto& [mp, ext] : externals_)
    if (!ext->alive()) out.push_back(mp);
  return out;
}

size_t Daemon::mount_count() {
  std::lock_guard lk(mu_);
  return images_.size() + externals_.size();
}

json Daemon::daemon_info() {
  std::lock_guard lk(mu_);
  json coll = json::object();
  for (auto& [mp, img] : images_) coll[mp] = img->info();
  for (auto& [mp, ext] : externals_) coll[mp] = ext->info();
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
  const bool fuse = req.fs_type.empty() || req.fs_type == "rafs";
  auto mounter = opts_.mounters.find(req.fs_type);
  if (!fuse && mounter == opts_.mounters.end()) {
    std::string known = "rafs";
    for (const auto& [t, m] : opts_.mounters) known += ", " + t;
    return errorf(Errc::kUnsupported, "fs_type \"{}\" is not supported ({})", req.fs_type, known);
  }
  if (req.mountpoint.empty()) return errorf(Errc::kInvalidArgument, "missing mountpoint");
  if (req.source.empty()) return errorf(Errc::kInvalidArgument, "missing source (bootstrap path)");
  NYDUS_ASSIGN_OR_RETURN(DaemonConfig cfg, parse_config(req.config));
  if (fuse) return mount_image(req.mountpoint, req.source, cfg, req.prefetch_files);

  std::lock_guard ops(ops_mu_);
  const std::string mp = canonical_mountpoint(req.mountpoint);
  {
    std::lock_guard lk(mu_);
    if (images_.count(mp) || externals_.count(mp))
      return errorf(Errc::kExists, "{} is already mounted by this daemon", mp);
  }
  ExternalMountRequest er;
  er.mountpoint = mp;
  std::error_code ec;
  er.bootstrap = std::filesystem::absolute(req.source, ec);
  if (ec) er.bootstrap = req.source;
  er.config = cfg;
  er.prefetch_files = req.prefetch_files;
  er.fallback_work_dir = fallback_dir_for(mp);
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ExternalMount> m, mounter->second(er));
  std::lock_guard lk(mu_);
  externals_[mp] = std::shared_ptr<ExternalMount>(std::move(m));
  state_ = "RUNNING";
  return ok();
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
  std::shared_ptr<ExternalMount> ext;
  {
    std::lock_guard lk(mu_);
    if (auto it = images_.find(mp); it != images_.end()) {
      img = it->second;
      images_.erase(it);
    } else if (auto e = externals_.find(mp); e != externals_.end()) {
      ext = e->second;
      externals_.erase(e);
    } else {
      return errorf(Errc::kNotFound, "nothing mounted at {}", mp);
    }
  }
  if (img) img->shutdown();
  if (ext) ext->shutdown();
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
  {
    // A mount of another mode answers for itself when named (or when alone).
    std::shared_ptr<ExternalMount> ext;
    {
      std::lock_guard lk(mu_);
      auto id = query.find("id");
      if (id != query.end() && !id->second.empty()) {
        if (auto e = externals_.find(canonical_mountpoint(id->second)); e != externals_.end()) ext = e->second;
      } else if (images_.empty() && externals_.size() == 1) {
        ext = externals_.begin()->second;
      }
    }
    if (ext) return ext->metrics(kind);
  }
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

Status Daemon::send_fd() {
  if (opts_.supervisor.empty()) return errorf(Errc::kInvalidArgument, "no --supervisor socket to send the fd to");
  std::lock_guard ops(ops_mu_);
  std::shared_ptr<ImageInstance> img;
  {
    std::lock_guard lk(mu_);
    if (images_.size() != 1 || !externals_.empty())
      return errorf(Errc::kUnsupported, "sendfd hands over exactly one FUSE mount ({} here)",
                    images_.size() + externals_.size());
    img = images_.begin()->second;
  }
  FuseHandover h{img->mountpoint(), img->options().bootstrap.string(), img->fuse_init()};
  if (h.init.empty() || img->fuse_fd() < 0)
    return errorf(Errc::kIo, "{}: the FUSE connection is not initialised yet", h.mountpoint);
  NYDUS_TRY(send_state(opts_.supervisor, encode_fuse_handover(h), img->fuse_fd()));
  std::lock_guard lk(mu_);
  handed_over_ = true;
  spdlog::info("sent the FUSE fd of {} to {}", h.mountpoint, opts_.supervisor);
  return ok();
}

Status Daemon::takeover() {
  if (!opts_.upgrade) return errorf(Errc::kInvalidArgument, "takeover needs a daemon started with --upgrade");
  if (opts_.supervisor.empty()) return errorf(Errc::kInvalidArgument, "no --supervisor socket to take over from");
  std::lock_guard ops(ops_mu_);
  {
    std::lock_guard lk(mu_);
    if (!images_.empty() || state_ != "INIT")
      return errorf(Errc::kExists, "already serving (state {})", state_);
  }
  NYDUS_ASSIGN_OR_RETURN(HandedState hs, receive_state(opts_.supervisor));
  AdoptedConnection conn{hs.fd, {}};
  auto h = decode_fuse_handover(hs.data);
  const std::string mp = canonical_mountpoint(opts_.takeover_mountpoint);
  if (h && canonical_mountpoint(h->mountpoint) != mp)
    h = errorf(Errc::kInvalidArgument, "the supervisor holds {}, this daemon serves {}", h->mountpoint, mp);
  if (!h) {
    if (hs.fd >= 0) ::close(hs.fd);
    return std::unexpected(std::move(h).error());
  }
  conn.init = std::move(h->init);
  ImageOptions io;
  io.bootstrap = opts_.takeover_bootstrap.empty() ? std::filesystem::path(h->bootstrap) : opts_.takeover_bootstrap;
  io.mountpoint = mp;
  io.config = opts_.takeover_config;
  io.fallback_work_dir = fallback_dir_for(mp);
  io.fuse_threads = opts_.fuse_threads;
  const int fd = conn.fd;
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageInstance> img, ImageInstance::adopt(io, std::move(conn)));
  // Requests the previous daemon read but never answered (it crashed) are
  // still in the kernel's processing queue: have them sent again.
  if (opts_.failover_resend) {
    if (auto st = fuse::FuseChannel::notify_resend(fd); !st)
      spdlog::warn("{}: cannot ask the kernel to resend requests (needs Linux 6.9+): {}", mp, st.error().message);
  }
  std::lock_guard lk(mu_);
  images_[mp] = std::shared_ptr<ImageInstance>(std::move(img));
  state_ = "READY";
  return ok();
}

Status Daemon::start() {
  std::lock_guard lk(mu_);
  if (state_ == "RUNNING") return ok();
  if (state_ != "READY") return errorf(Errc::kInvalidArgument, "nothing to start (state {})", state_);
  state_ = "RUNNING";
  return ok();
}

}  // namespace nydus::daemon
