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

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace nydus {

class ScratchPool {
 public:
  // What the pool keeps once its buffers are given back: enough for a
  // couple of fetches at once of amplify_io with their decoded chunks.
  static constexpr size_t kKeepBytes = 6u << 20;

  static ScratchPool& instance();

  struct Buffer {
    std::unique_ptr<uint8_t[]> data;
    size_t cap = 0;
  };
  // A kept buffer of at least n bytes (the smallest such), else a new one.
  Buffer take(size_t n);
  // Kept while the pool holds at most kKeepBytes (larger ones replace
  // smaller), else freed.
  void give(Buffer b);

  size_t kept_bytes() const;

 private:
  mutable std::mutex mu_;  // held for a scan of a few entries, never across I/O
  std::vector<Buffer> free_;
  size_t kept_ = 0;
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
