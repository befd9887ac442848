// Serves fanotify pre-content events for blob cache data files: a reader of
// a marked file (the kernel's EROFS file-backed mount reading device= files)
// blocks until we answer. A range already in the cache is allowed at once;
// otherwise a worker fetches it through the BlobCache and we allow only after
// the bytes are on disk, or deny with EIO when fetching fails. A hole is
// never allowed unfilled.
//
// Measured on Linux 6.18 (see src/fanotify/README.md):
//  - a file opened while its filesystem has no pre-content marks gets
//    FMODE_NONOTIFY_PERM: reads/writes through it raise no events. BlobCache
//    opens its data fd before we mark, so its fills raise nothing;
//  - an fd opened after marking raises FAN_PRE_ACCESS for pread AND pwrite,
//    even from the listener's own process (no self-exclusion);
//  - the event fd itself raises nothing (FMODE_NONOTIFY).
// So if some BlobCache fd was opened after a pre-content mark appeared on the
// same filesystem, its writes come back to us: events from our own pid are
// allowed at once (our process only reads ranges it has made ready first, and
// writes are the fills themselves), which is what keeps that from deadlocking.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "common/result.h"
#include "common/work_queue.h"
#include "fanotify/event_parser.h"
#include "fanotify/inflight_journal.h"
#include "storage/blob_cache.h"

namespace nydus::fanotify {

struct ListenerStats {
  uint64_t events = 0;
  uint64_t allowed_ready = 0;  // range already cached: answered at once
  uint64_t filled = 0;         // fetched, then allowed
  uint64_t denied = 0;         // fetch failed, malformed or unknown file
  uint64_t self_events = 0;    // raised by our own I/O, allowed
  uint64_t malformed = 0;
  uint64_t overflows = 0;
  uint64_t bad_batches = 0;
  uint64_t unmarked = 0;       // blobs whose mark was dropped once fully cached
};

class Listener {
 public:
  // fanotify_init(FAN_CLASS_PRE_CONTENT): fails with kUnsupported when the
  // kernel has no pre-content events.
  static Result<std::unique_ptr<Listener>> create(unsigned workers);
  ~Listener();

  // Track a blob cache and mark its data file. Mark before anything (the
  // EROFS mount) opens the file for reading.
  Status add_blob(std::shared_ptr<storage::BlobCache> cache);
  void start();
  // Record every pre-content event in `j` while it is pending (for a takeover
  // after our death); call before start(). Not owned.
  void set_journal(InflightJournal* j) { journal_ = j; }
  // The fanotify group (for handing it to a supervisor); -1 in tests.
  int group_fd() const { return fan_fd_; }
  // Answer a pending event of the group by its fd number in a process that
  // is gone (a takeover): nothing is closed. False when the kernel knows no
  // pending event by that number (ENOENT).
  bool answer_orphan(int fd_number, bool allow, int deny_errno = EIO);
  // Stop reading events, let the workers answer every queued event, then
  // deny whatever is still queued in the kernel. Idempotent.
  void stop();
  ListenerStats stats() const;

  // Handle one buffer as read(2) returned it (exposed for tests).
  void handle_buffer(std::span<const uint8_t> buf);
  // For tests: a listener around an existing fd (not owned: -1 means none).
  explicit Listener(int fan_fd, bool owns_fd, unsigned workers);

 private:
  struct Job {
    int fd;
    size_t blob;
    FillRange range;
  };

  void read_loop();
  void worker_loop();
  void handle_event(Event& ev);
  // Write the response and close the event fd (exactly once per event fd).
  // A denial hands `deny_errno` to the reader (on kernels with FAN_DENY_ERRNO).
  void answer(int fd, bool allow, int deny_errno = EIO);
  // The response to the group for event fd number `fd_number` (FAN_DENY_ERRNO
  // where the kernel has it); false with errno set when the write failed.
  bool write_response(int fd_number, bool allow, int deny_errno);
  ssize_t find_blob(int fd);
  // Drop the mark of a blob once every chunk of it is cached.
  void unmark_if_complete(size_t blob);

  int fan_fd_;
  bool owns_fd_;
  InflightJournal* journal_ = nullptr;
  unsigned nworkers_;
  std::atomic<bool> deny_errno_ok_{true};
  std::vector<std::shared_ptr<storage::BlobCache>> blobs_;
  std::map<std::pair<dev_t, ino_t>, size_t> by_inode_;
  std::mutex mark_mu_;
  std::vector<bool> marked_;  // by blob, guarded by mark_mu_ once started

  std::thread reader_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_reading_{false};
  std::mutex mu_;  // guards started_/stopped_
  WorkQueue<Job> queue_;
  bool started_ = false, stopped_ = false;

  std::atomic<uint64_t> events_{0}, allowed_ready_{0}, filled_{0}, denied_{0}, self_events_{0}, malformed_{0},
      overflows_{0}, bad_batches_{0}, unmarked_{0};
};

}  // namespace nydus::fanotify
