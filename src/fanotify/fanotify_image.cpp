#include "fanotify/fanotify_image.h"
#include "runtime/metrics_json.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/fd_passing.h"
#include "fanotify/fanotify_abi.h"
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

Status FanotifyImage::open_storage() {
  NYDUS_ASSIGN_OR_RETURN(boot_, format::Bootstrap::open(opts_.bootstrap));
  NYDUS_ASSIGN_OR_RETURN(runtime::ImageStorage storage,
                         runtime::open_image_storage(*boot_, opts_.config, opts_.fallback_work_dir));
  backend_ = std::move(storage.backend);
  caches_ = std::move(storage.caches);
  work_dir_ = storage.work_dir;
  return ok();
}

Result<std::unique_ptr<FanotifyImage>> FanotifyImage::mount(const FanotifyImageOptions& opts) {
  std::unique_ptr<FanotifyImage> img(new FanotifyImage());
  img->opts_ = opts;

  // Preflight before touching anything: no pre-content events, no mode.
  NYDUS_ASSIGN_OR_RETURN(img->listener_, Listener::create(opts.workers));

  // All caches are opened (their data fds too) before the first mark: an fd
  // opened while the filesystem has no pre-content marks raises no events,
  // so fills never wait on ourselves (see listener.h).
  NYDUS_TRY(img->open_storage());
  if (!opts.supervisor.empty()) {
    const std::string name = opts.id.empty() ? std::to_string(::getpid()) : opts.id;
    NYDUS_ASSIGN_OR_RETURN(img->journal_, InflightJournal::create(img->work_dir_ / ("fanotify-" + name + ".inflight")));
    img->listener_->set_journal(img->journal_.get());
  }
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
               opts.mountpoint, img->caches_.size(), img->work_dir_.string());
  img->start_prefetch();
  return img;
}

void FanotifyImage::start_prefetch() {
  if (opts_.config.prefetch.enable && !caches_.empty() && !prefetch_) {
    prefetch_ = std::make_unique<runtime::Prefetcher>(boot_, caches_, opts_.config.prefetch, opts_.prefetch_files);
    prefetch_->start();
  }
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
  if (listener_) {
    listener_->stop();
    // A supervisor may still hold the group: drop its marks, or the cache
    // files (shared with other images' daemons) would block every reader.
    if (listener_->group_fd() >= 0 && ::fanotify_mark(listener_->group_fd(), FAN_MARK_FLUSH, 0, AT_FDCWD, nullptr) != 0)
      spdlog::warn("fanotify: flushing the marks: {}", std::strerror(errno));
  }
  if (journal_) {
    std::error_code ec;
    std::filesystem::remove(journal_->path(), ec);
  }
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
              {"supervisor", opts_.supervisor.empty() ? json(nullptr) : json(opts_.supervisor)},
              {"state", shut_ ? std::string("STOPPED") : state_},
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

std::unique_ptr<FanotifyImage> FanotifyImage::awaiting_takeover(const FanotifyImageOptions& opts) {
  std::unique_ptr<FanotifyImage> img(new FanotifyImage());
  img->opts_ = opts;
  img->state_ = "INIT";
  return img;
}

namespace {

constexpr std::string_view kStateKind = "nydusd-fanotify-v1";

// The dead daemon's event fd numbers stayed below its RLIMIT_NOFILE, which
// was ours (the same command line). Every free number below that gets a
// placeholder during a takeover, so room above it is made for the fds we
// open meanwhile (sockets, caches, new events); without room, the top of the
// range is left out (an orphan numbered there would get no answer).
int orphan_fd_limit() {
  constexpr rlim_t kRoom = 4096;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  rlim_t limit = std::min<rlim_t>(rl.rlim_cur, InflightJournal::kSlots);
  const rlim_t want = limit + kRoom;
  if (rl.rlim_cur >= want) return int(limit);
  rlimit more{want, std::max(rl.rlim_max, want)};  // root may raise the hard limit too
  if (::setrlimit(RLIMIT_NOFILE, &more) != 0) {
    more = rlimit{std::min(want, rl.rlim_max), rl.rlim_max};
    (void)::setrlimit(RLIMIT_NOFILE, &more);
  }
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
    limit = rl.rlim_cur > 2 * kRoom ? rl.rlim_cur - kRoom : rl.rlim_cur / 2;
    spdlog::warn("fanotify takeover: RLIMIT_NOFILE {} leaves little room above the dead daemon's fds; "
                 "of its events numbered {} and up only the journaled ones are answered",
                 rl.rlim_cur, limit);
  }
  return int(limit);
}

}  // namespace

