#include "common/scratch_pool.h"

#include <algorithm>

namespace nydus {

namespace {
// Allocation granule: a run of slightly growing sizes reuses one buffer.
constexpr size_t kGranule = 64u << 10;
}  // namespace

ScratchPool& ScratchPool::instance() {
  static ScratchPool* pool = new ScratchPool;  // never destroyed: leases may end during exit
  return *pool;
}

ScratchPool::Buffer ScratchPool::take(size_t n) {
  {
    std::lock_guard lk(mu_);
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
  b.data.reset(new uint8_t[b.cap]);
  return b;
}

void ScratchPool::give(Buffer b) {
  if (!b.data || b.cap > kKeepBytes) return;
  std::vector<Buffer> dropped;  // freed after the lock
  std::lock_guard lk(mu_);
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
