#include "daemon/daemon.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "common/fd_passing.h"
#include "common/file_util.h"
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

Result<std::string> Daemon::mount_key(const std::string& mountpoint) const {
  if (!fuse_mode()) return canonical_mountpoint(mountpoint);
  // A path inside the daemon's connection: normalised, never resolved on
  // the host (nydus-snapshotter sends "/<snapshot id>").
  if (mountpoint.empty() || mountpoint.front() != '/')
    return errorf(Errc::kInvalidArgument, "mountpoint \"{}\" must be a path inside the daemon's FUSE mount, "
                  "starting with /", mountpoint);
  std::string key = std::filesystem::path(mountpoint).lexically_normal().string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();
  if (key.find("/..") != std::string::npos && std::filesystem::path(key).lexically_normal() != key)
    return errorf(Errc::kInvalidArgument, "mountpoint \"{}\" leaves the FUSE mount", mountpoint);
  return key;
}

Status Daemon::start_fuse() {
  std::lock_guard ops(ops_mu_);
  if (!fuse_mode() || session_) return errorf(Errc::kInvalidArgument, "no FUSE mountpoint, or already mounted");
  fuse::SessionOptions so;
  so.max_threads = opts_.fuse_threads;
  so.failover = !opts_.supervisor.empty();
  NYDUS_ASSIGN_OR_RETURN(auto session, fuse::FuseSession::mount(vfs_, opts_.fuse_mountpoint, so));
  std::lock_guard lk(mu_);
  session_ = std::move(session);
  // Images mounted before the connection (a dedicated daemon's) count in it
  // with their options from the first request on.
  for (auto& [mp, img] : images_) io_stats_of(*img);
  NYDUS_TRY(session_->start());
  spdlog::info("FUSE mounted at {}", opts_.fuse_mountpoint);
  return ok();
}

Status Daemon::mount_image(const std::string& mountpoint, const std::filesystem::path& bootstrap,
                           const runtime::DaemonConfig& cfg, std::vector<std::string> prefetch_files,
                           std::string config_text) {
  std::lock_guard ops(ops_mu_);
  NYDUS_ASSIGN_OR_RETURN(const std::string mp, mount_key(mountpoint));
  {
    std::lock_guard lk(mu_);
    if (images_.count(mp)) return errorf(Errc::kExists, "{} is already mounted by this daemon", mp);
  }
  ImageOptions io;
  std::error_code ec;
  io.bootstrap = std::filesystem::absolute(bootstrap, ec);
  if (ec) io.bootstrap = bootstrap;
  io.mountpoint = mp;
  if (fuse_mode()) {
    io.vfs = vfs_;
    io.virtual_path = mp;
    io.mountpoint = mp == "/" ? opts_.fuse_mountpoint : opts_.fuse_mountpoint + mp;
  }
  io.config = cfg;
  io.config_text = std::move(config_text);
  io.fallback_work_dir = fallback_dir_for(mp);
  io.fuse_threads = opts_.fuse_threads;
  io.prefetch_files = std::move(prefetch_files);
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<ImageInstance> img, ImageInstance::mount(io));
  std::lock_guard lk(mu_);
  io_stats_of(*img);  // the image's counting options (iostats_files, ...) apply from now
  images_[mp] = std::shared_ptr<ImageInstance>(std::move(img));
  // A daemon taking over says READY, then RUNNING once started (start()).
  if (!opts_.upgrade) state_ = "RUNNING";
  return ok();
}

void Daemon::shutdown(bool leave_handed_over) {
  std::lock_guard ops(ops_mu_);
  std::map<std::string, std::shared_ptr<ImageInstance>> imgs;
  std::map<std::string, std::shared_ptr<runtime::ExternalMount>> exts;
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
  if (session_) leave ? session_->leave() : session_->stop();
}

std::vector<std::string> Daemon::dead_mounts() {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  if (session_ && session_->ended()) out.push_back(opts_.fuse_mountpoint);
  for (auto& [mp, img] : images_)
    if (!img->serving()) out.push_back(mp);
  for (auto& [mp, ext] : externals_)
    if (!ext->alive()) out.push_back(mp);
  return out;
}