Status FanotifyImage::check_cache_files() const {
  NYDUS_ASSIGN_OR_RETURN(auto boot, format::Bootstrap::open(opts_.bootstrap));
  const auto dir = runtime::cache_config(opts_.config, opts_.fallback_work_dir).work_dir;
  for (const auto& b : boot->blobs()) {
    const auto p = dir / (b.blob_id + ".blob.data");
    struct stat sb;
    if (::stat(p.c_str(), &sb) != 0 || !S_ISREG(sb.st_mode) || uint64_t(sb.st_size) != b.uncompressed_size)
      return errorf(Errc::kCorrupt, "{} is missing or changed size: the dead daemon's cache is not this image's",
                    p.string());
  }
  return ok();
}

Status FanotifyImage::send_fd() {
  if (opts_.supervisor.empty()) return errorf(Errc::kInvalidArgument, "no --supervisor socket to send the fd to");
  std::lock_guard ops(ops_mu_);
  if (!listener_ || !journal_ || state_ != "RUNNING" || shut_)
    return errorf(Errc::kUnsupported, "sendfd needs a running fanotify image started with --supervisor");
  const json st{{"kind", kStateKind},
                {"mountpoint", opts_.mountpoint},
                {"bootstrap", opts_.bootstrap.string()},
                {"journal", journal_->path().string()}};
  NYDUS_TRY(send_state(opts_.supervisor, st.dump(), listener_->group_fd()));
  spdlog::info("sent the fanotify group of {} to {}", opts_.mountpoint, opts_.supervisor);
  return ok();
}

Status FanotifyImage::takeover() {
  if (opts_.supervisor.empty()) return errorf(Errc::kInvalidArgument, "no --supervisor socket to take over from");
  std::lock_guard ops(ops_mu_);
  if (state_ != "INIT" || listener_) return errorf(Errc::kExists, "already serving (state {})", state_);
  NYDUS_ASSIGN_OR_RETURN(HandedState hs, receive_state(opts_.supervisor, std::chrono::seconds(10), 64 << 10));
  // From here hs.fd is ours: the listener owns it once made, else it is closed.
  auto fail = [&](Error e) -> Status {
    if (hs.fd >= 0) ::close(hs.fd);
    spdlog::error("fanotify takeover of {}: {}", opts_.mountpoint, e.message);
    return std::unexpected(std::move(e));
  };
  const json st = json::parse(hs.data, nullptr, /*allow_exceptions=*/false);
  if (!st.is_object() || st.value("kind", "") != kStateKind || !st["mountpoint"].is_string() ||
      !st["journal"].is_string())
    return fail(Error{Errc::kInvalidArgument, 0, "the supervisor holds no fanotify daemon's state"});
  if (st["mountpoint"].get<std::string>() != opts_.mountpoint)
    return fail(Error{Errc::kInvalidArgument, 0,
                      fmt::format("the supervisor holds {}, this daemon serves {}", st["mountpoint"].get<std::string>(),
                                  opts_.mountpoint)});
  if (hs.fd < 0) return fail(Error{Errc::kInvalidArgument, 0, "the supervisor sent no fanotify group fd"});
  mounted_ = true;  // the mount we take over must be there (mounted() reads the mount table)
  if (!mounted()) {
    mounted_ = false;
    return fail(Error{Errc::kNotFound, 0, fmt::format("{} is not mounted any more", opts_.mountpoint)});
  }
  auto journal = InflightJournal::open(st["journal"].get<std::string>());
  if (!journal) {
    mounted_ = false;
    return fail(journal.error());
  }
  // The caches' fds are opened after the marks exist, so our own fills raise
  // events: the listener must be reading before any of them (self events are
  // allowed at once). Opening a cache does no I/O on its data file unless its
  // size is wrong (a truncate would raise an event nobody reads yet).
  if (Status s = check_cache_files(); !s) {
    mounted_ = false;
    return fail(s.error());
  }
  if (Status s = open_storage(); !s) {
    mounted_ = false;
    return fail(s.error());
  }
  listener_ = std::make_unique<Listener>(hs.fd, /*owns_fd=*/true, opts_.workers);
  hs.fd = -1;
  journal_ = std::move(*journal);
  const std::vector<InflightJournal::Entry> recorded = journal_->pending();
  listener_->set_journal(journal_.get());
  for (auto& c : caches_)
    if (Status s = listener_->add_blob(c); !s) spdlog::warn("fanotify takeover: {}", s.error().message);

  // The dead daemon's pending events are known to the kernel only by their fd
  // numbers there. Until they are answered, no event of ours may get one of
  // those numbers (an answer goes to the oldest pending event by number), so
  // every free number below the limit is taken by a placeholder first, and so
  // is every journaled number above it: a daemon killed during its own
  // takeover left events numbered from the limit up, where our own events
  // are numbered now (answering one of ours would allow its unfilled orphan).
  const int limit = orphan_fd_limit();
  std::vector<int> placeholders;
  if (int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC); devnull >= 0) {
    auto hold = [&](int n) {
      if (::fcntl(n, F_GETFD) < 0 && errno == EBADF && ::dup2(devnull, n) == n) placeholders.push_back(n);
    };
    for (int n = 0; n < limit; n++) hold(n);
    for (const auto& e : recorded)
      if (e.fd >= limit) hold(e.fd);  // above our own RLIMIT_NOFILE dup2 fails: no fd of ours gets it either
    ::close(devnull);
  }
  spdlog::info("fanotify takeover: {} placeholders below {}", placeholders.size(), limit);
  listener_->start();
  finish_orphans(recorded, limit);
  for (int n : placeholders) ::close(n);
  spdlog::info("took over the fanotify group of {} ({} blobs)", opts_.mountpoint, caches_.size());
  return ok();
}

