#define FUSE_USE_VERSION 312
#include "fuse/fuse_channel.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "fuse/request_poll.h"

namespace nydus::fuse {

namespace {

// libfuse hands custom I/O the session's userdata (our RafsFs), not ours:
// channels are found by fd, without a lock on the request path.
constexpr int kMaxFd = 1 << 16;
std::array<std::atomic<FuseChannel*>, kMaxFd> g_channels{};

// A unique no kernel request carries (the kernel counts up from 1 and uses
// the top bit for resends): marks libfuse's answer to a replayed INIT.
constexpr uint64_t kReplayUnique = 0x7FFF'FFFF'FFFF'FFF1ull;
// In the INIT handed to a successor (init_message()), in place of the unique
// (which the successor replaces with kReplayUnique): this connection accepted
// FUSE over io_uring, so the successor must register ring entries.
constexpr uint64_t kUringMark = 0x7FFF'FFFF'FFFF'FFF3ull;

}  // namespace

Result<std::unique_ptr<FuseChannel>> FuseChannel::create(int fd, std::vector<uint8_t> replay_init, UringMode uring,
                                                         unsigned uring_threads, bool failover) {
  if (fd < 0 || fd >= kMaxFd) return errorf(Errc::kInvalidArgument, "FUSE fd {} out of range", fd);
  std::unique_ptr<FuseChannel> c(new FuseChannel());
  c->fd_ = fd;
  c->uring_mode_ = uring;
  c->uring_threads_ = std::clamp(uring_threads, 1u, 1024u);
  c->failover_ = failover;
  if (!replay_init.empty()) {
    fuse_in_header h;
    if (replay_init.size() < sizeof(h) + sizeof(fuse_init_in) - 48 || replay_init.size() > 4096)
      return errorf(Errc::kInvalidArgument, "recorded FUSE INIT has a bad size ({} bytes)", replay_init.size());
    std::memcpy(&h, replay_init.data(), sizeof(h));
    if (h.opcode != FUSE_INIT || h.len != replay_init.size())
      return errorf(Errc::kInvalidArgument, "recorded FUSE INIT is not an INIT request (opcode {}, len {})", h.opcode,
                    h.len);
    c->predecessor_uring_ = h.unique == kUringMark;
    h.unique = kReplayUnique;
    std::memcpy(replay_init.data(), &h, sizeof(h));
    c->init_ = std::move(replay_init);
    c->replay_pending_ = true;
    c->replay_unique_ = kReplayUnique;
  }
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return sys_error("making the FUSE fd non-blocking");
  c->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->wake_fd_ < 0) return sys_error("eventfd");
  return c;
}

