// How a FuseSession talks to its /dev/fuse fd (libfuse custom I/O), built
// for handing the connection to another daemon (live upgrade, failover):
//
// - Stopping never depends on a request arriving: the fd is non-blocking and
//   every worker waits in epoll on it and on a wake eventfd, so stop() ends
//   the loop at once while each worker finishes the request it holds (none
//   is taken and dropped).
// - The kernel sends FUSE_INIT once per connection. The first daemon's INIT
//   bytes are recorded; a daemon that adopts the fd replays them to libfuse
//   (which answers nothing else before INIT) and swallows libfuse's reply,
//   so both sides agree on what the kernel negotiated.
// - After a crash, requests the dead daemon had read but not answered sit in
//   the kernel's processing queue: FUSE_NOTIFY_RESEND (Linux >= 6.9) puts
//   them back in the pending queue for the new daemon.
// - FUSE over io_uring (fuse_uring.h): when the kernel's INIT offers it and
//   the mode allows, the INIT reply accepts it and ring threads start once
//   the reply is written (or, adopting, once the replayed INIT is answered);
//   their replies are captured in io_writev. The classic readers go on for
//   what the kernel still sends on /dev/fuse.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"
#include "fuse/fuse_uring.h"
#include "runtime/fs_io_stats.h"

struct fuse_session;

namespace nydus::fuse {

class FuseChannel {
 public:
  // `fd` is the session's /dev/fuse fd (not owned: libfuse closes it).
  // `replay_init`: the INIT message to hand libfuse first (adoption), or empty.
  // `uring`: whether to accept FUSE over io_uring; `uring_threads`: ring
  // threads (one entry each) in all, spread over the queues.
  // `failover`: the daemon may be killed and replaced (it has a supervisor):
  // auto then stays on /dev/fuse, since the kernel does not resend requests
  // a dead daemon held in ring entries (fs/fuse/dev.c fuse_resend walks only
  // the /dev/fuse processing queues; Linux 6.18).
  static Result<std::unique_ptr<FuseChannel>> create(int fd, std::vector<uint8_t> replay_init = {},
                                                     UringMode uring = UringMode::kOff, unsigned uring_threads = 1,
                                                     bool failover = false);
  ~FuseChannel();

  // Install as the session's I/O (libfuse's fuse_session_custom_io).
  Status install(struct fuse_session* se);
  // Wake every worker blocked waiting for a request (the loop then ends,
  // once fuse_session_exit() was called).
  void wake();
  // The INIT message the kernel (or the replay) opened this connection with.
  std::vector<uint8_t> init_message() const;
  int fd() const { return fd_; }
  // Requests the kernel sent again after a FUSE_NOTIFY_RESEND.
  uint64_t resent_requests() const { return resent_.load(std::memory_order_relaxed); }
  // Upstream's FsIoStats and the requests in progress, counted as requests
  // are read and replies written.
  std::shared_ptr<runtime::FsIoStats> io_stats() const { return stats_; }

  // Ask the kernel to queue again every request read but not answered.
  static Status notify_resend(int fd);

  // Adopting: the mountpoint, to statfs from each CPU once our ring
  // entries are registered. Requests queued on a ring queue while it had no
  // entry (between a predecessor's death and our registration) are fetched
  // only by a commit on that queue, so each queue gets one request to commit.
  void set_poke_path(std::string path) { poke_path_ = std::move(path); }
  // "io_uring" once ring entries are registered, else "classic".
  std::string transport() const;
  // Requests served through the io_uring entries.
  uint64_t uring_requests() const;
  // Wait for the ring threads to end (after wake()).
  void join_uring();
  // Some ring thread has not ended yet.
  bool uring_running() const;

 private:
  FuseChannel() = default;
  static ssize_t io_read(int fd, void* buf, size_t len, void* self);
  static ssize_t io_writev(int fd, struct iovec* iov, int count, void* self);
  // Block until the FUSE fd may have a request (true) or the channel was
  // woken to stop or waiting failed (false, errno set).
  bool wait_readable();
  // The INIT reply: accept io_uring if offered and wanted, write it, start the rings.
  ssize_t answer_init(struct iovec* iov, int count);
  // Whether to run on rings; logs the one line that says why not.
  bool want_uring(bool offered);
  void start_uring(const uint8_t* init_out, size_t len);

  int fd_ = -1;
  int wake_fd_ = -1;
  mutable std::mutex init_mu_;
  std::vector<uint8_t> init_;     // recorded (or replayed) INIT request
  std::atomic<bool> replay_pending_{false};
  std::atomic<bool> stopping_{false};  // wake() was called
  std::atomic<bool> spinning_{false};  // a worker polls for the next request before it sleeps
  std::atomic<uint64_t> resent_{0};
  uint64_t replay_unique_ = 0;    // libfuse's reply to the replayed INIT is dropped
  std::atomic<uint64_t> init_unique_{0};  // the unique of the INIT being answered (0: none yet)
  struct fuse_session* se_ = nullptr;
  UringMode uring_mode_ = UringMode::kOff;
  unsigned uring_threads_ = 1;
  mutable std::mutex uring_mu_;
  std::unique_ptr<FuseUring> uring_;
  std::atomic<bool> uring_started_{false};
  bool failover_ = false;
  bool predecessor_uring_ = false;  // the adopted connection already runs on rings
  std::string poke_path_;
  std::shared_ptr<runtime::FsIoStats> stats_ = std::make_shared<runtime::FsIoStats>();
};

}  // namespace nydus::fuse
