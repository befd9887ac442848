// The blob cache of one data blob: its uncompressed layout kept in a sparse
// file `<work_dir>/<id>.blob.data` (each chunk at its uncompressed offset,
// the layout `nydus-image create --blob-cache-dir` writes and fscache mode
// hands to the kernel) plus a persistent bitmap `<id>.chunk_map` of chunks
// known to be on disk, so a restarted daemon reuses them. A chunk's bit is set
// only after its bytes were written (and synced per the policy), so a crash
// never leaves a ready bit over wrong bytes.
//
// Reads of missing chunks fetch them from the backend: adjacent missing chunks
// merge into one backend request (up to `amplify_io` bytes), and concurrent
// readers of the same chunk wait for a single fetch. With digest validation a
// chunk whose digest does not match is an error (EIO), never served.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"
#include "storage/backend.h"

namespace nydus::storage {

struct CacheConfig {
  std::filesystem::path work_dir;
  bool digest_validate = false;
  uint64_t amplify_io = 1 << 20;  // max bytes merged into one backend request
  // On-demand reads also fetch the missing chunks stored right after the
  // ones asked for, up to amplify_io bytes, in the background (read-ahead).
  bool amplify_reads = true;
};

struct CacheMetrics {
  uint64_t chunks_total = 0;
  uint64_t chunks_ready = 0;
  uint64_t hits = 0;            // chunk reads served from the cache file
  uint64_t misses = 0;          // chunk reads that needed the backend
  uint64_t backend_requests = 0;
  uint64_t backend_bytes = 0;
  uint64_t digest_failures = 0;
  uint64_t prefetch_bytes = 0;
  // Upstream's BlobcacheMetrics counters (utils/src/metrics.rs):
  uint64_t read_requests = 0;      // "total": on-demand read requests
  uint64_t whole_hits = 0;         // ... with every chunk already cached
  uint64_t partial_hits = 0;       // ... with some chunks cached
  uint64_t prefetch_requests = 0;  // backend requests made for prefetch
  uint64_t prefetch_chunks = 0;    // chunks those requests carried ("unmerged chunks")
  uint64_t prefetch_millis = 0;    // summed wall time of prefetch fetches
  uint64_t prefetch_first_ms = 0;  // wall clock (ms since the epoch) of the first / last prefetch fetch, 0: none
  uint64_t prefetch_last_ms = 0;
};

class BlobCache {
 public:
  // `blob` comes from the bootstrap's blob table; `digests` (by ci index,
  // may be empty) from its chunk table, used when digest_validate is on.
  // Loads the blob meta (ci array) from `<id>.blob.meta` in the work dir or
  // from the backend (then caches it there).
  static Result<std::shared_ptr<BlobCache>> open(const format::BlobInfo& blob, std::shared_ptr<Backend> backend,
                                                 const CacheConfig& cfg, std::vector<format::Digest> digests = {});
  virtual ~BlobCache() = default;

  virtual const format::BlobInfo& info() const = 0;
  // Chunks by ci index, as the blob meta describes them (digest set only
  // when the cache validates digests).
  virtual uint32_t chunk_count() const = 0;
  virtual format::ChunkRecord chunk(uint32_t ci) const = 0;

  // Copy [offset, offset + out.size()) of the blob's uncompressed layout into
  // `out`, fetching any chunk not yet cached. The range must lie inside
  // uncompressed_size.
  virtual Status read(uint64_t offset, std::span<uint8_t> out) = 0;
  // Make every chunk overlapping [offset, offset+len) ready without copying
  // (prefetch, fscache READ). `prefetch` marks the traffic for metrics.
  virtual Status fetch_range(uint64_t offset, uint64_t len, bool prefetch = false) = 0;
  // Fetch the missing chunks overlapping [offset, offset+len) in the
  // background, in requests of up to amplify_io bytes that run side by side
  // (sequential read-ahead). Best effort: returns at once, drops work when
  // the read-ahead queue is full, ignores a range outside the blob.
  virtual void read_ahead(uint64_t offset, uint64_t len) = 0;
  // Whether every chunk overlapping the range is already on disk.
  virtual bool is_ready(uint64_t offset, uint64_t len) const = 0;

  // The cache data file (for fscache / fanotify modes that hand it out).
  virtual int data_fd() const = 0;
  virtual std::filesystem::path data_path() const = 0;
  virtual CacheMetrics metrics() const = 0;
  // Persist the chunk map (called on clean shutdown; ready bits are also
  // persisted as they are set).
  virtual Status flush() = 0;
};

// For a daemon's exit, once its mounts are down: the shared read-ahead
// threads finish the jobs they run and drop the queued ones, the deferred
// persist thread ends (open caches persist their ready bits when they
// close), and neither starts again. Without it they ran on into static
// destruction (a read-ahead thread hashing a chunk while exit() tore
// OpenSSL down). Idempotent.
void stop_background_work();

}  // namespace nydus::storage
