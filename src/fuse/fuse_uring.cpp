#define FUSE_USE_VERSION 312
#include "fuse/fuse_uring.h"

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace nydus::fuse {

namespace {

// The kernel's interface (include/uapi/linux/fuse.h, 7.42), defined here:
// Debian 12's headers predate it.
constexpr uint32_t kFuseInitExt = 1u << 30;        // FUSE_INIT_EXT: flags2 is valid
constexpr uint32_t kOverIoUringFlags2 = 1u << 9;   // FUSE_OVER_IO_URING = 1ULL << 41
constexpr uint32_t kFuseMaxPages = 1u << 22;       // FUSE_MAX_PAGES
constexpr uint32_t kCmdRegister = 1;               // FUSE_IO_URING_CMD_REGISTER
constexpr uint32_t kCmdCommitAndFetch = 2;         // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

struct UringEntInOut {  // struct fuse_uring_ent_in_out
  uint64_t flags;
  uint64_t commit_id;
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};
struct UringReqHeader {  // struct fuse_uring_req_header
  uint8_t in_out[128];   // fuse_in_header on fetch, fuse_out_header on commit
  uint8_t op_in[128];    // the opcode's fixed argument struct
  UringEntInOut ent;
};
static_assert(sizeof(UringReqHeader) == 288);
struct UringCmdReq {  // struct fuse_uring_cmd_req, in the SQE128's command area
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};

// fuse_init_in: flags at 12, flags2 at 16; fuse_init_out: flags at 12,
// max_write at 20, max_pages at 28, flags2 at 32.
template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

constexpr uint64_t kWakeTag = 1;
constexpr uint64_t kCmdTag = 2;

// A minimal io_uring (liburing-dev is not in Debian 12's base): one thread
// submits and reaps, so head/tail need only acquire/release ordering.
class Ring {
 public:
  ~Ring() {
    if (sq_ptr_ != MAP_FAILED) ::munmap(sq_ptr_, sq_len_);
    if (cq_ptr_ != MAP_FAILED && cq_ptr_ != sq_ptr_) ::munmap(cq_ptr_, cq_len_);
    if (sqes_ != MAP_FAILED) ::munmap(sqes_, sqes_len_);
    if (fd_ >= 0) ::close(fd_);
  }
  // 0 or -errno.
  int init(unsigned entries) {
    io_uring_params p{};
    // Task work (the kernel copying a request into our buffers) runs only
    // when this thread waits for completions: no interrupts in between.
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    fd_ = int(::syscall(__NR_io_uring_setup, entries, &p));
    if (fd_ < 0) {
      p = io_uring_params{};
      p.flags = IORING_SETUP_SQE128;
      fd_ = int(::syscall(__NR_io_uring_setup, entries, &p));
    }
    if (fd_ < 0) return -errno;
    sq_len_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_len_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
    const bool single = p.features & IORING_FEAT_SINGLE_MMAP;
    if (single) sq_len_ = cq_len_ = std::max(sq_len_, cq_len_);
    sq_ptr_ = ::mmap(nullptr, sq_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQ_RING);
    if (sq_ptr_ == MAP_FAILED) return -errno;
    cq_ptr_ = single ? sq_ptr_
                     : ::mmap(nullptr, cq_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                              IORING_OFF_CQ_RING);
    if (cq_ptr_ == MAP_FAILED) return -errno;
    sqes_len_ = p.sq_entries * 2 * sizeof(io_uring_sqe);  // SQE128: two slots each
    sqes_ = ::mmap(nullptr, sqes_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES);
    if (sqes_ == MAP_FAILED) return -errno;
    auto* sq = static_cast<uint8_t*>(sq_ptr_);
    auto* cq = static_cast<uint8_t*>(cq_ptr_);
    sq_tail_ = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
    sq_mask_ = *reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
    sq_array_ = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
    cq_head_ = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
    cq_tail_ = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
    cq_mask_ = *reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
    cqes_ = reinterpret_cast<io_uring_cqe*>(cq + p.cq_off.cqes);
    return 0;
  }
  // A zeroed 128-byte SQE, queued at the next submit.
  io_uring_sqe* sqe() {
    const unsigned tail = *sq_tail_ + pending_;
    const unsigned idx = tail & sq_mask_;
    auto* s = static_cast<io_uring_sqe*>(sqes_) + 2 * idx;
    std::memset(s, 0, 2 * sizeof(io_uring_sqe));
    sq_array_[idx] = idx;
    pending_++;
    return s;
  }
  // Submit what is queued and wait for `min` completions: 0 or -errno.
  int enter(unsigned min) {
    if (pending_) {
      __atomic_store_n(sq_tail_, *sq_tail_ + pending_, __ATOMIC_RELEASE);
      unsubmitted_ += pending_;
      pending_ = 0;
    }
    const int rc = int(::syscall(__NR_io_uring_enter, fd_, unsubmitted_, min, IORING_ENTER_GETEVENTS, nullptr, 0));
    if (rc < 0) return -errno;
    unsubmitted_ -= std::min<unsigned>(unsubmitted_, unsigned(rc));
    return 0;
  }
  bool reap(io_uring_cqe& out) {
    const unsigned head = *cq_head_;
    if (head == __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE)) return false;
    out = cqes_[head & cq_mask_];
    __atomic_store_n(cq_head_, head + 1, __ATOMIC_RELEASE);
    return true;
  }

 private:
  int fd_ = -1;
  void* sq_ptr_ = MAP_FAILED;
  void* cq_ptr_ = MAP_FAILED;
  void* sqes_ = MAP_FAILED;
  size_t sq_len_ = 0, cq_len_ = 0, sqes_len_ = 0;
  unsigned* sq_tail_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned* sq_array_ = nullptr;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned cq_mask_ = 0;
  io_uring_cqe* cqes_ = nullptr;
  unsigned pending_ = 0;      // SQEs filled, tail not yet moved
  unsigned unsubmitted_ = 0;  // past the tail, not yet taken by the kernel
};

// The ring request this thread is serving (see capture_reply).
struct Current {
  bool active = false;
  bool replied = false;
  uint64_t unique = 0;
  UringReqHeader* headers = nullptr;
  uint8_t* payload = nullptr;
  size_t capacity = 0;
};
thread_local Current t_current;

void put_error(UringReqHeader* h, uint64_t unique, int err) {
  fuse_out_header oh{};
  oh.len = sizeof(oh);
  oh.error = -err;
  oh.unique = unique;
  std::memcpy(h->in_out, &oh, sizeof(oh));
  h->ent.payload_sz = 0;
}

}  // namespace

