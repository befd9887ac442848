#include "fscache/fscache_service.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

namespace nydus::fscache {

using nlohmann::json;

namespace {

// Largest piece copied through one buffer: bounds memory per worker.
constexpr uint64_t kPiece = 1 << 20;

uint64_t page_down(uint64_t v) { return v & ~(kPageSize - 1); }
uint64_t page_up(uint64_t v) { return (v + kPageSize - 1) & ~(kPageSize - 1); }

// One page-aligned buffer per thread (direct I/O into the cache file).
uint8_t* piece_buffer() {
  struct Buf {
    void* p = nullptr;
    ~Buf() { std::free(p); }
  };
  thread_local Buf buf;
  if (!buf.p && ::posix_memalign(&buf.p, kPageSize, kPiece) != 0) buf.p = nullptr;
  return static_cast<uint8_t*>(buf.p);
}

// pwrite all of [buf, buf+len) at `off`. Kernels before 6.12.2 report the
// length rounded up to a page, later ones the length asked for, 6.12.41+ the
// bytes actually written (short writes visible): >= len is done, a short
// positive count continues from the page it reached, 0 is an error.
Status pwrite_all(int fd, const uint8_t* buf, uint64_t len, uint64_t off) {
  uint64_t done = 0;
  while (done < len) {
    const ssize_t n = ::pwrite(fd, buf + done, len - done, off_t(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(fmt::format("pwrite {} bytes at {:#x} into the cache object", len - done, off + done));
    }
    if (n == 0) return errorf(Errc::kIo, "pwrite at {:#x} into the cache object wrote nothing", off + done);
    if (uint64_t(n) >= len - done) return ok();
    // Resume at a page boundary: the anon fd only takes aligned offsets.
    const uint64_t next = page_down(done + uint64_t(n));
    if (next == done) return errorf(Errc::kIo, "pwrite at {:#x} into the cache object made no page of progress", off + done);
    done = next;
  }
  return ok();
}

}  // namespace

CacheObject::~CacheObject() {
  if (fd >= 0) ::close(fd);
}

Result<uint64_t> write_object_range(CacheObject& obj, uint64_t off, uint64_t len) {
  ObjectSource& src = *obj.what.source;
  const uint64_t size = src.size();
  const uint64_t limit = page_up(size);
  const uint64_t start = page_down(off);
  if (len == 0 || start >= limit)
    return errorf(Errc::kInvalidArgument, "range [{:#x}, +{:#x}) lies beyond object {} ({} bytes)", off, len,
                  src.name(), size);
  const uint64_t end = std::min(limit, off + std::min(len, limit));  // no overflow: len clamped first
  uint8_t* buf = piece_buffer();
  if (!buf) return errorf(Errc::kNoSpace, "cannot allocate an aligned write buffer");
  uint64_t written = 0;
  for (uint64_t p = start; p < end; p += kPiece) {
    if (obj.closed) return errorf(Errc::kIo, "object {} was closed", obj.key);
    const uint64_t n = std::min(kPiece, end - p);
    const uint64_t data = p < size ? std::min(n, size - p) : 0;
    if (data > 0) NYDUS_TRY(src.read(p, {buf, data}));
    const uint64_t padded = page_up(n);
    std::memset(buf + data, 0, padded - data);
    NYDUS_TRY(pwrite_all(obj.fd, buf, padded, p));
    written += padded;
  }
  return written;
}

FscacheService::FscacheService(CacheDevice dev, BlobRegistry& registry, unsigned workers)
    : dev_(std::move(dev)), registry_(registry), nworkers_(std::clamp(workers, 1u, 1024u)) {}

FscacheService::~FscacheService() { stop(); }

Status FscacheService::start(bool restore) {
  if (running_) return ok();
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return sys_error("eventfd");
  for (unsigned i = 0; i < nworkers_; ++i) workers_.emplace_back([this] { worker_loop(); });
  poller_ = std::thread([this] { poll_loop(); });
  running_ = true;
  // The loop runs before "restore": the kernel re-queues the pending requests
  // at once and wakes pollers.
  if (restore) {
    if (auto st = restore_cache(dev_); !st) {
      spdlog::error("fscache: restore failed: {} (kernel older than 6.8?)", st.error().to_string());
      return st;
    }
    spdlog::info("fscache: sent restore; pending requests are being replayed");
  }
  return ok();
}

void FscacheService::stop() {
  if (stopped_) return;
  stopped_ = true;
  stop_polling_ = true;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }
  if (poller_.joinable()) poller_.join();
  queue_.close();
  for (auto& w : workers_) w.join();
  workers_.clear();
  {
    std::lock_guard lk(prefetch_mu_);
    for (auto& [id, p] : prefetchers_) p->request_stop();
  }
  reap_prefetchers(true);
  std::map<uint32_t, std::shared_ptr<CacheObject>> objs;
  {
    std::lock_guard lk(objects_mu_);
    objs.swap(objects_);
  }
  for (auto& [id, o] : objs) o->closed = true;
  objs.clear();  // closes the anon fds: a kernel >= 6.8 reopens them on the next READ
  if (wake_fd_ >= 0) ::close(wake_fd_);
  wake_fd_ = -1;
  running_ = false;
}

void FscacheService::poll_loop() {
  std::vector<uint8_t> buf(kMsgMaxSize);
  pollfd fds[2] = {{dev_.fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (!stop_polling_) {
    const int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("fscache: poll: {}", std::strerror(errno));
      return;
    }
    if (stop_polling_) return;
    // Level-triggered; POLLIN may still be followed by an empty read
    // (requests of objects being reopened are skipped): drain until empty.
    for (;;) {
      auto r = dev_.read_msg(buf);
      if (!r) {
        // EMFILE/ENFILE: the kernel failed that OPEN itself. Keep serving,
        // but do not spin on a persistent error.
        spdlog::error("fscache: reading the cache device: {}", r.error().to_string());
        if (dev_.emulated() && r.error().sys_errno == 0) return;  // the emulator closed the channel
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        break;
      }
      if (*r == 0) break;
      handle_buffer({buf.data(), *r});
    }
    if (fds[0].revents & (POLLHUP | POLLERR)) {
      spdlog::error("fscache: the cache device hung up");
      return;
    }
    reap_prefetchers(false);
  }
}

void FscacheService::handle_buffer(std::span<const uint8_t> buf) {
  auto parsed = parse_message(buf);
  if (auto* bad = std::get_if<BadMessage>(&parsed)) {
    malformed_++;
    spdlog::error("fscache: malformed message (msg {}): {}", bad->msg_id, bad->error.message);
    if (bad->is_open) {
      // Fail the OPEN so the mount sees an error instead of hanging, and
      // release its fd if it really is one the device gave us.
      reply_open(bad->msg_id, -EINVAL);
      if (bad->open_fd >= 0 && dev_.is_object_fd(bad->open_fd)) ::close(bad->open_fd);
      open_failures_++;
    }
    return;
  }
  auto& msg = std::get<Message>(parsed);
  if (auto* o = std::get_if<OpenMsg>(&msg)) handle_open(*o);
  else if (auto* c = std::get_if<CloseMsg>(&msg)) handle_close(*c);
  else handle_read(std::get<ReadMsg>(msg));
}

void FscacheService::reply_open(uint32_t msg_id, int64_t size_or_errno) {
  // No spaces: the kernel parses "copen <id>,<size>" strictly.
  if (auto st = dev_.command(fmt::format("copen {},{}", msg_id, size_or_errno)); !st)
    spdlog::error("fscache: copen {},{}: {}", msg_id, size_or_errno, st.error().to_string());
}

void FscacheService::handle_open(OpenMsg& m) {
  opens_++;
  const std::string key = fmt::format("{}/{}", volume_id(m.volume_key), m.cookie_key);
  if (!dev_.is_object_fd(m.fd)) {
    open_failures_++;
    spdlog::error("fscache: OPEN {} (msg {}) names fd {}, which is not a cache object", key, m.msg_id, m.fd);
    reply_open(m.msg_id, -EBADF);
    return;
  }
  // Set at once: a forked child must never pin the object.
  ::fcntl(m.fd, F_SETFD, FD_CLOEXEC);
  if (m.flags != 0) spdlog::debug("fscache: OPEN {} with flags {:#x}", key, m.flags);
  auto found = registry_.find(m.volume_key, m.cookie_key);
  if (!found) {
    open_failures_++;
    spdlog::warn("fscache: OPEN of unknown object {} (msg {}): -ENOENT", key, m.msg_id);
    ::close(m.fd);  // no CLOSE will ever come for a failed OPEN
    reply_open(m.msg_id, -ENOENT);
    return;
  }
  auto obj = std::make_shared<CacheObject>(m.object_id, m.fd, key, std::move(*found));
  {
    std::lock_guard lk(objects_mu_);
    auto [it, fresh] = objects_.try_emplace(m.object_id, obj);
    if (!fresh) {
      open_failures_++;
      spdlog::error("fscache: OPEN {} reuses live object id {}: -EALREADY", key, m.object_id);
      // `obj` owns the fd now and closes it when dropped.
      reply_open(m.msg_id, -EALREADY);
      return;
    }
  }
  const uint64_t size = obj->what.source->size();
  // The object is in the table before the copen: READs for it may follow at once.
  if (auto st = dev_.command(fmt::format("copen {},{}", m.msg_id, size)); !st) {
    open_failures_++;
    spdlog::error("fscache: copen {} for {}: {}", m.msg_id, key, st.error().to_string());
    std::lock_guard lk(objects_mu_);
    objects_.erase(m.object_id);
    return;
  }
  spdlog::debug("fscache: opened {} as object {} ({} bytes)", key, m.object_id, size);
  if (!obj->what.is_bootstrap && obj->what.prefetch.enable && obj->what.boot) start_prefetch(obj);
}

void FscacheService::handle_close(const CloseMsg& m) {
  closes_++;
  std::shared_ptr<CacheObject> obj;
  {
    std::lock_guard lk(objects_mu_);
    auto it = objects_.find(m.object_id);
    if (it == objects_.end()) {
      spdlog::debug("fscache: CLOSE of unknown object {}", m.object_id);
      return;
    }
    obj = std::move(it->second);
    objects_.erase(it);
  }
  obj->closed = true;
  std::lock_guard lk(prefetch_mu_);
  if (auto it = prefetchers_.find(m.object_id); it != prefetchers_.end()) {
    it->second->request_stop();
    stopping_prefetchers_.push_back(std::move(it->second));
    prefetchers_.erase(it);
  }
  spdlog::debug("fscache: closed object {} ({})", m.object_id, obj->key);
}

void FscacheService::handle_read(const ReadMsg& m) {
  reads_++;
  ReadJob job{m, nullptr};
  {
    std::lock_guard lk(objects_mu_);
    if (auto it = objects_.find(m.object_id); it != objects_.end()) job.obj = it->second;
  }
  queue_.push(std::move(job));
}

void FscacheService::worker_loop() {
  while (auto job = queue_.pop()) serve_read(*job);  // until stopped and drained
}

void FscacheService::serve_read(ReadJob& job) {
  const ReadMsg& m = job.msg;
  if (!job.obj) {
    // Nothing to complete it on: kernels >= 6.10 require the object's own fd
    // and cancel requests of dropped objects themselves.
    unknown_objects_++;
    read_failures_++;
    spdlog::error("fscache: READ (msg {}) for unknown object {}", m.msg_id, m.object_id);
    return;
  }
  CacheObject& obj = *job.obj;
  auto w = write_object_range(obj, m.off, m.len);
  if (w) {
    read_bytes_ += *w;
  } else {
    read_failures_++;
    spdlog::error("fscache: READ {} [{:#x}, +{:#x}) (msg {}): {}; the reader gets EIO", obj.key, m.off, m.len,
                  m.msg_id, w.error().to_string());
  }
  // Always complete: a reader whose request is never completed waits forever
  // (unkillably before 6.10).
  if (auto st = dev_.complete_read(obj.fd, m.msg_id); !st) {
    complete_failures_++;
    spdlog::warn("fscache: completing msg {} for {}: {} (cancelled?)", m.msg_id, obj.key, st.error().to_string());
  }
  if (w) amplify(obj, m.off + m.len);
}

void FscacheService::amplify(CacheObject& obj, uint64_t from) {
  // The kernel asks in readahead-sized steps, one file at a time; filling the
  // holes just past a READ (after completing it: the reader is not kept
  // waiting) saves it those round trips, and keeps the cache file's extents
  // long. Stops at data already there; best effort.
  const uint64_t want = obj.what.amplify;
  const uint64_t limit = page_up(obj.what.source->size());
  const uint64_t start = page_up(from);
  if (want == 0 || start >= limit || obj.closed) return;
  uint64_t end = std::min(limit, start + want);
  const off_t data = ::lseek(obj.fd, off_t(start), SEEK_DATA);
  if (data >= 0 && uint64_t(data) < end) end = page_down(uint64_t(data));
  if (end <= start) return;
  if (auto w = write_object_range(obj, start, end - start)) amplified_bytes_ += *w;
  else spdlog::debug("fscache: amplifying {} at {:#x}: {}", obj.key, start, w.error().to_string());
}

namespace {

// Prefetch of one data blob object straight into its anon fd.
class ObjectPrefetchTarget : public runtime::PrefetchTarget {
 public:
  ObjectPrefetchTarget(std::weak_ptr<CacheObject> obj, std::shared_ptr<std::atomic<uint64_t>> bytes)
      : obj_(std::move(obj)), bytes_(std::move(bytes)) {}
  bool is_ready(const runtime::PrefetchRange& r) override {
    auto o = obj_.lock();
    if (!o || o->closed) return true;  // nothing left to fill
    // What the kernel's cache file already holds: no hole in the range.
    const off_t start = off_t(page_down(r.offset));
    const off_t hole = ::lseek(o->fd, start, SEEK_HOLE);
    return hole >= 0 && uint64_t(hole) >= r.offset + r.len;
  }
  Status fetch(const runtime::PrefetchRange& r) override {
    auto o = obj_.lock();
    if (!o || o->closed) return ok();
    NYDUS_ASSIGN_OR_RETURN(uint64_t n, write_object_range(*o, r.offset, r.len));
    *bytes_ += n;
    return ok();
  }

 private:
  std::weak_ptr<CacheObject> obj_;
  std::shared_ptr<std::atomic<uint64_t>> bytes_;
};

}  // namespace

void FscacheService::start_prefetch(const std::shared_ptr<CacheObject>& obj) {
  auto p = std::make_unique<runtime::Prefetcher>(obj->what.boot,
                                                std::make_shared<ObjectPrefetchTarget>(obj, prefetch_bytes_),
                                                obj->what.prefetch, std::vector<std::string>{}, obj->what.blob_index);
  p->start();
  std::lock_guard lk(prefetch_mu_);
  prefetchers_[obj->object_id] = std::move(p);
}

void FscacheService::reap_prefetchers(bool all) {
  std::vector<std::unique_ptr<runtime::Prefetcher>> done;
  {
    std::lock_guard lk(prefetch_mu_);
    if (all) {
      for (auto& [id, p] : prefetchers_) stopping_prefetchers_.push_back(std::move(p));
      prefetchers_.clear();
    }
    for (auto it = stopping_prefetchers_.begin(); it != stopping_prefetchers_.end();) {
      if (all || (*it)->stats().finished) {
        done.push_back(std::move(*it));
        it = stopping_prefetchers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& p : done) p->stop();  // joins, outside the lock
}

ServiceStats FscacheService::stats() const {
  ServiceStats s;
  s.opens = opens_;
  s.open_failures = open_failures_;
  s.closes = closes_;
  s.reads = reads_;
  s.read_bytes = read_bytes_;
  s.read_failures = read_failures_;
  s.unknown_objects = unknown_objects_;
  s.complete_failures = complete_failures_;
  s.malformed = malformed_;
  s.prefetch_bytes = *prefetch_bytes_;
  s.amplified_bytes = amplified_bytes_;
  {
    std::lock_guard lk(objects_mu_);
    s.objects = objects_.size();
  }
  return s;
}

json FscacheService::stats_json() const {
  const auto s = stats();
  return json{{"opens", s.opens},
              {"open_failures", s.open_failures},
              {"closes", s.closes},
              {"reads", s.reads},
              {"read_bytes", s.read_bytes},
              {"read_failures", s.read_failures},
              {"unknown_objects", s.unknown_objects},
              {"complete_failures", s.complete_failures},
              {"malformed", s.malformed},
              {"prefetch_bytes", s.prefetch_bytes},
              {"amplified_bytes", s.amplified_bytes},
              {"objects", s.objects}};
}

}  // namespace nydus::fscache
