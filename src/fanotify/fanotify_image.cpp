#include "fanotify/fanotify_image.h"
#include "runtime/metrics_json.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "runtime/image_storage.h"

namespace nydus::fanotify {

using nlohmann::json;

Result<std::string> erofs_device_options(const std::vector<std::filesystem::path>& data_files) {
  std::string opts;
  for (const auto& p : data_files) {
    const std::string s = p.string();
    // The kernel splits options at ',' and has no escaping.
    if (s.find(',') != std::string::npos || s.empty())
      return errorf(Errc::kInvalidArgument, "cache path {} cannot be passed as an EROFS device= option", s);
    if (!opts.empty()) opts += ',';
    opts += "device=" + s;
  }
  return opts;
}

Result<std::unique_ptr<FanotifyImage>> FanotifyImage::mount(const FanotifyImageOptions& opts) {
  std::unique_ptr<FanotifyImage> img(new FanotifyImage());
  img->opts_ = opts;
  const auto& cfg = opts.config;

  // Preflight before touching anything: no pre-content events, no mode.
  NYDUS_ASSIGN_OR_RETURN(img->listener_, Listener::create(opts.workers));

  NYDUS_ASSIGN_OR_RETURN(img->boot_, format::Bootstrap::open(opts.bootstrap));
  // All caches are opened (their data fds too) before the first mark: an fd
  // opened while the filesystem has no pre-content marks raises no events,
  // so fills never wait on ourselves (see listener.h).
  NYDUS_ASSIGN_OR_RETURN(runtime::ImageStorage storage,
                         runtime::open_image_storage(*img->boot_, cfg, opts.fallback_work_dir));
  img->backend_ = std::move(storage.backend);
  img->caches_ = std::move(storage.caches);
  const auto& blobs = img->boot_->blobs();
  std::vector<std::filesystem::path> files;
  for (auto& c : img->caches_) {
    NYDUS_TRY(img->listener_->add_blob(c));
    files.push_back(c->data_path());
  }
  img->listener_->start();

  // The kernel opens the device files now, after the marks: its reads raise events.
  NYDUS_ASSIGN_OR_RETURN(std::string mopts, erofs_device_options(files));
  if (::mount(opts.bootstrap.c_str(), opts.mountpoint.c_str(), "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID,
              mopts.c_str()) != 0) {
    const int err = errno;
    std::string hint = err == ENOTBLK ? " (file-backed EROFS needs the bootstrap and cache on a disk "
                                        "filesystem, not tmpfs, and a kernel with EROFS_FS_BACKED_BY_FILE)"
                                      : "";
    return sys_error(fmt::format("mount -t erofs {} {} -o {}{}; use the FUSE mode (`nydusd fuse`) instead",
                                 opts.bootstrap.string(), opts.mountpoint, mopts, hint),
                     err);
  }
  img->mounted_ = true;
  spdlog::info("mounted {} at {} with EROFS + fanotify ({} blobs, cache {})", opts.bootstrap.string(),
               opts.mountpoint, blobs.size(), storage.work_dir.string());

  if (cfg.prefetch.enable && !img->caches_.empty()) {
    img->prefetch_ =
        std::make_unique<runtime::Prefetcher>(img->boot_, img->caches_, cfg.prefetch, opts.prefetch_files);
    img->prefetch_->start();
  }
  return img;
}

FanotifyImage::~FanotifyImage() { shutdown(); }

bool FanotifyImage::mounted() const {
  if (!mounted_) return false;
  // mountinfo octal-escapes space, tab, newline and backslash.
  std::string want;
  for (char ch : opts_.mountpoint) {
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\\')
      want += fmt::format("\\{:03o}", unsigned(uint8_t(ch)));
    else
      want += ch;
  }
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "id parent maj:min root mountpoint ..."
    size_t p = 0;
    for (int f = 0; f < 4 && p != std::string::npos; f++) p = line.find(' ', p + 1);
    if (p == std::string::npos) continue;
    size_t e = line.find(' ', p + 1);
    if (line.substr(p + 1, e - p - 1) == want) return true;
  }
  return false;
}