Result<UringMode> parse_uring_mode(std::string_view s) {
  if (s == "auto" || s.empty()) return UringMode::kAuto;
  if (s == "on" || s == "true" || s == "1") return UringMode::kOn;
  if (s == "off" || s == "false" || s == "0") return UringMode::kOff;
  return errorf(Errc::kInvalidArgument, "FUSE io_uring mode \"{}\": expected auto, on or off", s);
}

std::string_view uring_mode_name(UringMode m) {
  switch (m) {
    case UringMode::kOn: return "on";
    case UringMode::kOff: return "off";
    default: return "auto";
  }
}

UringMode uring_mode_from_env() {
  const char* v = std::getenv("NYDUSD_FUSE_URING");
  if (!v) return UringMode::kAuto;
  auto m = parse_uring_mode(v);
  if (!m) {
    spdlog::warn("NYDUSD_FUSE_URING: {}; using auto", m.error().message);
    return UringMode::kAuto;
  }
  return *m;
}

bool init_offers_uring(const std::vector<uint8_t>& init) {
  if (init.size() < sizeof(fuse_in_header) + 20) return false;  // no flags2 (minor < 36)
  const uint8_t* in = init.data() + sizeof(fuse_in_header);
  return (load<uint32_t>(in + 12) & kFuseInitExt) && (load<uint32_t>(in + 16) & kOverIoUringFlags2);
}

size_t uring_payload_size(const uint8_t* out, size_t len) {
  size_t size = 8192;  // FUSE_MIN_READ_BUFFER
  if (len >= 24) size = std::max<size_t>(size, load<uint32_t>(out + 20));
  unsigned pages = 32;  // FUSE_DEFAULT_MAX_PAGES_PER_REQ
  if (len >= 30 && (load<uint32_t>(out + 12) & kFuseMaxPages)) pages = std::max<unsigned>(1, load<uint16_t>(out + 28));
  size = std::max<size_t>(size, size_t(pages) * 4096);
  // A successor may have negotiated differently (the ring keeps its first
  // size): never register less than the kernel's page limit (256 pages).
  return std::max<size_t>(size, 256 * 4096);
}

