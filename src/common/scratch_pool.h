// Buffers for bytes in flight (fetched, decoded, read for a reply), shared by
// every thread of the process and kept between uses up to a byte budget.
//
// Why shared: a buffer per thread, kept, sums to the largest fetch each of
// ~10 threads (FUSE workers, read-ahead, the page pusher) ever made, whether
// or not they run at once: 11.7 MB of a daemon's ~20 MB heap after a cold
// tar of a rootfs. Why kept at all: a fresh buffer per fetch was mapped,
// page-faulted and memset every time (M_MMAP_THRESHOLD), 11 % of the
// daemon's CPU in a cold tar. Contents are never zeroed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace nydus {

class ScratchPool {
 public:
  // What the pool keeps once its buffers are given back: enough for a
  // couple of fetches at once of amplify_io with their decoded chunks.
  static constexpr size_t kKeepBytes = 6u << 20;
  // Kept buffers are freed once no lease began or ended for this long: a
  // daemon between bursts (the snapshotter runs one per image, most of
  // them idle once their container started) holds none.
  static constexpr std::chrono::milliseconds kIdleRelease{2000};

  explicit ScratchPool(std::chrono::milliseconds idle_release = kIdleRelease) : idle_(idle_release) {}
  ~ScratchPool();
  ScratchPool(const ScratchPool&) = delete;
  ScratchPool& operator=(const ScratchPool&) = delete;

  static ScratchPool& instance();

  // Page-aligned, so that a buffer can take an O_DIRECT read.
  static constexpr size_t kAlign = 4096;
  struct AlignedDelete {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(kAlign)); }
  };
  struct Buffer {
    std::unique_ptr<uint8_t[], AlignedDelete> data;
    size_t cap = 0;
  };
  // A kept buffer of at least n bytes (the smallest such), else a new one.
  Buffer take(size_t n);
  // Kept while the pool holds at most kKeepBytes (larger ones replace
  // smaller), else freed.
  void give(Buffer b);

  size_t kept_bytes() const;
  // Times give() woke the releaser: once per idle period, not per lease
  // (a wake-up is a futex call and a switch on the FUSE reply path).
  size_t releaser_wakeups() const;

 private:
  // Sleeps while nothing is kept; frees what is kept after idle_ without use.
  void release_when_idle();

  const std::chrono::milliseconds idle_;
  mutable std::mutex mu_;  // held for a scan of a few entries, never across I/O
  std::condition_variable cv_;
  std::vector<Buffer> free_;
  size_t kept_ = 0;
  std::chrono::steady_clock::time_point last_use_{};
  std::thread releaser_;  // started when a buffer is first kept
  bool stop_ = false;
  bool releaser_parked_ = false;  // asleep with nothing kept: only then does give() wake it
  size_t wakeups_ = 0;
};

// One thread's lease of a pool buffer for a scope: get() grows it as needed,
// the destructor gives it back.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch();
  // n bytes, contents undefined; a span from an earlier get() is invalid
  // after a larger one.
  std::span<uint8_t> get(size_t n);

 private:
  ScratchPool::Buffer buf_;
};

}  // namespace nydus
