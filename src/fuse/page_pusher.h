// Puts whole files into the kernel's page cache ahead of a reader
// (FUSE_NOTIFY_STORE), for DirReadAhead. Background threads per FUSE
// connection (the session uses one) and a bounded queue: when the reader
// outruns them, pushes are dropped and the reader's own READs fetch the
// bytes, as without it. A push for an inode the kernel has forgotten fails
// harmlessly (ENOENT).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>

#include "common/work_queue.h"

namespace nydus::fuse {

class RafsFs;

class PagePusher {
 public:
  // `store(kernel_ino, offset, bytes)`: hand the kernel a piece of a file;
  // returns 0 or -errno. Pieces are kPiece bytes (the last one shorter), so
  // every page but a file's last is whole and the kernel marks it uptodate.
  using Store = std::function<int(uint64_t, uint64_t, std::span<const uint8_t>)>;
  static constexpr size_t kPiece = 128 << 10;
  static constexpr size_t kMaxQueued = 1024;

  explicit PagePusher(Store store, unsigned threads = 1);
  ~PagePusher();
  PagePusher(const PagePusher&) = delete;
  PagePusher& operator=(const PagePusher&) = delete;

  // Queue file `ino` of `fs`, known to the kernel as `kernel_ino`; false if
  // the queue is full or the pusher stopped.
  bool push(std::shared_ptr<RafsFs> fs, uint64_t ino, uint64_t kernel_ino);
  // Drop what is queued and stop calling `store` (before the session goes).
  // Waits for the thread up to `wait`; a thread still reading then (a
  // backend that does not answer) ends on its own, without storing.
  void stop(std::chrono::milliseconds wait = std::chrono::seconds(2));

  uint64_t pushed_files() const { return st_->files.load(std::memory_order_relaxed); }
  uint64_t pushed_bytes() const { return st_->bytes.load(std::memory_order_relaxed); }

 private:
  struct Job {
    std::shared_ptr<RafsFs> fs;
    uint64_t ino = 0;
    uint64_t kernel_ino = 0;
  };
  // Shared with the thread, which may outlive the pusher (see stop()).
  struct State {
    Store store;
    WorkQueue<Job> queue;
    // Set by stop(); read under store_mu before a `store`, so no store
    // starts once stop() has taken store_mu.
    std::atomic<bool> stopping{false};
    std::shared_mutex store_mu;  // shared around `store`: stop() waits for those in progress
    std::mutex done_mu;
    std::condition_variable done_cv;
    unsigned running = 0;  // threads not yet ended (under done_mu)
    std::atomic<uint64_t> files{0}, bytes{0};
  };
  static void run(const std::shared_ptr<State>& st);
  // Read and store one file, piece by piece; false if any piece failed.
  static bool push_file(State& st, const Job& job, std::span<uint8_t> buf);

  std::shared_ptr<State> st_;
  bool started_ = false;
};

}  // namespace nydus::fuse
