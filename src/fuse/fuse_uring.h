// FUSE over io_uring (Linux >= 6.14, the `fuse` module's enable_uring):
// requests and replies travel through ring entries the daemon registers,
// one fetch-and-commit per request instead of a read(2) and a writev(2).
//
// libfuse 3.14 knows nothing of it, so it still decodes requests and builds
// replies: a ring thread reassembles a request from its entry into one
// buffer, hands it to fuse_session_process_buf, and the channel's writev
// hook copies the reply (made on that same thread) back into the entry
// (capture_reply) instead of writing /dev/fuse. FORGET, INTERRUPT,
// notifications and requests resent after a crash stay on /dev/fuse, so the
// classic readers keep running beside the rings.
//
// Layout (fs/fuse/dev_uring.c): one queue per possible CPU (a request goes to
// the queue of the CPU it was made on, and the kernel uses the rings only
// once every queue has an entry). Each ring thread owns one io_uring with
// one entry on one queue, so a thread blocks in exactly one syscall per
// request (COMMIT_AND_FETCH + wait) and a slow request holds up only its
// own thread.
//
// Handing over (live upgrade, failover), as the kernel does it (Linux 6.18,
// fs/fuse/dev_uring.c, dev.c):
// - There is no way to unregister an entry. A daemon's entries leave when its
//   io_uring closes: waiting ones are cancelled (fuse_uring_cancel), but the
//   ring stays "ready", so requests then queue on the ring queues until some
//   daemon registers entries. A new daemon can register on the adopted fd
//   (the ring keeps its first payload size; we always register >= 1 MiB).
// - Registering does not fetch what queued meanwhile; only a commit on that
//   queue does. An adopter therefore statfs's the mount from each CPU once
//   (poke_path), so each queue gets a request whose commit drains it.
// - Requests a dead daemon held in its entries (delivered, not committed) are
//   lost: FUSE_NOTIFY_RESEND walks only the /dev/fuse processing queues, and
//   a commit must come from the memory the entry was registered with. The
//   readers wait until killed or the connection is aborted. Hence `auto`
//   stays on /dev/fuse when a supervisor may replace the daemon.
// - Leaving alive has a window too: after a leaving daemon's last check, a
//   request may be given to its re-armed entry just before the ring closes;
//   the kernel then ends it with an error (seen once in 5 upgrades under 8
//   readers: a short read). Idle handovers are safe (fuse_uring.sh tests them).
// Making handover exact needs the entries' buffers in memory that outlives
// the daemon (a memfd the supervisor holds, mapped at the same address by the
// successor, which then commits what its predecessor held), or a kernel that
// resends ring requests.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"
#include "runtime/fs_io_stats.h"

struct fuse_session;

namespace nydus::fuse {

// The switch: auto (use it when the kernel offers it), on (the same, but a
// kernel without it is worth a warning), off (classic /dev/fuse only).
enum class UringMode { kAuto, kOn, kOff };
Result<UringMode> parse_uring_mode(std::string_view s);
std::string_view uring_mode_name(UringMode m);
// NYDUSD_FUSE_URING (auto|on|off; nydusd --fuse-uring sets it); auto when unset.
UringMode uring_mode_from_env();

// The kernel's INIT request offers FUSE_OVER_IO_URING (FUSE_INIT_EXT + flags2
// bit 9). `init` is the whole request (fuse_in_header + fuse_init_in).
bool init_offers_uring(const std::vector<uint8_t>& init);
// The payload buffer a ring entry needs for this INIT reply body
// (fuse_init_out): the kernel's max(8 KiB, max_write, max_pages pages).
size_t uring_payload_size(const uint8_t* init_out, size_t len);
// Number of possible CPUs (the kernel's queue count), from `possible`
// (the text of /sys/devices/system/cpu/possible, e.g. "0-1" or "0,2-5").
unsigned possible_cpus(std::string_view possible);

class FuseUring {
 public:
  struct Options {
    int fuse_fd = -1;
    int wake_fd = -1;            // readable once the daemon stops
    struct fuse_session* se = nullptr;
    size_t payload_size = 0;
    unsigned queues = 1;
    unsigned threads_per_queue = 1;
    std::shared_ptr<runtime::FsIoStats> stats;
    // Non-empty: once registered, statfs it from each CPU (a request on each
    // queue, whose commit fetches requests stranded there).
    std::string poke_path;
  };
  // Start the ring threads; each registers its entry on its own. Failures of
  // a registration are logged and leave the classic path serving.
  static std::unique_ptr<FuseUring> start(Options opts);
  ~FuseUring();
  // Wait for the threads (after the wake fd became readable).
  void join();

  // Requests served through the rings so far.
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  // Entries registered without error (a registration only completes when
  // its first request arrives, so "registered" = submitted, not failed).
  unsigned live_entries() const { return live_.load(std::memory_order_relaxed); }
  // Ring threads not yet ended.
  unsigned running() const { return running_.load(std::memory_order_acquire); }
  // The last registration error (0: none).
  int register_error() const { return reg_error_.load(std::memory_order_relaxed); }

  // Called from the channel's writev: if this thread is serving a ring
  // request whose unique the reply carries, copy the reply into the ring
  // entry and return true (with *written = the reply's size).
  static bool capture_reply(const struct iovec* iov, int count, ssize_t* written);
  // The reply payload of the ring request this thread is serving (empty on
  // other threads): a READ can fill it in place and reply from it.
  static std::span<uint8_t> reply_buffer();

 private:
  FuseUring() = default;
  void run(unsigned qid);

  Options opts_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> requests_{0};
  std::atomic<unsigned> live_{0};
  std::atomic<unsigned> running_{0};
  std::atomic<int> reg_error_{0};
  std::atomic<bool> logged_error_{false};
};

}  // namespace nydus::fuse
