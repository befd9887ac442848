#include "fscache/fscache_daemon.h"
#include "runtime/metrics_json.h"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "common/fd_passing.h"
#include "format/digest.h"
#include "runtime/image_storage.h"

namespace nydus::fscache {

using nlohmann::json;

namespace {

std::mutex g_cwd_mu;  // "cull" acts on the process's working directory

}  // namespace

Status cull_cache_object(CacheDevice& dev, const std::filesystem::path& dir, const CacheObjectName& obj) {
  // Volume directories are "I" + the volume key, files "D" + a printable
  // cookie key (fs/cachefiles/{volume,key}.c); the fan-out directory comes
  // from the kernel's cookie hash, so look in each.
  const std::filesystem::path vol = dir / "cache" / ("Ierofs," + obj.volume_id);
  const std::string name = "D" + obj.cookie;
  std::error_code ec;
  std::filesystem::path fan;
  for (const auto& e : std::filesystem::directory_iterator(vol, ec)) {
    if (e.path().filename().string().starts_with("@") && std::filesystem::exists(e.path() / name, ec)) {
      fan = e.path();
      break;
    }
  }
  if (fan.empty()) return ok();
  std::lock_guard lk(g_cwd_mu);
  const int here = ::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (here < 0) return sys_error("open the working directory");
  Status st = ok();
  if (::chdir(fan.c_str()) != 0) st = sys_error(fmt::format("chdir {}", fan.string()));
  else st = dev.command("cull " + name);
  if (::fchdir(here) != 0) spdlog::error("fscache: cannot return to the working directory: {}", std::strerror(errno));
  ::close(here);
  return st;
}

FscacheDaemon::FscacheDaemon(FscacheOptions opts) : opts_(std::move(opts)), registry_(opts_.dir) {}

FscacheDaemon::~FscacheDaemon() { shutdown(); }

Result<std::unique_ptr<FscacheDaemon>> FscacheDaemon::create(const FscacheOptions& o) {
  FscacheOptions opts = o;
  std::error_code ec;
  opts.dir = std::filesystem::absolute(opts.dir, ec).lexically_normal();
  std::filesystem::create_directories(opts.dir, ec);
  if (ec) return sys_error(fmt::format("create fscache dir {}", opts.dir.string()), ec.value());
  std::unique_ptr<FscacheDaemon> d(new FscacheDaemon(opts));
  if (opts.upgrade) {
    if (opts.supervisor.empty()) return errorf(Errc::kInvalidArgument, "--upgrade needs --supervisor");
    spdlog::info("fscache: waiting for takeover from supervisor {}", opts.supervisor);
    return d;
  }
  NYDUS_ASSIGN_OR_RETURN(CacheDevice dev, CacheDevice::open(opts.device));
  if (auto st = bind_cache(dev, opts.dir, opts.tag); !st)
    return std::unexpected(std::move(st).error().context(
        fmt::format("binding the cache at {} (EBUSY: already bound; EOPNOTSUPP/EINVAL: no on-demand mode, or "
                    "the cache dir is on tmpfs)",
                    opts.dir.string())));
  NYDUS_TRY(d->serve(std::move(dev), false));
  d->state_ = "RUNNING";
  return d;
}

Status FscacheDaemon::serve(CacheDevice dev, bool restore) {
  auto svc = std::make_unique<FscacheService>(std::move(dev), registry_, opts_.threads);
  NYDUS_TRY(svc->start(restore));
  spdlog::info("fscache: serving {} on {} with {} workers{}", opts_.dir.string(), opts_.device.string(),
               opts_.threads, restore ? " (restored)" : "");
  std::lock_guard lk(mu_);
  service_ = std::move(svc);
  return ok();
}

void FscacheDaemon::shutdown() {
  std::unique_ptr<FscacheService> svc;
  {
    std::lock_guard lk(mu_);
    svc = std::move(service_);
    state_ = "STOPPED";
  }
  if (svc) {
    svc->stop();
    const auto s = svc->stats();
    spdlog::info("fscache: {} opens ({} failed), {} reads ({} failed, {} bytes), {} closes, {} malformed", s.opens,
                 s.open_failures, s.reads, s.read_failures, s.read_bytes, s.closes, s.malformed);
  }
  for (auto& b : registry_.data_blobs())
    if (auto c = b->cache_if_open())
      if (auto st = c->flush(); !st) spdlog::warn("flush cache of blob {}: {}", b->name(), st.error().message);
}

bool FscacheDaemon::failed() const {
  std::lock_guard lk(mu_);
  return service_ && !service_->running();
}

json FscacheDaemon::state() const {
  json entries = json::array();
  for (auto& e : registry_.entries()) entries.push_back(e);
  return json{{"kind", "fscache"},
              {"dir", opts_.dir.string()},
              {"tag", opts_.tag},
              {"threads", opts_.threads},
              {"entries", entries}};
}

json FscacheDaemon::daemon_info() {
  std::lock_guard lk(mu_);
  return json{{"version", runtime::build_time_info_json()},
              {"id", opts_.id.empty() ? json(nullptr) : json(opts_.id)},
              {"supervisor", nullptr},
              {"state", state_},
              {"backend_collection", json::object()},
              {"fscache", json{{"dir", opts_.dir.string()},
                               {"tag", opts_.tag},
                               {"threads", opts_.threads},
                               {"device", opts_.device.string()},
                               {"stats", service_ ? service_->stats_json() : json::object()}}}};
}

Status FscacheDaemon::mount(const api::MountRequest&) {
  return errorf(Errc::kUnsupported, "fscache mode: register images with PUT /api/v2/blobs and mount them with "
                                    "`mount -t erofs none -o fsid=<id>`");
}
Status FscacheDaemon::remount(const api::MountRequest& r) { return mount(r); }
Status FscacheDaemon::umount(const std::string&) {
  return errorf(Errc::kUnsupported, "fscache mode: unmount with umount(8), then DELETE /api/v2/blobs");
}

Result<json> FscacheDaemon::metrics(const std::string& kind, const std::map<std::string, std::string>& query) {
  const auto blobs = registry_.data_blobs();
  if (kind == "blobcache") {
    // Upstream: one BlobcacheMetrics per cache manager. Here one object over
    // every data blob cache open now.
    std::vector<std::shared_ptr<storage::BlobCache>> caches;
    for (auto& b : blobs)
      if (auto c = b->cache_if_open()) caches.push_back(std::move(c));
    return runtime::blobcache_json(caches, opts_.dir, 0);
  }
  if (kind == "backend") {
    auto id = query.find("id");
    for (auto& b : blobs)
      if (id == query.end() || id->second == b->name()) return runtime::backend_json(b->backend().get());
    return errorf(Errc::kNotFound, "no counter found for the metric");
  }
  // As upstream's fscache daemon: no filesystem service, so no fs metrics
  // (404) and no FUSE requests (501).
  if (kind == "inflight") return errorf(Errc::kUnsupported, "fscache mode has no FUSE requests");
  return errorf(Errc::kNotFound, "no counter found for the metric (fscache mode has no filesystem metrics)");
}

std::string FscacheDaemon::prometheus_metrics() {
  std::lock_guard lk(mu_);
  if (!service_) return "";
  const auto s = service_->stats();
  return fmt::format(
      "nydusd_fscache_opens_total {}\nnydusd_fscache_reads_total {}\nnydusd_fscache_read_bytes_total {}\n"
      "nydusd_fscache_read_failures_total {}\nnydusd_fscache_objects {}\n",
      s.opens, s.reads, s.read_bytes, s.read_failures, s.objects);
}

Status FscacheDaemon::set_registry_auth(const std::string& id, const std::string& auth_base64) {
  const std::string name = id.starts_with('/') ? id.substr(1) : id;
  NYDUS_ASSIGN_OR_RETURN(int matched, registry_.update_auth(name, auth_base64));
  if (matched == 0) {
    NYDUS_ASSIGN_OR_RETURN(matched, registry_.update_auth(format::fscache_id(name), auth_base64));
  }
  if (matched == 0) return errorf(Errc::kNotFound, "no image registered as {:?}", id);
  spdlog::info("fscache: registry credentials of {} renewed", id);
  return ok();
}

Status FscacheDaemon::create_blob(std::string_view body) {
  NYDUS_ASSIGN_OR_RETURN(BlobEntry e, parse_blob_entry(body));
  return registry_.add(e);
}

Result<json> FscacheDaemon::list_blobs(const std::string& domain_id, const std::string& blob_id) {
  return registry_.list(domain_id, blob_id);
}

void FscacheDaemon::cull(const std::vector<CacheObjectName>& gone) {
  std::lock_guard lk(mu_);
  if (!service_) return;
  for (const auto& g : gone)
    if (auto st = cull_cache_object(service_->device(), opts_.dir, g); !st)
      spdlog::info("fscache: cull {}/{}: {} (kept)", g.volume_id, g.cookie, st.error().to_string());
}

Status FscacheDaemon::delete_blobs(const std::string& domain_id, const std::string& blob_id) {
  NYDUS_ASSIGN_OR_RETURN(std::vector<CacheObjectName> gone, registry_.remove(domain_id, blob_id));
  cull(gone);
  return ok();
}

Status FscacheDaemon::delete_blob_file(const std::string& blob_id) {
  if (registry_.contains_blob(blob_id))
    return errorf(Errc::kInvalidArgument, "blob {} is still registered; delete its bootstrap first", blob_id);
  // The kernel's cache files of it, in whichever volumes hold one.
  std::error_code ec;
  std::vector<CacheObjectName> files;
  for (const auto& v : std::filesystem::directory_iterator(opts_.dir / "cache", ec)) {
    const std::string name = v.path().filename().string();
    if (name.starts_with("Ierofs,")) files.push_back({name.substr(7), blob_id});
  }
  cull(files);
  // Our own blob cache files of it, in the default cache dir.
  for (const char* suffix : {".blob.data", ".chunk_map", ".blob.meta"})
    std::filesystem::remove(opts_.dir / (blob_id + suffix), ec);
  return ok();
}

Status FscacheDaemon::send_fd() {
  if (opts_.supervisor.empty()) return errorf(Errc::kInvalidArgument, "no --supervisor socket given");
  std::lock_guard lk(mu_);
  if (!service_) return errorf(Errc::kInvalidArgument, "not serving: nothing to hand over");
  const std::string data = state().dump();
  NYDUS_TRY(send_state(opts_.supervisor, data, service_->device().fd()));
  spdlog::info("fscache: sent state ({} bytes) and the cache device to {}", data.size(), opts_.supervisor);
  return ok();
}

Status FscacheDaemon::takeover() {
  {
    std::lock_guard lk(mu_);
    if (service_) return errorf(Errc::kExists, "already serving");
  }
  if (opts_.supervisor.empty()) return errorf(Errc::kInvalidArgument, "no --supervisor socket given");
  NYDUS_ASSIGN_OR_RETURN(HandedState hs, receive_state(opts_.supervisor));
  NYDUS_ASSIGN_OR_RETURN(CacheDevice dev, CacheDevice::adopt(hs.fd));
  json st = json::parse(hs.data, nullptr, /*allow_exceptions=*/false);
  if (!st.is_object() || st.value("kind", json()) != "fscache" || !st.contains("entries") ||
      !st["entries"].is_array())
    return errorf(Errc::kCorrupt, "supervisor state is not an fscache daemon's");
  size_t n = 0;
  for (const auto& raw : st["entries"]) {
    auto e = blob_entry_from_json(raw);
    Status added = e ? registry_.add(*e) : Status(std::unexpected(e.error()));
    if (added) n++;
    else spdlog::error("fscache: takeover: entry not restored: {}", added.error().to_string());
  }
  NYDUS_TRY(serve(std::move(dev), true));
  std::lock_guard lk(mu_);
  state_ = "READY";
  spdlog::info("fscache: took over {} images from {}", n, opts_.supervisor);
  return ok();
}

Status FscacheDaemon::start() {
  std::lock_guard lk(mu_);
  if (!service_) return errorf(Errc::kInvalidArgument, "nothing to start: take over first");
  state_ = "RUNNING";
  return ok();
}

}  // namespace nydus::fscache