void FanotifyImage::shutdown() {
  if (shut_) return;
  shut_ = true;
  if (prefetch_) prefetch_->stop();
  // The listener keeps answering while we unmount: a reader blocked in a
  // fill must be answered or the umount could never succeed.
  bool detached_busy = false;
  if (mounted_) {
    int rc = -1;
    for (int i = 0; i < 20; i++) {
      rc = ::umount(opts_.mountpoint.c_str());
      if (rc == 0 || errno != EBUSY) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (rc != 0 && errno == EBUSY) {
      spdlog::warn("{} is busy: detaching it", opts_.mountpoint);
      if (::umount2(opts_.mountpoint.c_str(), MNT_DETACH) != 0)
        spdlog::error("umount {}: {}", opts_.mountpoint, std::strerror(errno));
      detached_busy = true;
    } else if (rc != 0 && errno != EINVAL) {
      spdlog::error("umount {}: {}", opts_.mountpoint, std::strerror(errno));
    }
  }
  if (detached_busy) {
    // The detached EROFS lives on for its open files, and once our group is
    // gone its reads would see unfilled holes as zeros. Truncating the cache
    // files turns such reads into errors (short reads) instead of wrong
    // bytes; the next start finds the size wrong and rebuilds the cache.
    for (auto& c : caches_)
      if (::ftruncate(c->data_fd(), 0) != 0)
        spdlog::error("truncate {}: {}", c->data_path().string(), std::strerror(errno));
  }
  if (listener_) listener_->stop();
  if (!detached_busy)
    for (auto& c : caches_)
      if (auto st = c->flush(); !st) spdlog::warn("flush cache of blob {}: {}", c->info().blob_id, st.error().message);
  if (listener_) {
    auto s = listener_->stats();
    spdlog::info("fanotify: {} events, {} ready, {} filled, {} denied, {} self, {} malformed, {} overflows",
                 s.events, s.allowed_ready, s.filled, s.denied, s.self_events, s.malformed, s.overflows);
  }
  if (mounted_) spdlog::info("unmounted {}", opts_.mountpoint);
}

json FanotifyImage::info() {
  return json{{"mountpoint", opts_.mountpoint}, {"fs_type", "fanotify"}, {"source", opts_.bootstrap.string()}};
}

json FanotifyImage::daemon_info() {
  return json{{"version", runtime::build_time_info_json()},
              {"id", nullptr},
              {"supervisor", nullptr},
              {"state", shut_ ? "STOPPED" : "RUNNING"},
              {"backend_collection", json{{opts_.mountpoint, info()}}}};
}

Status FanotifyImage::mount(const api::MountRequest&) {
  return errorf(Errc::kUnsupported, "fanotify mode serves one image; mounting through the API is not supported");
}
Status FanotifyImage::remount(const api::MountRequest&) {
  return errorf(Errc::kUnsupported, "remount is not supported in fanotify mode");
}
Status FanotifyImage::umount(const std::string&) {
  return errorf(Errc::kUnsupported, "umount through the API is not supported in fanotify mode; send SIGTERM");
}

Result<json> FanotifyImage::metrics(const std::string& kind, const std::map<std::string, std::string>&) {
  if (kind == "blobcache")
    return runtime::blobcache_json(caches_, runtime::cache_config(opts_.config, opts_.fallback_work_dir).work_dir,
                                  opts_.config.prefetch.enable ? opts_.config.prefetch.threads_count : 0);
  if (kind == "backend") return runtime::backend_json(backend_.get());
  if (kind == "inflight") return json(nullptr);  // no FUSE requests: 204, as an idle upstream daemon
  if (kind == "files") return json::object();
  if (kind == "pattern") return json::array();
  if (kind.empty()) {
    // Upstream's FsIoStats shape (no FUSE requests to count: zeros) plus
    // what the fanotify listener counted.
    const auto s = listener_->stats();
    json j = runtime::fs_io_stats_json(nullptr, opts_.mountpoint);
    j["fanotify"] = json{{"events", s.events},
                                  {"allowed_ready", s.allowed_ready},
                                  {"filled", s.filled},
                                  {"denied", s.denied},
                                  {"self_events", s.self_events},
                                  {"malformed", s.malformed},
                                  {"overflows", s.overflows},
                                  {"unmarked", s.unmarked}};
    return j;
  }
  return errorf(Errc::kNotFound, "metrics kind {} is not available in fanotify mode", kind);
}

std::string FanotifyImage::prometheus_metrics() {
  const auto s = listener_->stats();
  return fmt::format("nydusd_fanotify_events_total {}\nnydusd_fanotify_filled_total {}\nnydusd_fanotify_denied_total {}\n",
                     s.events, s.filled, s.denied);
}

}  // namespace nydus::fanotify