// daemon_info() and metrics(): daemon_api.cpp.

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
  NYDUS_ASSIGN_OR_RETURN(runtime::DaemonConfig cfg, runtime::parse_config(req.config));
  if (fuse) return mount_image(req.mountpoint, req.source, cfg, req.prefetch_files, req.config);

  std::lock_guard ops(ops_mu_);
  const std::string mp = canonical_mountpoint(req.mountpoint);
  {
    std::lock_guard lk(mu_);
    if (images_.count(mp) || externals_.count(mp))
      return errorf(Errc::kExists, "{} is already mounted by this daemon", mp);
  }
  runtime::ExternalMountRequest er;
  er.mountpoint = mp;
  std::error_code ec;
  er.bootstrap = std::filesystem::absolute(req.source, ec);
  if (ec) er.bootstrap = req.source;
  er.config = cfg;
  er.prefetch_files = req.prefetch_files;
  er.fallback_work_dir = fallback_dir_for(mp);
  NYDUS_ASSIGN_OR_RETURN(std::unique_ptr<runtime::ExternalMount> m, mounter->second(er));
  std::lock_guard lk(mu_);
  externals_[mp] = std::shared_ptr<runtime::ExternalMount>(std::move(m));
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
  // An external (fanotify) mount is named by its host path even in FUSE mode.
  std::string mp = canonical_mountpoint(mountpoint);
  bool external;
  {
    std::lock_guard lk(mu_);
    external = externals_.count(mp) > 0;
  }
  if (fuse_mode() && !external) {
    NYDUS_ASSIGN_OR_RETURN(mp, mount_key(mountpoint));
  }
  std::shared_ptr<ImageInstance> img;
  std::shared_ptr<runtime::ExternalMount> ext;
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
    auto key = mount_key(id->second);
    auto it = key ? images_.find(*key) : images_.end();
    if (it == images_.end()) return errorf(Errc::kNotFound, "no image mounted at {}", id->second);
    return it->second;
  }
  if (images_.size() == 1) return images_.begin()->second;
  if (images_.empty()) return errorf(Errc::kNotFound, "no image mounted");
  return errorf(Errc::kInvalidArgument, "several images mounted: pass ?id=<mountpoint>");
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
  FuseHandover h;
  int fd = -1;
  {
    std::lock_guard lk(mu_);
    if (!session_) return errorf(Errc::kUnsupported, "sendfd hands over the FUSE connection of a FUSE-mode daemon");
    if (!externals_.empty()) return errorf(Errc::kUnsupported, "sendfd cannot hand over fanotify mounts");
    h.mountpoint = opts_.fuse_mountpoint;
    for (auto& [mp, img] : images_) {
      if (mp == "/")
        h.bootstrap = img->options().bootstrap.string();
      else
        h.mounts.push_back(HandedMount{mp, img->options().bootstrap.string(), img->options().config_text});
    }
    h.init = session_->init_message();
    fd = session_->fd();
  }
  if (h.init.empty() || fd < 0) return errorf(Errc::kIo, "{}: the FUSE connection is not initialised yet", h.mountpoint);
  NYDUS_TRY(send_state(opts_.supervisor, encode_fuse_handover(h), fd));
  std::lock_guard lk(mu_);
  handed_over_ = true;
  spdlog::info("sent the FUSE fd of {} ({} images) to {}", h.mountpoint, images_.size(), opts_.supervisor);
  return ok();
}

Status Daemon::takeover() {
  if (!opts_.upgrade) return errorf(Errc::kInvalidArgument, "takeover needs a daemon started with --upgrade");
  if (opts_.supervisor.empty()) return errorf(Errc::kInvalidArgument, "no --supervisor socket to take over from");
  if (!fuse_mode()) return errorf(Errc::kInvalidArgument, "takeover needs --mountpoint (FUSE mode)");
  {
    std::lock_guard ops(ops_mu_);
    {
      std::lock_guard lk(mu_);
      if (session_ || !images_.empty() || state_ != "INIT")
        return errorf(Errc::kExists, "already serving (state {})", state_);
    }
    NYDUS_ASSIGN_OR_RETURN(HandedState hs, receive_state(opts_.supervisor));
    auto h = decode_fuse_handover(hs.data);
    const std::string mp = resolve_parent(opts_.fuse_mountpoint);
    if (h && resolve_parent(h->mountpoint) != mp)
      h = errorf(Errc::kInvalidArgument, "the supervisor holds {}, this daemon serves {}", h->mountpoint, mp);
    if (!h) {
      if (hs.fd >= 0) ::close(hs.fd);
      return std::unexpected(std::move(h).error());
    }
    fuse::SessionOptions so;
    so.max_threads = opts_.fuse_threads;
    so.failover = !opts_.supervisor.empty();
    // From here the session owns hs.fd (closed on failure too).
    NYDUS_ASSIGN_OR_RETURN(auto session, fuse::FuseSession::adopt(vfs_, opts_.fuse_mountpoint, hs.fd, h->init, so));
    std::lock_guard lk(mu_);
    session_ = std::move(session);
    takeover_mounts_ = std::move(h->mounts);
    if (opts_.takeover_bootstrap.empty() && !h->bootstrap.empty()) opts_.takeover_bootstrap = h->bootstrap;
  }
  // The images come back before the connection serves again: the kernel
  // holds inode numbers of theirs.
  if (!opts_.takeover_bootstrap.empty())
    NYDUS_TRY(mount_image("/", opts_.takeover_bootstrap, opts_.takeover_config));
  for (auto& m : std::exchange(takeover_mounts_, {})) {
    auto cfg = runtime::parse_config(m.config);
    auto st = cfg ? mount_image(m.path, m.source, *cfg, {}, m.config) : Status(std::unexpected(cfg.error()));
    if (!st) spdlog::error("take over {} ({}): {}", m.path, m.source, st.error().message);
  }
  NYDUS_TRY(session_->start());
  // Requests the previous daemon read but never answered (it crashed) are
  // still in the kernel's processing queue: have them sent again.
  if (opts_.failover_resend) {
    if (auto st = fuse::FuseChannel::notify_resend(session_->fd()); !st)
      spdlog::warn("{}: cannot ask the kernel to resend requests (needs Linux 6.9+): {}", opts_.fuse_mountpoint,
                   st.error().message);
  }
  std::lock_guard lk(mu_);
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
