#include "common/scratch_pool.h"

#include <malloc.h>

#include <algorithm>
#include <system_error>

namespace nydus {

namespace {
// Allocation granule: a run of slightly growing sizes reuses one buffer.
constexpr size_t kGranule = 64u << 10;
}  // namespace

ScratchPool& ScratchPool::instance() {
  static ScratchPool* pool = new ScratchPool;  // never destroyed: leases may end during exit
  return *pool;
}

ScratchPool::~ScratchPool() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (releaser_.joinable()) releaser_.join();
}

void ScratchPool::release_when_idle() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    const auto due = last_use_ + idle_;
    const bool in_use = std::chrono::steady_clock::now() < due;
    if (free_.empty() && !in_use) {
      releaser_parked_ = true;
      cv_.wait(lk);  // idle with nothing to release: no timer runs
      releaser_parked_ = false;
      continue;
    }
    if (in_use) {
      // Nothing kept may only mean every buffer is leased right now: look
      // again when the pool has been idle, rather than sleep until the next
      // give() has to wake us.
      cv_.wait_until(lk, due);
      continue;
    }
    std::vector<Buffer> released;
    released.swap(free_);
    kept_ = 0;
    lk.unlock();
    released.clear();
    // Buffers below M_MMAP_THRESHOLD went back to malloc's free lists: hand
    // those pages to the kernel as well.
    malloc_trim(0);
    lk.lock();
  }
}

ScratchPool::Buffer ScratchPool::take(size_t n) {
  {
    std::lock_guard lk(mu_);
    last_use_ = std::chrono::steady_clock::now();
    auto it = std::lower_bound(free_.begin(), free_.end(), n, [](const Buffer& x, size_t want) { return x.cap < want; });
    if (it != free_.end()) {
      Buffer b = std::move(*it);
      free_.erase(it);
      kept_ -= b.cap;
      return b;
    }
  }
  Buffer b;
  b.cap = std::max(kGranule, (n + kGranule - 1) / kGranule * kGranule);
  b.data.reset(new (std::align_val_t(kAlign)) uint8_t[b.cap]);
  return b;
}

void ScratchPool::give(Buffer b) {
  if (!b.data || b.cap > kKeepBytes) return;
  std::vector<Buffer> dropped;  // freed after the lock
  std::lock_guard lk(mu_);
  last_use_ = std::chrono::steady_clock::now();
  // Room by dropping smaller kept buffers, smallest first, if they make
  // enough: a bigger buffer serves every smaller request too.
  size_t after = kept_, drop = 0;  // kept bytes once free_[0, drop) are gone
  while (after + b.cap > kKeepBytes && drop < free_.size() && free_[drop].cap < b.cap) after -= free_[drop++].cap;
  if (after + b.cap > kKeepBytes) return;  // b goes (after the lock: b is destroyed last)
  for (size_t i = 0; i < drop; i++) dropped.push_back(std::move(free_[i]));
  free_.erase(free_.begin(), free_.begin() + int64_t(drop));
  kept_ = after;
  auto at = std::lower_bound(free_.begin(), free_.end(), b.cap, [](const Buffer& x, size_t c) { return x.cap < c; });
  kept_ += b.cap;
  free_.insert(at, std::move(b));
  if (idle_.count() > 0) {
    if (!releaser_.joinable()) {
      try {
        releaser_ = std::thread([this] { release_when_idle(); });
      } catch (const std::system_error&) {
        // No thread to spare: the buffers stay kept, within kKeepBytes.
      }
    }
    // Wake the releaser only when it sleeps with nothing kept: otherwise its
    // timed wait finds last_use_ moved on by itself. A wake-up per give()
    // was a futex wake and a cross-CPU switch on every FUSE reply.
    if (releaser_parked_) {
      releaser_parked_ = false;  // one wake-up, however many gives come before it runs
      wakeups_++;
      cv_.notify_all();
    }
  }
}

size_t ScratchPool::releaser_wakeups() const {
  std::lock_guard lk(mu_);
  return wakeups_;
}

size_t ScratchPool::kept_bytes() const {
  std::lock_guard lk(mu_);
  return kept_;
}

Scratch::~Scratch() {
  if (buf_.data) ScratchPool::instance().give(std::move(buf_));
}

std::span<uint8_t> Scratch::get(size_t n) {
  if (n > buf_.cap) {
    ScratchPool& pool = ScratchPool::instance();
    if (buf_.data) pool.give(std::move(buf_));
    buf_ = pool.take(n);
  }
  return {buf_.data.get(), n};
}

}  // namespace nydus
