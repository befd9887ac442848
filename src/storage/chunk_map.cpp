#include "storage/chunk_map.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cstring>
#include <vector>

#include "common/file_util.h"
#include "common/io.h"
#include "format/layout.h"

namespace nydus::storage {

namespace {

struct Header {
  uint32_t magic;
  uint32_t version;
  uint32_t chunk_count;
  uint32_t reserved;
};

// Check an existing map file; true when it can be trusted.
bool valid_existing(int fd, uint32_t chunk_count) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || uint64_t(st.st_size) != ChunkMap::file_size_for(chunk_count)) return false;
  Header h;
  if (!read_full_at(fd, 0, std::span(reinterpret_cast<uint8_t*>(&h), sizeof(h)), "reading chunk map header"))
    return false;
  return h.magic == ChunkMap::kMagic && h.version == ChunkMap::kVersion && h.chunk_count == chunk_count;
}

// Create an empty map, replacing whatever is at `path` whole, so a
// half-written header is never seen under the real name.
Status create_empty(const std::filesystem::path& path, uint32_t chunk_count) {
  std::vector<uint8_t> bytes(ChunkMap::file_size_for(chunk_count), 0);  // <= 2 MiB (2^24 chunks)
  const Header h{ChunkMap::kMagic, ChunkMap::kVersion, chunk_count, 0};
  std::memcpy(bytes.data(), &h, sizeof(h));
  return write_file_atomic(path, bytes);
}

}  // namespace

uint64_t ChunkMap::file_size_for(uint32_t chunk_count) {
  // Whole 64-bit words so every bit can be set with one atomic fetch_or.
  return kHeaderSize + (uint64_t(chunk_count) + 63) / 64 * 8;
}

Result<std::unique_ptr<ChunkMap>> ChunkMap::open(const std::filesystem::path& path, uint32_t chunk_count,
                                                 bool reset) {
  std::unique_ptr<ChunkMap> m(new ChunkMap());
  m->count_ = chunk_count;
  m->map_size_ = file_size_for(chunk_count);
  if (!reset) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0 && valid_existing(fd, chunk_count)) {
      m->fd_ = fd;
      m->reused_ = true;
    } else if (fd >= 0) {
      ::close(fd);
    } else if (errno != ENOENT) {
      return sys_error(fmt::format("opening {}", path.string()));
    }
  }
  if (m->fd_ < 0) {
    NYDUS_TRY(create_empty(path, chunk_count));
    m->fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (m->fd_ < 0) return sys_error(fmt::format("opening {}", path.string()));
    if (!valid_existing(m->fd_, chunk_count)) return corrupt("chunk map {} changed under us", path.string());
  }
  void* p = ::mmap(nullptr, m->map_size_, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd_, 0);
  if (p == MAP_FAILED) return sys_error(fmt::format("mapping {}", path.string()));
  m->map_ = p;

  // Bits past chunk_count mean the file was not written by us: start over.
  const uint64_t nwords = (uint64_t(chunk_count) + 63) / 64;
  uint64_t* w = m->words();
  if (chunk_count % 64 != 0 && nwords > 0 && (w[nwords - 1] >> (chunk_count % 64)) != 0) {
    std::memset(w, 0, nwords * 8);
    m->reused_ = false;
  }
  uint64_t ready = 0;
  for (uint64_t i = 0; i < nwords; i++) ready += uint64_t(std::popcount(w[i]));
  m->ready_.store(ready, std::memory_order_relaxed);
  return m;
}

ChunkMap::~ChunkMap() {
  if (map_) ::munmap(map_, map_size_);
  if (fd_ >= 0) ::close(fd_);
}

bool ChunkMap::is_ready(uint32_t i) const {
  if (i >= count_) return false;
  std::atomic_ref<uint64_t> w(words()[i / 64]);
  return (w.load(std::memory_order_acquire) >> (i % 64)) & 1;
}

bool ChunkMap::set_ready(uint32_t i) {
  if (i >= count_) return false;
  std::atomic_ref<uint64_t> w(words()[i / 64]);
  const uint64_t bit = uint64_t(1) << (i % 64);
  const bool newly = (w.fetch_or(bit, std::memory_order_acq_rel) & bit) == 0;
  if (newly) ready_.fetch_add(1, std::memory_order_relaxed);
  return newly;
}

Status ChunkMap::flush() {
  if (map_ && ::msync(map_, map_size_, MS_SYNC) != 0) return sys_error("msync chunk map");
  return ok();
}

}  // namespace nydus::storage