unsigned possible_cpus(std::string_view s) {
  unsigned count = 0;
  while (!s.empty()) {
    const auto comma = s.find(',');
    std::string_view part = s.substr(0, comma);
    while (!part.empty() && (part.back() == '\n' || part.back() == ' ')) part.remove_suffix(1);
    unsigned a = 0, b = 0;
    const auto dash = part.find('-');
    auto ra = std::from_chars(part.data(), part.data() + (dash == std::string_view::npos ? part.size() : dash), a);
    if (ra.ec == std::errc()) {
      b = a;
      if (dash != std::string_view::npos) std::from_chars(part.data() + dash + 1, part.data() + part.size(), b);
      if (b >= a && b - a < 65536) count += b - a + 1;
    }
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return std::max(1u, count);
}

std::unique_ptr<FuseUring> FuseUring::start(Options opts) {
  std::unique_ptr<FuseUring> u(new FuseUring());
  u->opts_ = std::move(opts);
  for (unsigned q = 0; q < u->opts_.queues; q++)
    for (unsigned t = 0; t < u->opts_.threads_per_queue; t++) {
      u->running_.fetch_add(1);
      u->threads_.emplace_back([p = u.get(), q] {
        p->run(q);
        p->running_.fetch_sub(1, std::memory_order_release);
      });
    }
  if (!u->opts_.poke_path.empty()) {
    // Detached, owning copies only: a stat may wait on a stopping daemon.
    std::thread([path = u->opts_.poke_path, queues = u->opts_.queues] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the REGISTERs are in
      for (unsigned q = 0; q < queues; q++) {
        std::thread([&path, q] {
          cpu_set_t set;
          CPU_ZERO(&set);
          CPU_SET(q, &set);
          if (::pthread_setaffinity_np(::pthread_self(), sizeof(set), &set) != 0) return;
          // STATFS: never cached, and it takes no directory lock a stranded
          // LOOKUP may hold (without parallel dirops a LOOKUP holds its directory).
          struct statfs st;
          const int rc = ::statfs(path.c_str(), &st);
          spdlog::debug("FUSE over io_uring: poked queue {} ({})", q, rc == 0 ? "ok" : std::strerror(errno));
        }).join();
      }
    }).detach();
  }
  return u;
}

FuseUring::~FuseUring() { join(); }