FuseChannel::~FuseChannel() {
  if (uring_) {
    wake();
    uring_.reset();  // joins the ring threads
  }
  if (fd_ >= 0 && fd_ < kMaxFd) {
    FuseChannel* self = this;
    g_channels[fd_].compare_exchange_strong(self, nullptr);
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Status FuseChannel::install(struct fuse_session* se) {
  se_ = se;
  g_channels[fd_].store(this);
  static const fuse_custom_io io{&FuseChannel::io_writev, &FuseChannel::io_read, nullptr, nullptr};
  if (int rc = fuse_session_custom_io(se, &io, fd_); rc != 0)
    return errorf(Errc::kIo, "fuse_session_custom_io: {}", std::strerror(-rc));
  return ok();
}

void FuseChannel::wake() {
  stopping_.store(true, std::memory_order_release);
  const uint64_t one = 1;  // never drained: every worker's epoll sees it from now on
  (void)!::write(wake_fd_, &one, sizeof(one));
}

std::vector<uint8_t> FuseChannel::init_message() const {
  std::vector<uint8_t> m;
  {
    std::lock_guard lk(init_mu_);
    m = init_;
  }
  if (uring_started_.load() && m.size() >= sizeof(fuse_in_header)) {
    fuse_in_header h;
    std::memcpy(&h, m.data(), sizeof(h));
    h.unique = kUringMark;
    std::memcpy(m.data(), &h, sizeof(h));
  }
  return m;
}

namespace {

// How long a worker polls for the next request (NYDUS_FUSE_SPIN_US, 0 = never).
long spin_micros() {
  static const long us = [] {
    const char* e = std::getenv("NYDUS_FUSE_SPIN_US");
    if (!e || !*e) return 200L;
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    return (*end || v < 0) ? 200L : std::min(v, 100000L);
  }();
  return us;
}

}  // namespace

ssize_t FuseChannel::io_read(int fd, void* buf, size_t len, void*) {
  FuseChannel* c = fd >= 0 && fd < kMaxFd ? g_channels[fd].load() : nullptr;
  if (!c) {
    errno = EBADF;
    return -1;
  }
  if (c->replay_pending_.exchange(false)) {
    std::lock_guard lk(c->init_mu_);
    if (len < c->init_.size()) {
      errno = EINVAL;
      return -1;
    }
    std::memcpy(buf, c->init_.data(), c->init_.size());
    return ssize_t(c->init_.size());
  }
  for (;;) {
    if (c->stopping_.load(std::memory_order_acquire)) {
      errno = EINTR;  // as from the wake eventfd below
      return -1;
    }
    // Take a waiting request without a wait first; when there is none, wait
    // for one (see wait_readable) and try again.
    ssize_t n = ::read(fd, buf, len);
    if (n < 0 && errno == EAGAIN && !c->spinning_.exchange(true, std::memory_order_acquire)) {
      // One worker at a time polls a little before it sleeps (request_poll.h).
      poll_for_request(
          [&] {
            n = ::read(fd, buf, len);
            return !(n < 0 && errno == EAGAIN);
          },
          [] { sched_yield(); }, [] { return std::chrono::steady_clock::now(); },
          PollLimits{.budget = std::chrono::microseconds(spin_micros())});
      c->spinning_.store(false, std::memory_order_release);
    }
    if (n < 0 && errno == EAGAIN) {
      if (!c->wait_readable()) return -1;  // errno EINTR: woken to stop
      continue;
    }
    if (n >= ssize_t(sizeof(fuse_in_header))) {
      fuse_in_header h;
      std::memcpy(&h, buf, sizeof(h));
      if (h.unique & (uint64_t(1) << 63)) c->resent_.fetch_add(1, std::memory_order_relaxed);  // FUSE_UNIQUE_RESEND
      c->stats_->on_request(h.opcode, h.unique, h.nodeid);
      if (h.opcode == FUSE_INIT && size_t(n) <= 4096) {
        std::lock_guard lk(c->init_mu_);
        if (c->init_.empty()) {
          c->init_.assign(static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + n);
          c->init_unique_.store(h.unique);
        }
      }
    }
    return n;
  }
}

bool FuseChannel::wait_readable() {
  // One epoll instance per worker thread, with the FUSE fd registered
  // EPOLLEXCLUSIVE: a new request wakes one waiting worker, not all of them.
  // poll() on the shared fd woke every worker for every request (all but one
  // then found nothing to read), and on 2 vCPUs those wake-ups were most of
  // the cost of a small request. The wake eventfd is registered normally, so
  // stop() still reaches every worker.
  struct Waiter {
    const FuseChannel* owner = nullptr;
    int epfd = -1;
    ~Waiter() {
      if (epfd >= 0) ::close(epfd);
    }
  };
  thread_local Waiter w;
  if (w.owner != this) {
    if (w.epfd >= 0) ::close(w.epfd);
    w.owner = nullptr;
    w.epfd = ::epoll_create1(EPOLL_CLOEXEC);
    if (w.epfd < 0) return false;
    epoll_event fe{};
    fe.events = EPOLLIN | EPOLLEXCLUSIVE;
    fe.data.u32 = 0;
    epoll_event we{};
    we.events = EPOLLIN;
    we.data.u32 = 1;
    if (::epoll_ctl(w.epfd, EPOLL_CTL_ADD, fd_, &fe) != 0 || ::epoll_ctl(w.epfd, EPOLL_CTL_ADD, wake_fd_, &we) != 0) {
      const int e = errno;
      ::close(w.epfd);
      w.epfd = -1;
      errno = e;
      return false;
    }
    w.owner = this;
  }
  for (;;) {
    epoll_event ev[2];
    const int n = ::epoll_wait(w.epfd, ev, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    for (int i = 0; i < n; i++)
      if (ev[i].data.u32 == 1) {
        errno = EINTR;  // libfuse checks for exit first and ends this worker
        return false;
      }
    if (n > 0) return true;
  }
}

ssize_t FuseChannel::io_writev(int fd, struct iovec* iov, int count, void*) {
  FuseChannel* c = fd >= 0 && fd < kMaxFd ? g_channels[fd].load() : nullptr;
  if (c && count > 0 && iov[0].iov_len >= sizeof(fuse_out_header)) {
    fuse_out_header h;
    std::memcpy(&h, iov[0].iov_base, sizeof(h));
    if (c->replay_unique_ != 0 && h.unique == c->replay_unique_) {  // the kernel answered this INIT long ago
      std::vector<uint8_t> msg;
      for (int i = 0; i < count; i++)
        msg.insert(msg.end(), static_cast<uint8_t*>(iov[i].iov_base),
                   static_cast<uint8_t*>(iov[i].iov_base) + iov[i].iov_len);
      // The predecessor's connection may run on rings (their entries went
      // with it): register ours, or requests would wait for entries forever.
      if (h.error == 0 && c->want_uring(init_offers_uring(c->init_message())))
        c->start_uring(msg.data() + sizeof(h), msg.size() - sizeof(h));
      return ssize_t(msg.size());
    }
    if (h.unique != 0 && h.len >= sizeof(h))  // 0: a notification, not a reply
      c->stats_->on_reply(h.unique, h.error, h.len - sizeof(h));
    ssize_t written = 0;
    if (FuseUring::capture_reply(iov, count, &written)) return written;
    if (h.unique != 0 && h.unique == c->init_unique_.load(std::memory_order_relaxed)) return c->answer_init(iov, count);
  }
  return ::writev(fd, iov, count);
}

ssize_t FuseChannel::answer_init(struct iovec* iov, int count) {
  init_unique_.store(0);
  std::vector<uint8_t> msg;
  for (int i = 0; i < count; i++)
    msg.insert(msg.end(), static_cast<uint8_t*>(iov[i].iov_base),
               static_cast<uint8_t*>(iov[i].iov_base) + iov[i].iov_len);
  fuse_out_header h;
  std::memcpy(&h, msg.data(), sizeof(h));
  // fuse_init_out: flags at 12, flags2 at 32 (both there since 7.36).
  const bool accept = h.error == 0 && msg.size() >= sizeof(h) + 36 && want_uring(init_offers_uring(init_message()));
  if (accept) {
    uint8_t* out = msg.data() + sizeof(h);
    uint32_t flags, flags2;
    std::memcpy(&flags, out + 12, 4);
    std::memcpy(&flags2, out + 32, 4);
    flags |= 1u << 30;   // FUSE_INIT_EXT
    flags2 |= 1u << 9;   // FUSE_OVER_IO_URING
    std::memcpy(out + 12, &flags, 4);
    std::memcpy(out + 32, &flags2, 4);
  }
  const ssize_t n = ::write(fd_, msg.data(), msg.size());
  if (n == ssize_t(msg.size()) && accept) start_uring(msg.data() + sizeof(h), msg.size() - sizeof(h));
  return n;
}

bool FuseChannel::want_uring(bool offered) {
  // The one line that says why requests go through read/write.
  if (!offered) {
    spdlog::log(uring_mode_ == UringMode::kOn ? spdlog::level::warn : spdlog::level::info,
                "FUSE transport: /dev/fuse read/write: the kernel does not offer FUSE over io_uring (it needs "
                "Linux >= 6.14 and /sys/module/fuse/parameters/enable_uring = Y at mount time)");
    return false;
  }
  if (predecessor_uring_) {
    // Not registering would leave every request waiting for a ring entry.
    if (uring_mode_ == UringMode::kOff)
      spdlog::warn("FUSE transport: io_uring although configured off: the adopted connection runs on rings");
    return true;
  }
  if (uring_mode_ == UringMode::kOff) {
    spdlog::info("FUSE transport: /dev/fuse read/write (FUSE over io_uring is off by configuration)");
    return false;
  }
  if (uring_mode_ == UringMode::kAuto && failover_) {
    spdlog::info("FUSE transport: /dev/fuse read/write: this daemon has a supervisor for failover, and the kernel "
                 "does not resend requests a crashed daemon held in io_uring entries (--fuse-uring on prefers "
                 "io_uring anyway)");
    return false;
  }
  return true;
}

void FuseChannel::start_uring(const uint8_t* init_out, size_t len) {
  std::lock_guard lk(uring_mu_);
  if (uring_) return;
  std::ifstream f("/sys/devices/system/cpu/possible");
  std::stringstream ss;
  ss << f.rdbuf();
  FuseUring::Options o;
  o.fuse_fd = fd_;
  o.wake_fd = wake_fd_;
  o.se = se_;
  o.payload_size = uring_payload_size(init_out, len);
  o.queues = possible_cpus(ss.str());
  o.threads_per_queue = std::clamp((uring_threads_ + o.queues - 1) / o.queues, 1u, 16u);
  o.stats = stats_;
  if (replay_unique_ != 0) o.poke_path = poke_path_;  // adopting: see set_poke_path
  spdlog::info("FUSE transport: io_uring, {} queue(s) x {} entries, {} KiB payload buffers", o.queues,
               o.threads_per_queue, o.payload_size / 1024);
  uring_ = FuseUring::start(std::move(o));
  uring_started_ = true;
}

std::string FuseChannel::transport() const {
  std::lock_guard lk(uring_mu_);
  return uring_ && uring_->live_entries() > 0 ? "io_uring" : "classic";
}

uint64_t FuseChannel::uring_requests() const {
  std::lock_guard lk(uring_mu_);
  return uring_ ? uring_->requests() : 0;
}

bool FuseChannel::uring_running() const {
  std::lock_guard lk(uring_mu_);
  return uring_ && uring_->running() > 0;
}

void FuseChannel::join_uring() {
  std::lock_guard lk(uring_mu_);
  if (uring_) uring_->join();
}

Status FuseChannel::notify_resend(int fd) {
  fuse_out_header h{};
  h.len = sizeof(h);
  h.error = 7;  // FUSE_NOTIFY_RESEND (Linux 6.9+)
  h.unique = 0;
  if (::write(fd, &h, sizeof(h)) != ssize_t(sizeof(h))) return sys_error("FUSE_NOTIFY_RESEND");
  return ok();
}

}  // namespace nydus::fuse
