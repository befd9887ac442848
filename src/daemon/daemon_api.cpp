// The Daemon's side of the API answers that report on it (daemon info,
// metrics, runtime config), with upstream nydusd v2.4.4's bodies. Mounting
// and hand-over live in daemon.cpp.
#include <spdlog/spdlog.h>

#include "daemon/daemon.h"
#include "runtime/metrics_json.h"

namespace nydus::daemon {

using nlohmann::json;

namespace {

void apply_stats_options(runtime::FsIoStats& s, const runtime::DaemonConfig& c) {
  s.set_files_enabled(c.iostats_files);
  s.set_access_pattern_enabled(c.access_pattern);
  s.set_latest_read_files_enabled(c.latest_read_files);
}

}  // namespace

std::shared_ptr<runtime::FsIoStats> Daemon::io_stats_of(const ImageInstance& img) {
  // An image inside the daemon's connection is counted there (one set of
  // counters per connection: a shared daemon's images share them).
  auto s = img.own_io_stats();
  if (!s && session_) s = session_->io_stats();
  if (s) apply_stats_options(*s, img.options().config);
  return s;
}

json Daemon::daemon_info() {
  std::lock_guard lk(mu_);
  json coll = json::object();
  for (auto& [mp, img] : images_) coll[mp] = img->info();
  for (auto& [mp, ext] : externals_) coll[mp] = ext->info();
  // Field order as upstream's DaemonInfo.
  json info{{"version", runtime::build_time_info_json()},
            {"id", opts_.id.empty() ? json(nullptr) : json(opts_.id)},
            {"supervisor", opts_.supervisor.empty() ? json(nullptr) : json(opts_.supervisor)},
            {"state", state_},
            {"backend_collection", coll}};
  // Ours: how the FUSE connection's requests arrive ("io_uring" or "classic").
  if (session_) info["fuse_transport"] = session_->transport();
  return info;
}

Result<json> Daemon::metrics(const std::string& kind, const std::map<std::string, std::string>& query) {
  const auto id_it = query.find("id");
  const std::string id = id_it == query.end() ? "" : id_it->second;
  if (kind == "inflight") {
    // Upstream: the daemon's FUSE requests in progress, 204 when none.
    std::vector<runtime::InflightOp> ops;
    std::lock_guard lk(mu_);
    if (session_)
      if (auto s = session_->io_stats()) ops = s->inflight();
    for (auto& [mp, img] : images_)
      if (auto s = img->own_io_stats()) {
        auto more = s->inflight();
        ops.insert(ops.end(), more.begin(), more.end());
      }
    return runtime::inflight_json(ops);
  }
  {
    // A mount of another mode answers for itself when named (or when alone).
    std::shared_ptr<runtime::ExternalMount> ext;
    {
      std::lock_guard lk(mu_);
      if (!id.empty()) {
        std::error_code ec;
        auto canon = std::filesystem::weakly_canonical(id, ec);
        if (auto e = externals_.find(ec ? id : canon.string()); e != externals_.end()) ext = e->second;
      } else if (images_.empty() && externals_.size() == 1) {
        ext = externals_.begin()->second;
      }
    }
    if (ext) return ext->metrics(kind);
  }
  // Upstream: ?id= names the filesystem (its mountpoint); without it the
  // only one answers, else there is no counter (404).
  std::shared_ptr<ImageInstance> img;
  {
    std::lock_guard lk(mu_);
    if (!id.empty()) {
      auto key = mount_key(id);
      if (auto it = key ? images_.find(*key) : images_.end(); it != images_.end()) img = it->second;
      // The blob cache may also be named by a blob id.
      if (!img && kind == "blobcache")
        for (auto& [mp, i] : images_)
          for (auto& c : i->caches())
            if (c->info().blob_id == id) img = i;
    } else if (images_.size() == 1) {
      img = images_.begin()->second;
    }
  }
  if (!img) return errorf(Errc::kNotFound, "no counter found for the metric{}", id.empty() ? "" : " of " + id);
  if (kind == "blobcache") return img->cache_metrics();
  if (kind == "backend") return img->backend_metrics();
  auto stats = io_stats_of(*img);
  const std::string fs_id = img->options().vfs ? img->options().virtual_path : img->mountpoint();
  if (kind.empty()) {
    json j = runtime::fs_io_stats_json(stats.get(), fs_id);
    // Ours: requests a crashed predecessor held, sent again by the kernel.
    const fuse::FuseSession* s = img->own_session() ? img->own_session() : session_.get();
    j["fuse_resent_requests"] = s ? s->resent_requests() : 0;
    // Ours: requests served through FUSE over io_uring entries.
    j["fuse_uring_requests"] = s ? s->uring_requests() : 0;
    // Ours: files put into the page cache ahead of a reader (dir_read_ahead.h).
    j["fuse_pushed_files"] = s ? s->pushed_files() : 0;
    j["fuse_pushed_bytes"] = s ? s->pushed_bytes() : 0;
    return j;
  }
  if (kind == "files") {
    const bool latest = query.contains("latest") && query.at("latest") == "true";
    if (!stats) return latest ? json::array() : json::object();
    return latest ? stats->latest_read_files_json() : stats->files_json();
  }
  if (kind == "pattern") return stats ? stats->access_patterns_json() : json::array();
  return errorf(Errc::kNotFound, "unknown metrics kind \"{}\"", kind);
}

Status Daemon::set_registry_auth(const std::string& id, const std::string& auth_base64) {
  std::vector<std::shared_ptr<ImageInstance>> targets;
  {
    std::lock_guard lk(mu_);
    auto key = id.empty() ? Result<std::string>(std::string()) : mount_key(id);
    if (key && images_.count(*key)) {
      targets.push_back(images_.at(*key));
    } else if (images_.size() == 1 && (id.empty() || id == "/")) {
      targets.push_back(images_.begin()->second);  // a dedicated daemon: the snapshotter names it "/"
    } else {
      for (auto& [mp, img] : images_)
        if (img->options().config.id == id) targets.push_back(img);
    }
  }
  for (auto& img : targets) {
    if (img->caches().empty()) continue;  // no blobs, no backend
    auto st = img->backend().update_auth(auth_base64);
    if (!st && st.error().code != Errc::kUnsupported) return st;
    if (st) spdlog::info("registry credentials of {} renewed", img->mountpoint());
  }
  return {};
}

Result<json> Daemon::backend_info(const std::string& mountpoint) {
  std::shared_ptr<ImageInstance> img;
  {
    std::lock_guard lk(mu_);
    auto key = mount_key(mountpoint);
    if (auto it = key ? images_.find(*key) : images_.end(); it != images_.end()) img = it->second;
  }
  if (!img) return errorf(Errc::kNotFound, "no filesystem mounted at {}", mountpoint);
  // A summary of upstream's RafsSuperMeta (the fields this bootstrap has).
  const auto& sb = img->bootstrap().super_block();
  return json{{"magic", 0xE0F5E1E2u},
              {"version", 6},
              {"root_inode", img->fs().to_ino(img->bootstrap().root_nid())},
              {"inodes_count", sb.inos},
              {"chunk_size", img->bootstrap().chunk_size()},
              {"blob_count", img->bootstrap().blobs().size()},
              {"is_chunk_dict", false}};
}

}  // namespace nydus::daemon
