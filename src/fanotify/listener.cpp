#include "fanotify/listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "fanotify/fanotify_abi.h"

namespace nydus::fanotify {

Result<std::unique_ptr<Listener>> Listener::create(unsigned workers) {
  // FAN_NONBLOCK: the reader polls so stop() is prompt. Event fds are opened
  // O_RDWR so a fill could also go through them. FAN_UNLIMITED_QUEUE: when a
  // bounded queue is full the kernel drops the permission event and lets
  // that access through (a hole read as zeros), so never bound it.
  const unsigned base = FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK;
  int fd = ::fanotify_init(base | FAN_UNLIMITED_QUEUE, O_RDWR | O_LARGEFILE);
  if (fd < 0 && errno == EPERM) {
    spdlog::warn("fanotify: no CAP_SYS_ADMIN for an unlimited queue; an overflow would let reads of holes through");
    fd = ::fanotify_init(base, O_RDWR | O_LARGEFILE);
  }
  if (fd < 0) {
    const int err = errno;
    if (err == EINVAL)
      return std::unexpected(Error{Errc::kUnsupported, err,
                                   "this kernel has no fanotify pre-content events (FAN_CLASS_PRE_CONTENT, "
                                   "Linux 6.14+); use the FUSE mode (`nydusd fuse`) instead"});
    return sys_error("fanotify_init(FAN_CLASS_PRE_CONTENT) (needs CAP_SYS_ADMIN; or use `nydusd fuse`)", err);
  }
  return std::make_unique<Listener>(fd, true, workers);
}

Listener::Listener(int fan_fd, bool owns_fd, unsigned workers)
    : fan_fd_(fan_fd), owns_fd_(owns_fd), nworkers_(workers == 0 ? 1 : workers) {}

Listener::~Listener() {
  stop();
  if (owns_fd_ && fan_fd_ >= 0) ::close(fan_fd_);
}

namespace {

bool fully_cached(const storage::BlobCache& c) {
  const auto m = c.metrics();
  return m.chunks_ready >= m.chunks_total;
}

}  // namespace

Status Listener::add_blob(std::shared_ptr<storage::BlobCache> cache) {
  struct stat st;
  if (::fstat(cache->data_fd(), &st) != 0) return sys_error("stat blob cache data file");
  const std::string path = cache->data_path().string();
  // A blob whose every chunk is on disk needs no guard: reads of it go
  // straight to the cache file, at the kernel's own speed.
  const bool mark = !fully_cached(*cache);
  if (!mark) spdlog::info("fanotify: blob {} is fully cached: not marked", cache->info().blob_id);
  if (mark && fan_fd_ >= 0 && ::fanotify_mark(fan_fd_, FAN_MARK_ADD, FAN_PRE_ACCESS, AT_FDCWD, path.c_str()) != 0) {
    const int err = errno;
    return sys_error(fmt::format("fanotify_mark(FAN_PRE_ACCESS) on {} (use `nydusd fuse` if this filesystem "
                                 "does not support pre-content marks)",
                                 path),
                     err);
  }
  by_inode_[{st.st_dev, st.st_ino}] = blobs_.size();
  blobs_.push_back(std::move(cache));
  marked_.push_back(mark);
  return ok();
}

void Listener::unmark_if_complete(size_t bi) {
  std::lock_guard lk(mark_mu_);
  if (!marked_[bi] || !fully_cached(*blobs_[bi])) return;
  // Every chunk is on disk, so no read of this file can meet a hole any more:
  // drop the mark and stop paying a round trip per read. Events already
  // queued for it are still answered (allowed: their ranges are ready).
  const std::string path = blobs_[bi]->data_path().string();
  if (fan_fd_ >= 0 && ::fanotify_mark(fan_fd_, FAN_MARK_REMOVE, FAN_PRE_ACCESS, AT_FDCWD, path.c_str()) != 0) {
    spdlog::warn("fanotify: removing the mark of {}: {}", path, std::strerror(errno));
    return;
  }
  marked_[bi] = false;
  unmarked_++;
  spdlog::info("fanotify: blob {} is fully cached: mark removed", blobs_[bi]->info().blob_id);
}

void Listener::start() {
  std::lock_guard lk(mu_);
  if (started_) return;
  started_ = true;
  for (unsigned i = 0; i < nworkers_; i++) workers_.emplace_back([this] { worker_loop(); });
  if (fan_fd_ >= 0) reader_ = std::thread([this] { read_loop(); });
}

void Listener::stop() {
  {
    std::lock_guard lk(mu_);
    if (!started_ || stopped_) return;
    stopped_ = true;
  }
  stop_reading_ = true;
  if (reader_.joinable()) reader_.join();
  queue_.close();
  for (auto& t : workers_) t.join();
  workers_.clear();
  // Events still queued in the kernel: closing the group would let them
  // through (reading holes as zeros), so deny them instead.
  if (fan_fd_ >= 0) {
    alignas(fanotify_event_metadata) uint8_t buf[16384];
    for (int i = 0; i < 64; i++) {
      ssize_t n = ::read(fan_fd_, buf, sizeof(buf));
      if (n <= 0) break;
      Batch b = parse_events(std::span<const uint8_t>(buf, size_t(n)));
      for (auto& ev : b.events)
        if (ev.fd >= 0) answer(ev.fd, false);
    }
  }
}

ListenerStats Listener::stats() const {
  ListenerStats s;
  s.events = events_.load();
  s.allowed_ready = allowed_ready_.load();
  s.filled = filled_.load();
  s.denied = denied_.load();
  s.self_events = self_events_.load();
  s.malformed = malformed_.load();
  s.overflows = overflows_.load();
  s.bad_batches = bad_batches_.load();
  s.unmarked = unmarked_.load();
  return s;
}

void Listener::read_loop() {
  // Big enough for many events with their info records; aligned for the
  // kernel. On the heap: a thread_local array sits in every thread's TLS
  // block, which each new thread zeroes (64 KiB of RSS per thread).
  constexpr size_t kBuf = 65536;
  static_assert(alignof(fanotify_event_metadata) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
  const std::unique_ptr<uint8_t[]> storage(new uint8_t[kBuf]);
  uint8_t* const buf = storage.get();
  while (!stop_reading_) {
    pollfd p{fan_fd_, POLLIN, 0};
    int r = ::poll(&p, 1, 100);
    if (r < 0 && errno != EINTR) {
      spdlog::error("fanotify poll: {}", std::strerror(errno));
      return;
    }
    if (r <= 0) continue;
    ssize_t n = ::read(fan_fd_, buf, kBuf);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      spdlog::error("fanotify read: {}", std::strerror(errno));
      continue;
    }
    handle_buffer(std::span<const uint8_t>(buf, size_t(n)));
  }
}

void Listener::handle_buffer(std::span<const uint8_t> buf) {
  Batch b = parse_events(buf);
  if (b.truncated) {
    bad_batches_++;
    spdlog::error("fanotify: malformed event batch ({}); stopped at that point", b.error);
  }
  for (auto& ev : b.events) handle_event(ev);
}

ssize_t Listener::find_blob(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return -1;
  auto it = by_inode_.find({st.st_dev, st.st_ino});
  return it == by_inode_.end() ? -1 : ssize_t(it->second);
}

void Listener::handle_event(Event& ev) {
  events_++;
  switch (ev.kind) {
    case EventKind::kOverflow:
      // No reader waits on a lost event (the kernel answered it itself,
      // which is why the queue is unlimited): say so loudly, keep reading.
      overflows_++;
      spdlog::error("fanotify: event queue overflowed; some reads may have bypassed the cache fill");
      return;
    case EventKind::kOther:
      if (ev.fd >= 0) answer(ev.fd, true);  // not a pre-content event: nothing to guard
      return;
    case EventKind::kMalformed:
      malformed_++;
      spdlog::error("fanotify: malformed event (pid {}): {}; denied", ev.pid, ev.error);
      if (ev.fd >= 0) answer(ev.fd, false);
      return;
    case EventKind::kPreAccess:
      break;
  }
  if (ev.pid == ::getpid()) {
    // Our own I/O (a fill through an fd that raises events): see listener.h.
    self_events_++;
    answer(ev.fd, true);
    return;
  }
  const ssize_t bi = find_blob(ev.fd);
  if (bi < 0) {
    spdlog::error("fanotify: event for a file that is not a blob cache; denied");
    answer(ev.fd, false);
    return;
  }
  auto& cache = blobs_[size_t(bi)];
  const uint64_t size = cache->info().uncompressed_size;
  // No range record: the whole file is at stake.
  FillRange r = ev.has_range ? fill_range(ev.offset, ev.count, size) : fill_range(0, size, size);
  // Recorded before any decision: from here until answer() a takeover can
  // finish this event if we die (see inflight_journal.h).
  if (journal_) journal_->record(ev.fd, uint32_t(bi), r.offset, r.len);
  if (r.len == 0 || cache->is_ready(r.offset, r.len)) {
    allowed_ready_++;
    answer(ev.fd, true);
    // A blob filled by prefetch loses its mark at its next read.
    unmark_if_complete(size_t(bi));
    return;
  }
  spdlog::debug("fanotify: pid {} needs blob {} {:#x}+{:#x} (event fd {})", ev.pid, bi, r.offset, r.len, ev.fd);
  queue_.push(Job{ev.fd, size_t(bi), r});
}

void Listener::worker_loop() {
  while (auto next = queue_.pop()) {  // until stopped and drained
    const Job& job = *next;
    auto& cache = blobs_[job.blob];
    // BlobCache sets a chunk's bit only after its bytes are written and synced.
    Status st = cache->fetch_range(job.range.offset, job.range.len);
    if (st && cache->is_ready(job.range.offset, job.range.len)) {
      filled_++;
      answer(job.fd, true);
      unmark_if_complete(job.blob);
    } else {
      spdlog::error("fanotify: blob {} {:#x}+{:#x}: {}; read denied with EIO", cache->info().blob_id,
                    job.range.offset, job.range.len, st ? "not ready after fetch" : st.error().to_string());
      answer(job.fd, false, st ? EIO : st.error().to_errno());
    }
  }
}

bool Listener::write_response(int fd_number, bool allow, int deny_errno) {
  fanotify_response resp{fd_number, allow ? uint32_t(FAN_ALLOW) : uint32_t(FAN_DENY)};
  if (!allow && deny_errno_ok_) resp.response = FAN_DENY_ERRNO(deny_errno);
  ssize_t n = ::write(fan_fd_, &resp, sizeof(resp));
  if (n < 0 && errno == EINVAL && !allow && deny_errno_ok_) {
    // Kernels without FAN_DENY_ERRNO: a plain deny (the reader gets EPERM).
    deny_errno_ok_ = false;
    resp.response = FAN_DENY;
    n = ::write(fan_fd_, &resp, sizeof(resp));
  }
  return n == ssize_t(sizeof(resp));
}

void Listener::answer(int fd, bool allow, int deny_errno) {
  if (!allow) denied_++;
  if (fan_fd_ >= 0 && !write_response(fd, allow, deny_errno))
    spdlog::error("fanotify: response for fd {} failed: {}", fd, std::strerror(errno));
  if (journal_) journal_->clear(fd);
  spdlog::trace("fanotify: answered event fd {} ({})", fd, allow ? "allow" : "deny");
  ::close(fd);
}

bool Listener::answer_orphan(int fd_number, bool allow, int deny_errno) {
  if (fan_fd_ < 0 || fd_number < 0) return false;
  if (write_response(fd_number, allow, deny_errno)) {
    if (!allow) denied_++;
    return true;
  }
  if (errno != ENOENT) spdlog::warn("fanotify: answering orphaned event {}: {}", fd_number, std::strerror(errno));
  return false;
}

}  // namespace nydus::fanotify