void FanotifyImage::finish_orphans(const std::vector<InflightJournal::Entry>& recorded, int fd_limit) {
  // Journaled numbers may lie above fd_limit (events read while a takeover
  // of our own held the placeholders): all of them are answered.
  std::vector<bool> done(InflightJournal::kSlots, false);
  size_t filled = 0, denied = 0;
  for (const auto& e : recorded) {
    if (e.fd < 0 || uint32_t(e.fd) >= InflightJournal::kSlots) continue;
    bool ok_range = e.blob < caches_.size() && e.len > 0 && e.offset <= caches_[e.blob]->info().uncompressed_size &&
                    e.len <= caches_[e.blob]->info().uncompressed_size - e.offset;
    bool ready = false;
    if (ok_range) {
      Status st = caches_[e.blob]->fetch_range(e.offset, e.len);
      ready = st && caches_[e.blob]->is_ready(e.offset, e.len);
      if (!st) spdlog::warn("fanotify takeover: blob {} {:#x}+{:#x}: {}", caches_[e.blob]->info().blob_id, e.offset,
                            e.len, st.error().message);
    }
    const bool answered = listener_->answer_orphan(e.fd, ready);
    spdlog::debug("fanotify takeover: journaled event {} (blob {} {:#x}+{:#x}): {}", e.fd, e.blob, e.offset, e.len,
                  answered ? (ready ? "filled, allowed" : "denied") : "not pending");
    if (answered) ready ? filled++ : denied++;
    journal_->clear(e.fd);
    done[size_t(e.fd)] = true;
  }
  // Events read in the instant before they were recorded: their ranges are
  // unknown, so the reader gets EIO (a readahead just retries).
  for (int n = 0; n < fd_limit; n++)
    if (!done[size_t(n)] && listener_->answer_orphan(n, false)) {
      spdlog::warn("fanotify takeover: event {} of the dead daemon was not journaled: denied", n);
      denied++;
    }
  spdlog::info("fanotify takeover: {} pending events of the dead daemon filled and allowed, {} denied", filled,
               denied);
}

Status FanotifyImage::start() {
  std::lock_guard ops(ops_mu_);
  if (!listener_ || shut_) return errorf(Errc::kInvalidArgument, "nothing to start: take over first");
  if (state_ == "RUNNING") return ok();
  state_ = "RUNNING";
  start_prefetch();
  return ok();
}

}  // namespace nydus::fanotify
