// Decoded files by nid, for reads. nydusd answers FUSE OPEN with ENOSYS, so
// the kernel stops sending OPEN, FLUSH and RELEASE and every read names only
// its inode: three requests fewer per small file (a `tar` of 50,000 small
// files took 10 s with them, 1 s without, page cache hot). There is no
// handle to hang per-file state on, and no release to drop it at, so files
// that will be read again (a read that stopped before EOF) are kept here,
// a bounded number per shard, the oldest dropped first. A dropped file is
// decoded again from the mmap'd bootstrap on its next read.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace nydus::fuse {

template <class T>
class OpenFileCache {
 public:
  static constexpr size_t kShards = 16;
  explicit OpenFileCache(size_t capacity = 4096) : per_shard_(capacity / kShards ? capacity / kShards : 1) {}

  std::shared_ptr<T> get(uint64_t nid) const {
    const Shard& s = shard(nid);
    std::lock_guard lk(s.mu);
    auto it = s.map.find(nid);
    return it == s.map.end() ? nullptr : it->second;
  }
  // Keep `v` for `nid` unless another thread already did: returns the one kept.
  std::shared_ptr<T> put(uint64_t nid, std::shared_ptr<T> v) {
    Shard& s = shard(nid);
    std::lock_guard lk(s.mu);
    auto [it, inserted] = s.map.emplace(nid, std::move(v));
    if (!inserted) return it->second;
    s.order.push_back(nid);
    std::shared_ptr<T> kept = it->second;
    while (s.map.size() > per_shard_) {
      s.map.erase(s.order.front());
      s.order.pop_front();
    }
    return kept;
  }
  size_t size() const {
    size_t n = 0;
    for (const Shard& s : shards_) {
      std::lock_guard lk(s.mu);
      n += s.map.size();
    }
    return n;
  }

 private:
  struct Shard {
    mutable std::mutex mu;  // held for a map operation, never across I/O
    std::unordered_map<uint64_t, std::shared_ptr<T>> map;
    std::deque<uint64_t> order;  // insertion order, for eviction
  };
  Shard& shard(uint64_t nid) { return shards_[(nid * 0x9E3779B97F4A7C15ull) >> 60]; }
  const Shard& shard(uint64_t nid) const { return shards_[(nid * 0x9E3779B97F4A7C15ull) >> 60]; }

  size_t per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace nydus::fuse
