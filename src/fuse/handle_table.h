// Open-file handles (the `fh` the kernel hands back on every read) as keys
// into a sharded table, not pointers: a daemon that took over a live FUSE
// connection gets reads on handles another process made. A key we do not
// know is then recognised as such (and the file reopened from its inode)
// rather than dereferenced. Keys start at a random per-process base so two
// daemons' handles do not collide.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <unordered_map>

namespace nydus::fuse {

template <class T>
class HandleTable {
 public:
  HandleTable() : next_(std::random_device{}() | uint64_t(std::random_device{}()) << 32) {}

  uint64_t add(std::shared_ptr<T> v) {
    uint64_t fh;
    do fh = next_.fetch_add(1, std::memory_order_relaxed);
    while (fh == 0);
    put(fh, std::move(v));
    return fh;
  }
  // Store under a key chosen elsewhere (a handle adopted from another daemon).
  void put(uint64_t fh, std::shared_ptr<T> v) {
    Shard& s = shard(fh);
    std::lock_guard lk(s.mu);
    s.map[fh] = std::move(v);
  }
  std::shared_ptr<T> get(uint64_t fh) const {
    const Shard& s = shard(fh);
    std::lock_guard lk(s.mu);
    auto it = s.map.find(fh);
    return it == s.map.end() ? nullptr : it->second;
  }
  void remove(uint64_t fh) {
    Shard& s = shard(fh);
    std::lock_guard lk(s.mu);
    s.map.erase(fh);
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
    mutable std::mutex mu;
    std::unordered_map<uint64_t, std::shared_ptr<T>> map;
  };
  static constexpr size_t kShards = 64;
  Shard& shard(uint64_t fh) { return shards_[(fh * 0x9E3779B97F4A7C15ull) >> 58]; }
  const Shard& shard(uint64_t fh) const { return shards_[(fh * 0x9E3779B97F4A7C15ull) >> 58]; }

  std::atomic<uint64_t> next_;
  std::array<Shard, kShards> shards_;
};

}  // namespace nydus::fuse
