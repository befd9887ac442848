// Persistent "chunk is on disk" bitmap of one blob cache: `<id>.chunk_map`,
// a 4096-byte header (magic, version, chunk count) then one bit per ci index,
// mmap'd MAP_SHARED so a set bit survives a process crash as soon as it is
// set. A file that does not match (size, magic, version, count, stray bits)
// is discarded and recreated empty: a bit must never be trusted blindly.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "common/result.h"

namespace nydus::storage {

class ChunkMap {
 public:
  static constexpr uint32_t kMagic = 0x50414D43;  // "CMAP"
  static constexpr uint32_t kVersion = 1;
  static constexpr uint64_t kHeaderSize = 4096;

  // Open or (re)create the map at `path`. `reset` discards any existing file
  // (the data file it described was recreated).
  static Result<std::unique_ptr<ChunkMap>> open(const std::filesystem::path& path, uint32_t chunk_count,
                                                bool reset);
  ~ChunkMap();
  ChunkMap(const ChunkMap&) = delete;
  ChunkMap& operator=(const ChunkMap&) = delete;

  uint32_t chunk_count() const { return count_; }
  bool is_ready(uint32_t i) const;
  // Atomically set bit i; returns true if this call set it.
  bool set_ready(uint32_t i);
  uint64_t ready_count() const { return ready_.load(std::memory_order_relaxed); }
  // Whether open() found a valid existing file (vs. starting empty).
  bool reused() const { return reused_; }
  // msync the mapping.
  Status flush();

  static uint64_t file_size_for(uint32_t chunk_count);

 private:
  ChunkMap() = default;
  uint64_t* words() const { return reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(map_) + kHeaderSize); }

  int fd_ = -1;
  void* map_ = nullptr;
  uint64_t map_size_ = 0;
  uint32_t count_ = 0;
  bool reused_ = false;
  std::atomic<uint64_t> ready_{0};
};

}  // namespace nydus::storage