void FuseUring::join() {
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

bool FuseUring::capture_reply(const struct iovec* iov, int count, ssize_t* written) {
  Current& c = t_current;
  if (!c.active || count <= 0 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header oh;
  std::memcpy(&oh, iov[0].iov_base, sizeof(oh));
  if (oh.unique != c.unique) return false;  // a notification, or not this request's reply
  size_t total = 0;
  for (int i = 0; i < count; i++) total += iov[i].iov_len;
  const size_t body = total - sizeof(oh);
  if (body > c.capacity) {
    put_error(c.headers, c.unique, EIO);  // cannot happen with max_write/max_read in force
  } else {
    size_t at = 0;
    for (int i = 0; i < count; i++) {
      const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
      size_t n = iov[i].iov_len;
      if (i == 0) p += sizeof(oh), n -= sizeof(oh);
      if (n && p != c.payload + at) std::memmove(c.payload + at, p, n);  // in place already: reply_buffer()
      at += n;
    }
    std::memcpy(c.headers->in_out, &oh, sizeof(oh));
    c.headers->ent.payload_sz = uint32_t(body);
  }
  c.replied = true;
  *written = ssize_t(total);
  return true;
}

std::span<uint8_t> FuseUring::reply_buffer() {
  const Current& c = t_current;
  if (!c.active) return {};
  return {c.payload, c.capacity};
}

void FuseUring::run(unsigned qid) {
  // The kernel queues a request on the ring of the CPU its sender runs on:
  // a thread on that CPU takes it when the sender sleeps, with no wake-up
  // across CPUs either way (unpinned, the stat walk of bench/rootfs.sh took
  // 1.3x as long). A CPU outside our cpuset leaves the thread unpinned.
  if (qid < CPU_SETSIZE) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(qid, &set);
    if (int rc = ::pthread_setaffinity_np(::pthread_self(), sizeof(set), &set); rc != 0)
      spdlog::debug("FUSE over io_uring: queue {} not pinned to its CPU: {}", qid, std::strerror(rc));
  }
  auto ring_owner = std::make_unique<Ring>();
  Ring& ring = *ring_owner;
  if (int rc = ring.init(4); rc < 0) {
    reg_error_ = -rc;
    if (!logged_error_.exchange(true))
      spdlog::warn("FUSE over io_uring: io_uring_setup failed ({}); /dev/fuse read/write keeps serving",
                   std::strerror(-rc));
    return;
  }
  // The entry's buffers: headers, and a payload the kernel's largest request fits in.
  // One mapping: a page of headers, then the payload.
  const size_t map_len = 4096 + opts_.payload_size;
  void* map = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED) return;
  auto* headers = static_cast<UringReqHeader*>(map);
  auto* payload = static_cast<uint8_t*>(map) + 4096;
  struct iovec iov[2] = {{headers, sizeof(UringReqHeader)}, {payload, opts_.payload_size}};
  std::vector<uint8_t> buf;
  buf.reserve(sizeof(fuse_in_header) + 128 + 4096);

  auto queue_cmd = [&](uint32_t op, uint64_t commit_id) {
    io_uring_sqe* s = ring.sqe();
    s->opcode = IORING_OP_URING_CMD;
    s->fd = opts_.fuse_fd;
    s->cmd_op = op;
    s->addr = reinterpret_cast<uint64_t>(iov);
    s->len = 2;
    s->user_data = kCmdTag;
    UringCmdReq req{};
    req.commit_id = commit_id;
    req.qid = uint16_t(qid);
    std::memcpy(s->cmd, &req, sizeof(req));
  };
  {
    io_uring_sqe* s = ring.sqe();
    s->opcode = IORING_OP_POLL_ADD;
    s->fd = opts_.wake_fd;
    s->poll32_events = POLLIN;
    s->user_data = kWakeTag;
  }
  queue_cmd(kCmdRegister, 0);
  live_.fetch_add(1, std::memory_order_relaxed);
  bool registered = true;  // our command is with the kernel
  bool stopping = false;
  int drain_rounds = 0;

  // Serve one request the kernel put in our entry; the reply goes back in it.
  auto serve = [&]() -> uint64_t {
    fuse_in_header ih;
    std::memcpy(&ih, headers->in_out, sizeof(ih));
    const UringEntInOut ent = headers->ent;
    const size_t psz = ent.payload_sz;
    const bool sane = ih.len >= sizeof(ih) + psz && psz <= opts_.payload_size && ih.len - sizeof(ih) - psz <= 128;
    if (!sane) {
      put_error(headers, ih.unique, EIO);  // a request we cannot reassemble: answer it, never guess
      return ent.commit_id;
    }
    const size_t opsz = ih.len - sizeof(ih) - psz;
    buf.resize(ih.len);
    std::memcpy(buf.data(), &ih, sizeof(ih));
    std::memcpy(buf.data() + sizeof(ih), headers->op_in, opsz);
    if (psz) std::memcpy(buf.data() + sizeof(ih) + opsz, payload, psz);
    if (opts_.stats) opts_.stats->on_request(ih.opcode, ih.unique, ih.nodeid);
    t_current = Current{true, false, ih.unique, headers, payload, opts_.payload_size};
    fuse_buf fb{};
    fb.size = buf.size();
    fb.mem = buf.data();
    fuse_session_process_buf(opts_.se, &fb);
    const bool replied = t_current.replied;
    t_current = Current{};
    if (!replied) put_error(headers, ih.unique, EIO);  // libfuse answered nothing (it should have)
    requests_.fetch_add(1, std::memory_order_relaxed);
    return ent.commit_id;
  };

  for (;;) {
    // Stopping: run the kernel's pending task work without waiting, answer
    // what it delivered, and go once a round brings nothing.
    const int rc = ring.enter(stopping ? 0 : 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      spdlog::warn("FUSE over io_uring: io_uring_enter: {}", std::strerror(-rc));
      break;
    }
    bool served = false;
    io_uring_cqe cqe;
    while (ring.reap(cqe)) {
      if (cqe.user_data == kWakeTag) {
        stopping = true;
        continue;
      }
      if (cqe.res == -EAGAIN && !stopping) {  // the connection's INIT is not processed yet
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        queue_cmd(kCmdRegister, 0);
        continue;
      }
      if (cqe.res < 0) {
        registered = false;
        live_.fetch_sub(1, std::memory_order_relaxed);
        if (cqe.res != -ENOTCONN && cqe.res != -ECONNABORTED && cqe.res != -ECANCELED) {
          reg_error_ = -cqe.res;
          if (!logged_error_.exchange(true))
            spdlog::warn("FUSE over io_uring: queue {}: {}; /dev/fuse read/write keeps serving", qid,
                         std::strerror(-cqe.res));
        }
        continue;
      }
      queue_cmd(kCmdCommitAndFetch, serve());
      served = true;
    }
    if (!registered) break;
    if (stopping && !served && ++drain_rounds > 1) break;
  }
  if (registered) ring.enter(0);  // submit the last commit, if one is queued
  // Closing the ring withdraws our waiting entry. The kernel may still hold
  // the buffers' addresses (an entry that got a request just before the
  // close): they stay mapped, their pages given back, so a late copy lands
  // in zero pages of ours and not in memory reused for something else.
  ring_owner.reset();
  ::madvise(map, map_len, MADV_DONTNEED);
}

}  // namespace nydus::fuse
