#include "storage/blob_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/file_util.h"
#include "common/io.h"
#include "common/scratch_pool.h"
#include "common/work_queue.h"
#include "format/blob_reader.h"
#include "format/chunk_decode.h"
#include "format/compress.h"
#include "format/digest.h"
#include "format/layout.h"
#include "storage/chunk_map.h"
#include "storage/demand_gauge.h"
#include "storage/http_client.h"
#include "storage/localfs_backend.h"
#include "storage/zran_fetch.h"

namespace nydus::storage {

namespace {

namespace fs = std::filesystem;
using format::BlobInfo;
using format::ChunkRecord;

// a + b <= limit without overflow.
bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

Result<std::vector<uint8_t>> read_whole(const fs::path& p, uint64_t expected_size) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_error(fmt::format("opening {}", p.string()));
  struct stat st;
  Result<std::vector<uint8_t>> out;
  if (::fstat(fd, &st) != 0) {
    out = sys_error("stat");
  } else if (uint64_t(st.st_size) != expected_size) {
    out = corrupt("{} is {} bytes, expected {}", p.string(), st.st_size, expected_size);
  } else {
    out = std::vector<uint8_t>(expected_size);
    if (auto s = read_full_at(fd, 0, *out, "reading blob meta cache"); !s) out = std::unexpected(s.error());
  }
  ::close(fd);
  return out;
}

// Decode a `<id>.blob.meta` cache file (uncompressed ci buffer padded to 4K,
// then the header) after checking its header against the blob table. The
// entries are validated by parse_blob_meta, fed as an uncompressed blob meta.
Result<format::BlobMeta> parse_meta_cache(std::span<const uint8_t> file, const BlobInfo& blob) {
  const uint64_t ci_len = blob.ci_uncompressed_size;
  const uint64_t padded = format::align_up(ci_len, format::kBlockSize);
  if (file.size() != padded + format::kBlobMetaHeaderSize) return corrupt("blob meta cache has the wrong size");
  auto h = format::load<format::BlobMetaHeader>(file.data() + padded);
  if (h.magic != format::kBlobMetaMagic || h.magic2 != format::kBlobMetaMagic || h.ci_entries != blob.chunk_count ||
      h.ci_compressor != uint32_t(blob.ci_compressor) || h.ci_offset != blob.ci_offset ||
      h.ci_compressed_size != blob.ci_compressed_size || h.ci_uncompressed_size != blob.ci_uncompressed_size)
    return corrupt("blob meta cache header does not match the blob table");
  for (uint64_t i = ci_len; i < padded; i++)
    if (file[i] != 0) return corrupt("blob meta cache padding is not zero");
  BlobInfo raw = blob;
  raw.cipher_algo = 0;  // cached in plaintext
  raw.ci_compressor = format::Compressor::kNone;
  raw.ci_compressed_size = ci_len;
  h.ci_compressor = 0;
  h.ci_compressed_size = ci_len;
  std::vector<uint8_t> bytes(ci_len + format::kBlobMetaHeaderSize);
  std::memcpy(bytes.data(), file.data(), ci_len);
  std::memcpy(bytes.data() + ci_len, &h, sizeof(h));
  return format::parse_blob_meta(bytes, raw);
}

class BlobCacheImpl;

// Ready bits reach the chunk map on disk once the fill settles (each
// persist is an fdatasync, see BlobCacheImpl::persist_if_settled): this one
// thread runs them, off the read path, and a crash loses only bits not yet
// due, whose chunks are fetched again.
class DeferredPersist {
 public:
  static DeferredPersist& instance() {
    static DeferredPersist d;
    return d;
  }
  void schedule(std::weak_ptr<BlobCacheImpl> c, std::chrono::steady_clock::time_point due);
  // The thread ends (caches persist what is left when they close); later
  // schedules are ignored. Idempotent.
  void stop() {
    std::thread t;
    {
      std::lock_guard lk(mu_);
      stop_ = true;
      t.swap(thread_);
    }
    cv_.notify_all();
    if (t.joinable()) t.join();
  }

 private:
  DeferredPersist() = default;
  ~DeferredPersist() { stop(); }
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::weak_ptr<BlobCacheImpl>>> due_;  // deadline, cache
  std::thread thread_;
  bool stop_ = false;
};

// Read-ahead (amplified neighbours of a miss, see BlobCacheImpl::amplify, and
// sequential read-ahead, see read_ahead()) on a few shared threads: a read
// waits only for what it asked for, and what it made worth fetching arrives
// behind it, several requests in flight. Optional work, so a full queue drops
// new jobs rather than growing.
class ReadAhead {
 public:
  static ReadAhead& instance() {
    static ReadAhead r;
    return r;
  }
  void submit(std::weak_ptr<BlobCacheImpl> c, std::vector<uint32_t> cis);
  // A ZRAN run's tail (never dropped once taken: its chunks stay claimed
  // until it runs); false when the queue is full or stopped.
  bool submit_tail(std::weak_ptr<BlobCacheImpl> c, std::shared_ptr<ZranTail> tail);
  // Queued jobs dropped, running ones finished, threads joined; later
  // submissions are refused. Idempotent.
  void stop() {
    std::call_once(started_, [] {});  // no start() after this
    queue_.abandon();
    std::lock_guard lk(stop_mu_);
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

 private:
  struct Job {
    std::weak_ptr<BlobCacheImpl> cache;
    std::vector<uint32_t> cis;
    std::shared_ptr<ZranTail> tail;
  };
  void start();
  static constexpr int kThreads = 4, kMaxQueued = 64;
  ReadAhead() = default;
  ~ReadAhead() { stop(); }

  std::once_flag started_;
  std::mutex stop_mu_;  // one stop() joins at a time
  std::atomic<int> queued_{0};
  WorkQueue<Job> queue_;
  std::vector<std::thread> threads_;
};

// What the cache keeps of a chunk: 24 bytes (a ChunkRecord is 88), so a
// 100,000-chunk blob costs 2.4 MB, not 8.8. Digests are kept apart, and
// only when they are validated.
struct ChunkSlot {
  uint64_t compressed_offset = 0;
  uint64_t uncompressed_offset = 0;
  uint32_t compressed_size = 0;
  uint32_t uncompressed_size : 29 = 0;  // <= kMaxChunkSize
  uint32_t compressed : 1 = 0;
  uint32_t encrypted : 1 = 0;
  uint32_t batch : 1 = 0;  // its place in the batch is in batch_slots_
};
static_assert(sizeof(ChunkSlot) == 24);

class BlobCacheImpl final : public BlobCache, public std::enable_shared_from_this<BlobCacheImpl> {
 public:
  ~BlobCacheImpl() override {
    if (data_fd_ >= 0) {
      (void)persist();
      ::close(data_fd_);
    }
    if (direct_fd_ >= 0) ::close(direct_fd_);
  }

  const BlobInfo& info() const override { return blob_; }
  uint32_t chunk_count() const override { return uint32_t(chunks_.size()); }
  ChunkRecord chunk(uint32_t ci) const override {
    ChunkRecord r;
    if (ci >= chunks_.size()) return r;
    const ChunkSlot& c = chunks_[ci];
    r.ci_index = ci;
    r.compressed_offset = c.compressed_offset;
    r.compressed_size = c.compressed_size;
    r.uncompressed_offset = c.uncompressed_offset;
    r.uncompressed_size = c.uncompressed_size;
    r.compressed = c.compressed;
    r.encrypted = c.encrypted;
    r.batch = c.batch;
    if (c.batch && ci < batch_slots_.size()) {
      r.batch_size = batch_slots_[ci].batch_size;
      r.offset_in_batch = batch_slots_[ci].offset_in_batch;
    }
    if (ci < digests_.size()) r.digest = digests_[ci];
    return r;
  }
  int data_fd() const override { return data_fd_; }
  fs::path data_path() const override { return data_path_; }
  Status flush() override {
    NYDUS_TRY(persist());
    return map_->flush();
  }

  CacheMetrics metrics() const override {
    CacheMetrics m;
    m.chunks_total = chunks_.size();
    m.chunks_ready = ready_count_.load(std::memory_order_relaxed);
    m.hits = hits_.load(std::memory_order_relaxed);
    m.misses = misses_.load(std::memory_order_relaxed);
    m.backend_requests = backend_requests_.load(std::memory_order_relaxed);
    m.backend_bytes = backend_bytes_.load(std::memory_order_relaxed);
    m.digest_failures = digest_failures_.load(std::memory_order_relaxed);
    m.prefetch_bytes = prefetch_bytes_.load(std::memory_order_relaxed);
    m.read_requests = read_requests_.load(std::memory_order_relaxed);
    m.whole_hits = whole_hits_.load(std::memory_order_relaxed);
    m.partial_hits = partial_hits_.load(std::memory_order_relaxed);
    m.prefetch_requests = prefetch_requests_.load(std::memory_order_relaxed);
    m.prefetch_chunks = prefetch_chunks_.load(std::memory_order_relaxed);
    m.prefetch_millis = prefetch_millis_.load(std::memory_order_relaxed);
    m.prefetch_first_ms = prefetch_first_ms_.load(std::memory_order_relaxed);
    m.prefetch_last_ms = prefetch_last_ms_.load(std::memory_order_relaxed);
    return m;
  }

  Status read(uint64_t offset, std::span<uint8_t> out) override {
    if (!fits(offset, out.size(), blob_.uncompressed_size))
      return errorf(Errc::kInvalidArgument, "read {:#x}+{} beyond blob {} size {:#x}", offset, out.size(),
                    blob_.blob_id, blob_.uncompressed_size);
    if (out.empty()) return ok();
    const auto cis = overlapping(offset, out.size());
    if (cache_full()) return read_uncached(offset, out, cis);  // no fetch that cannot be kept
    // Read-ahead starts with the read, not after it: its round trip overlaps ours.
    const uint32_t batch_end = take_marks(cis);
    auto extra = amplify(cis);
    if (extra.empty() && batch_end != kNoChunk && continue_ahead_) extra = run_after(batch_end, /*skip_ready=*/true);
    // ZRAN: after our own claim, which takes the rest of our context along,
    // to follow on a read-ahead thread from where our fetch ends; a job
    // claiming first would take that rest and fetch its context's lead again.
    if (!extra.empty() && !zran_) submit_ahead(std::move(extra));
    if (Status es = ensure(cis, false); !es) {
      // Ours failed for space, or a peer's we waited for did (its chunks
      // then fail "concurrent fetches"): either way the bytes can be served.
      if (es.error().code != Errc::kNoSpace && !cache_full()) return es;
      return read_uncached(offset, out, cis);
    }
    if (!extra.empty() && zran_) submit_ahead(std::move(extra));
    return read_data(offset, out, cis);
  }

  Status fetch_range(uint64_t offset, uint64_t len, bool prefetch) override {
    if (offset > blob_.uncompressed_size)
      return errorf(Errc::kInvalidArgument, "fetch at {:#x} beyond blob size {:#x}", offset, blob_.uncompressed_size);
    len = std::min(len, blob_.uncompressed_size - offset);  // prefetch hints may be coarse
    if (len == 0) return ok();
    if (prefetch && cache_full())
      return errorf(Errc::kNoSpace, "blob {}: prefetch skipped, the cache's filesystem is full", blob_.blob_id);
    const auto cis = overlapping(offset, len);
    auto extra = prefetch ? std::vector<uint32_t>{} : amplify(cis);
    NYDUS_TRY(ensure(cis, prefetch));
    if (!extra.empty()) ReadAhead::instance().submit(weak_from_this(), std::move(extra));
    return ok();
  }

  void read_ahead(uint64_t offset, uint64_t len) override;

  bool is_ready(uint64_t offset, uint64_t len) const override {
    if (!fits(offset, len, blob_.uncompressed_size)) return false;
    for (uint32_t ci : overlapping(offset, len))
      if (!ready(ci)) return false;
    return true;
  }

  Status init(const BlobInfo& blob, std::shared_ptr<Backend> backend, const CacheConfig& cfg,
              std::vector<format::Digest> digests);

 private:
  // ci indices of the chunks overlapping [offset, offset+len), in
  // uncompressed order (binary search over the sorted, disjoint ranges).
  std::vector<uint32_t> overlapping(uint64_t offset, uint64_t len) const;
  // Make `cis` ready: claim the missing ones and fetch them, and wait for
  // those another thread is fetching (unless `wait_for_others` is false:
  // read-ahead leaves them to that thread).
  Status ensure(const std::vector<uint32_t>& cis, bool prefetch, bool wait_for_others = true);
  // Read amplification: the missing chunks stored right after `cis` in the
  // blob, up to amplify_io bytes in all, which one backend request can fetch
  // with them. Neighbours in the blob are neighbours in the tree (files are
  // stored in walk order), so a reader going through a directory finds the
  // next files ready instead of paying a round trip for each.
  std::vector<uint32_t> amplify(const std::vector<uint32_t>& cis) const;
  // The missing chunks stored right after chunk `last` in the blob, up to
  // amplify_io bytes (empty at cached data, unless `skip_ready`: then
  // the run starts at the first missing chunk within kSkipLimit chunks).
  std::vector<uint32_t> run_after(uint32_t last, bool skip_ready) const;
  // Keeping read-ahead ahead: amplify() only follows a miss, so a reader
  // going through the blob would find the batch ready, read it, and miss
  // again at its end, paying a decompression of its own every batch. Like
  // the kernel's PG_readahead, the first chunk of each batch sent ahead
  // carries a mark; a read that reaches it sends the batch after this one,
  // so the workers stay one batch ahead of a sequential reader. A mark fires
  // once; reads that never reach one (random, warm) cause no traffic.
  // Only over a local blob: there a batch costs CPU, not bytes. Over a
  // registry the chain would keep fetching the blob past the file a reader
  // goes through (python's imports fetched 28 MB instead of 24); the FUSE
  // read-ahead window keeps ahead of a reader within a file instead.
  bool continue_ahead_ = false;
  static constexpr uint32_t kNoChunk = UINT32_MAX;
  static constexpr int kSkipLimit = 256;
  static constexpr size_t kMaxMarks = 4096;
  void submit_ahead(std::vector<uint32_t> batch);
  // Clear the marks on `cis`; the last chunk of the marked batch (kNoChunk: none).
  uint32_t take_marks(const std::vector<uint32_t>& cis);
  bool marked(uint32_t ci) const { return (ahead_mark_[ci / 64].load(std::memory_order_relaxed) >> (ci % 64)) & 1; }
  // Index past the run of cis (sorted by compressed offset) that starts at i
  // and one backend request can carry: stored back to back or with small
  // gaps (joins_run), up to amplify_io bytes with the gaps (a single larger
  // chunk still goes alone).
  size_t run_end(const std::vector<uint32_t>& cis, size_t i) const;
  void index_peer_groups();
  // Whether a chunk stored at `next` may share a request with a run ending at
  // `prev_end`: an eStargz layer keeps each file's tar header (a gzip member
  // of its own, ~50-100 bytes) between one file's chunks and the next, so a
  // request that stopped at every gap would fetch a directory file by file.
  // Bytes of a gap are fetched and thrown away; a larger gap ends the run.
  static constexpr uint64_t kMaxJoinGap = 4096;
  static bool joins_run(uint64_t prev_end, uint64_t next) { return next >= prev_end && next - prev_end <= kMaxJoinGap; }
  // Batch blobs only (--batch-size): where each batch chunk sits in its batch.
  struct BatchSlot {
    uint32_t batch_size = 0;
    uint32_t offset_in_batch = 0;
  };
  std::vector<BatchSlot> batch_slots_;
  // Order ci indices by where their bytes are stored in the blob.
  // Ties (small ZRAN chunks starting in one deflate block, a batch's chunks)
  // go in uncompressed order, which is the stream's: a reader's run is then
  // cut right after its chunk, with no neighbour before it sorted after it.
  void sort_by_stored(std::vector<uint32_t>& cis) const {
    std::sort(cis.begin(), cis.end(), [&](uint32_t a, uint32_t b) {
      const ChunkSlot &x = chunks_[a], &y = chunks_[b];
      return x.compressed_offset != y.compressed_offset ? x.compressed_offset < y.compressed_offset
                                                        : x.uncompressed_offset < y.uncompressed_offset;
    });
  }
  // Fetch the claimed chunks (sorted by compressed offset), write them, sync,
  // set their bits. Does not touch the in-flight table.
  // ZRAN, when a reader waits (`urgent`: its chunks, sorted): a run's chunks
  // after the last urgent one may be handed to a read-ahead thread that goes
  // on with the same fetch and inflate (finish_tail); they are listed in
  // `deferred` and stay claimed until it ends.
  // With `sink`, each chunk's checked bytes go there instead (nothing is
  // written or marked).
  using ChunkSink = std::function<void(uint32_t ci, const ChunkRecord& c, std::span<const uint8_t> data)>;
  Status fetch_claimed(std::vector<uint32_t> cis, bool prefetch, const std::vector<uint32_t>* urgent = nullptr,
                       std::vector<uint32_t>* deferred = nullptr, const ChunkSink* sink = nullptr);
  // Digest check (an all-zero digest means "unknown", see index_meta).
  Status verify_fetched(uint32_t ci, const ChunkRecord& c, std::span<const uint8_t> data);
  // verify_fetched, then into the data file, then onto `written`; a chunk
  // failing either is never marked ready.
  Status store_fetched(uint32_t ci, const ChunkRecord& c, std::span<const uint8_t> data,
                       std::vector<uint32_t>& written);
  // The cache file takes no more (its filesystem is full): the read is
  // served from fetched bytes that are not kept, as upstream serves a read
  // whose chunks it fails to persist. Cached chunks still come from the file.
  Status read_uncached(uint64_t offset, std::span<uint8_t> out, const std::vector<uint32_t>& cis);
  // Until when (steady clock, ms) the cache counts as full after a store
  // failed for space: reads then go uncached at once instead of fetching
  // twice, and read-ahead and prefetch (which could keep nothing) do not
  // run. Afterwards storing is tried again: space may have been freed.
  static constexpr int64_t kFullBackoffMs = 5000;
  std::atomic<int64_t> full_until_ms_{0};
  static int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  bool cache_full() const { return steady_ms() < full_until_ms_.load(std::memory_order_relaxed); }
  // Mark stored chunks ready; their persistent bits follow the next sync.
  // Cannot fail: the sync that may fail runs later, in persist().
  void publish(const std::vector<uint32_t>& written);
  // Load the ci array (cache file or backend) and index it.
  Status load_meta(const std::vector<format::Digest>& digests);
  Status timed_backend_read(uint64_t offset, std::span<uint8_t> out);
  // In-memory readiness: a chunk's bytes are in the data file (at least in
  // the page cache). The persistent map lags behind: its bits are set only
  // after an fdatasync that covers the bytes (see persist()).
  bool ready(uint32_t ci) const {
    return (ready_mem_[ci / 64].load(std::memory_order_acquire) >> (ci % 64)) & 1;
  }
  void mark_ready(uint32_t ci) {
    uint64_t bit = uint64_t(1) << (ci % 64);
    if (!(ready_mem_[ci / 64].fetch_or(bit, std::memory_order_acq_rel) & bit))
      ready_count_.fetch_add(1, std::memory_order_relaxed);
  }
  // Sync the data file and persist the bits of chunks written since the last
  // sync; on flush/close, and by DeferredPersist once the fill settles.
  Status persist();
  // When writes settle: kPersistQuiet after the last one, or kPersistMaxLag
  // after the oldest pending bit, whichever comes first. A sync forces the
  // writeback of everything written so far, so one in the middle of a fill
  // (the once-a-second rule before) made the disk write while the reader
  // waited to read: an empty-cache tar of a Debian rootfs took ~0.6 s (15 %)
  // longer (bench/README.md). A per-fetch fdatasync was worse still: every cold
  // read of a small file waited for the disk. Persists when due and returns
  // nothing, or returns when to look again.
  std::optional<std::chrono::steady_clock::time_point> persist_if_settled();
  static constexpr std::chrono::milliseconds kPersistQuiet{1000}, kPersistMaxLag{30000};
  friend class DeferredPersist;
  friend class ReadAhead;

 public:
  // Fetch and hand over a ZRAN run's tail, then release its claims.
  void finish_tail(ZranTail& t);

 private:
  std::atomic<bool> persist_scheduled_{false};  // a DeferredPersist run is due
  // Validate the decoded chunks and build chunks_ / by_uoff_.
  Status index_meta(const format::BlobMeta& meta, const std::vector<format::Digest>& digests);

  BlobInfo blob_;
  std::shared_ptr<Backend> backend_;
  std::shared_ptr<const format::ZranMeta> zran_;  // ZRAN blobs: chunks live in the gzip layer
  // Peer groups: chunks that one fetch and one decode produce together (a
  // ZRAN context; a batch: --batch-size batches, eStargz payloads sharing a
  // gzip member). ci indices by group, and each chunk's group (kNoGroup for
  // the others). Empty when the blob has none.
  static constexpr uint32_t kNoGroup = UINT32_MAX;
  std::vector<std::vector<uint32_t>> peer_groups_;
  std::vector<uint32_t> group_of_;
  std::unique_ptr<ZranDicts> zran_dicts_;          // ZRAN: windows fetched on first use (after zran_)
  CacheConfig cfg_;
  std::vector<ChunkSlot> chunks_;
  std::vector<format::Digest> digests_;  // by ci; empty unless validating (all-zero: unknown)
  std::vector<uint32_t> by_uoff_;  // ci indices sorted by uncompressed offset
  fs::path data_path_;
  int data_fd_ = -1;
  // The data file again, O_DIRECT (-1: the filesystem refused it). Big
  // reads of chunks already on disk take it: the reply's copy into the
  // kernel is then the only copy, and those bytes are not cached twice
  // (once as this file's pages, once as the FUSE file's). Sequential reads
  // of a rootfs's big files over /dev/fuse: 1,103 -> 1,660 MB/s (bench/README).
  // Small reads stay buffered: the file's own read-ahead serves the next
  // small file from memory, where a direct read would wait for the disk.
  int direct_fd_ = -1;
  std::atomic<bool> direct_ok_{true};  // cleared by a direct read the filesystem rejects
  static constexpr size_t kDirectMin = 64 << 10, kDirectAlign = 4096;
  // Bytes of [offset, +out.size()), all in the data file (`cis`: the chunks overlapping it).
  Status read_data(uint64_t offset, std::span<uint8_t> out, const std::vector<uint32_t>& cis);
  std::unique_ptr<ChunkMap> map_;

  std::mutex mu_;  // guards inflight_; never held across I/O
  std::condition_variable cv_;
  std::vector<uint8_t> inflight_;
  std::unordered_map<uint32_t, uint32_t> ahead_;  // marked first chunk -> last chunk of its batch
  std::unique_ptr<std::atomic<uint64_t>[]> ahead_mark_;  // bits of ahead_'s keys: reads test them without mu_

  std::unique_ptr<std::atomic<uint64_t>[]> ready_mem_;
  std::atomic<uint64_t> ready_count_{0};
  std::mutex persist_mu_;  // guards pending_, first_pending_, last_write_
  std::vector<uint32_t> pending_;
  std::chrono::steady_clock::time_point first_pending_{}, last_write_{};

  std::atomic<uint64_t> hits_{0}, misses_{0}, backend_requests_{0}, backend_bytes_{0}, digest_failures_{0},
      prefetch_bytes_{0};
  std::atomic<uint64_t> read_requests_{0}, whole_hits_{0}, partial_hits_{0}, prefetch_requests_{0},
      prefetch_chunks_{0}, prefetch_millis_{0}, prefetch_first_ms_{0}, prefetch_last_ms_{0};
};

uint64_t wall_millis() {
  return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count());
}

// Every read of this blob from the backend, the blob meta's too, counts in
// upstream's BackendMetrics.
Status BlobCacheImpl::timed_backend_read(uint64_t offset, std::span<uint8_t> out) {
  const auto started = std::chrono::steady_clock::now();
  Status rs = backend_->read(blob_.blob_id, offset, out);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  backend_->io_stats().record(out.size(), uint64_t(ms.count()), !rs);
  return rs;
}

Status BlobCacheImpl::load_meta(const std::vector<format::Digest>& digests) {
  if (blob_.bootstrap_chunks) {
    // RAFS v5: no ci array exists; the bootstrap's chunks stand in for it.
    // A ci no file references gets an empty slot at the end of the layout.
    format::BlobMeta meta;
    meta.chunks.resize(blob_.chunk_count);
    for (auto& c : meta.chunks) c.uncompressed_offset = blob_.uncompressed_size;
    for (const auto& r : *blob_.bootstrap_chunks) {
      if (r.ci_index >= meta.chunks.size()) return corrupt("bootstrap chunk {} beyond {} chunks", r.ci_index, meta.chunks.size());
      auto& d = meta.chunks[r.ci_index];
      d = {r.compressed_offset, r.compressed_size, r.uncompressed_offset, r.uncompressed_size, r.compressed};
      // Slices of a shared eStargz gzip member (Bootstrap::adopt_stargz_chunks).
      d.batch = r.batch;
      d.batch_size = r.batch_size;
      d.offset_in_batch = r.offset_in_batch;
    }
    return index_meta(meta, digests);
  }
  if (blob_.features & format::blob_features::kZran) {
    uint64_t fetched = 0;
    auto zm = load_zran_meta(blob_, *backend_, cfg_.work_dir, &fetched);
    if (fetched) {
      backend_requests_.fetch_add(1, std::memory_order_relaxed);
      backend_bytes_.fetch_add(fetched, std::memory_order_relaxed);
    }
    if (!zm) return std::unexpected(std::move(zm).error());
    zran_ = std::move(*zm);
    if (zran_->lazy_dicts) zran_dicts_ = std::make_unique<ZranDicts>(*zran_, blob_);
    format::BlobMeta meta;
    for (const auto& c : zran_->chunks) meta.chunks.push_back(c.ci);
    return index_meta(meta, digests);
  }
  const fs::path cache_path = cfg_.work_dir / (blob_.blob_id + ".blob.meta");
  const uint64_t cache_size =
      format::align_up(blob_.ci_uncompressed_size, format::kBlockSize) + format::kBlobMetaHeaderSize;
  if (auto bytes = read_whole(cache_path, cache_size)) {
    auto m = parse_meta_cache(*bytes, blob_);
    if (m && index_meta(*m, digests)) return ok();
    // An invalid cache file is not trusted: refetch and replace it.
  }

  std::vector<uint8_t> raw(blob_.ci_compressed_size + format::kBlobMetaHeaderSize);
  NYDUS_TRY(timed_backend_read(blob_.ci_offset, raw));
  backend_requests_.fetch_add(1, std::memory_order_relaxed);
  backend_bytes_.fetch_add(raw.size(), std::memory_order_relaxed);
  NYDUS_ASSIGN_OR_RETURN(format::BlobMeta meta, format::parse_blob_meta(raw, blob_));
  NYDUS_TRY(index_meta(meta, digests));
  // Cached decrypted and decompressed, as upstream caches it.
  NYDUS_ASSIGN_OR_RETURN(auto plain, format::decode_meta_bytes(raw, blob_));
  return write_file_atomic(cache_path, format::encode_blob_meta_cache(plain.ci, blob_));
}

Status BlobCacheImpl::index_meta(const format::BlobMeta& meta, const std::vector<format::Digest>& digests) {
  if (meta.chunks.size() != blob_.chunk_count) return corrupt("blob meta has {} chunks", meta.chunks.size());
  // parse_blob_meta bounds every chunk; re-check what we index the data file
  // with, since a wrong range here would write outside our chunk's slot.
  chunks_.assign(meta.chunks.size(), ChunkSlot{});
  batch_slots_.clear();
  for (uint32_t i = 0; i < meta.chunks.size(); i++) {
    const auto& d = meta.chunks[i];
    if (blob_.bootstrap_chunks && d.uncompressed_size == 0 && d.compressed_size == 0 &&
        d.uncompressed_offset == blob_.uncompressed_size) {
      chunks_[i].uncompressed_offset = d.uncompressed_offset;  // unreferenced v5 chunk: never read
      continue;
    }
    if (d.uncompressed_size == 0 || d.uncompressed_size > format::kMaxChunkSize || d.compressed_size == 0 ||
        d.compressed_size > format::kMaxChunkSize ||
        !fits(d.uncompressed_offset, d.uncompressed_size, blob_.uncompressed_size) ||
        (!d.compressed && !d.encrypted && d.compressed_size != d.uncompressed_size))
      return corrupt("chunk {} has an invalid range", i);
    ChunkSlot& c = chunks_[i];
    c.compressed_offset = d.compressed_offset;
    c.compressed_size = d.compressed_size;
    c.uncompressed_offset = d.uncompressed_offset;
    c.uncompressed_size = d.uncompressed_size;
    c.compressed = d.compressed;
    c.encrypted = d.encrypted;
    c.batch = d.batch;
    if (d.batch) {
      if (batch_slots_.size() != chunks_.size()) batch_slots_.assign(chunks_.size(), BatchSlot{});
      batch_slots_[i] = {d.batch_size, d.offset_in_batch};
    }
  }
  // An all-zero digest means "unknown" (TARFS images, chunks missing from
  // the bootstrap's table) and is not checked.
  // eStargz TOC blobs always: their chunk offsets come from an untrusted
  // TOC nothing checked against the layer (upstream never validates them).
  if (cfg_.digest_validate || format::is_legacy_stargz(blob_)) digests_ = digests;

  // ci order normally has increasing uncompressed offsets; sort if not.
  by_uoff_.resize(chunks_.size());
  for (uint32_t i = 0; i < by_uoff_.size(); i++) by_uoff_[i] = i;
  auto less = [&](uint32_t a, uint32_t b) {
    return chunks_[a].uncompressed_offset < chunks_[b].uncompressed_offset;
  };
  if (!std::is_sorted(by_uoff_.begin(), by_uoff_.end(), less))
    std::stable_sort(by_uoff_.begin(), by_uoff_.end(), less);
  // Overlapping chunks would overwrite each other's ready bytes in the file.
  for (size_t k = 1; k < by_uoff_.size(); k++) {
    const ChunkSlot& p = chunks_[by_uoff_[k - 1]];
    if (chunks_[by_uoff_[k]].uncompressed_offset < p.uncompressed_offset + p.uncompressed_size)
      return corrupt("chunks {} and {} overlap in the uncompressed layout", by_uoff_[k - 1], by_uoff_[k]);
  }
  index_peer_groups();
  return ok();
}

void BlobCacheImpl::index_peer_groups() {
  peer_groups_.clear();
  group_of_.clear();
  if (zran_) {  // (index_meta took its chunks in order, one ci each)
    peer_groups_.assign(zran_->contexts.size(), {});
    group_of_.resize(chunks_.size());
    for (uint32_t ci = 0; ci < chunks_.size(); ci++) {
      group_of_[ci] = zran_->chunks[ci].zran_index;
      peer_groups_[group_of_[ci]].push_back(ci);
    }
    return;
  }
  std::map<std::pair<uint64_t, uint32_t>, uint32_t> group_of_range;
  for (uint32_t ci = 0; ci < chunks_.size(); ci++) {
    const ChunkSlot& c = chunks_[ci];
    if (!c.batch) continue;
    if (group_of_.empty()) group_of_.assign(chunks_.size(), kNoGroup);
    auto [it, fresh] = group_of_range.emplace(std::pair{c.compressed_offset, c.compressed_size}, uint32_t(peer_groups_.size()));
    if (fresh) peer_groups_.emplace_back();
    peer_groups_[it->second].push_back(ci);
    group_of_[ci] = it->second;
  }
}

Status BlobCacheImpl::init(const BlobInfo& blob, std::shared_ptr<Backend> backend, const CacheConfig& cfg,
                           std::vector<format::Digest> digests) {
  blob_ = blob;
  backend_ = std::move(backend);
  continue_ahead_ = std::string_view(backend_->type()) == "localfs";
  cfg_ = cfg;
  if (!backend_) return errorf(Errc::kInvalidArgument, "blob cache needs a backend");
  NYDUS_TRY(validate_blob_id(blob_.blob_id));
  if ((blob_.ci_compressed_size == 0 || blob_.ci_uncompressed_size == 0) && !blob_.bootstrap_chunks)
    return errorf(Errc::kUnsupported, "blob {} has no chunk info (blob meta)", blob_.blob_id);
  // Bound what the untrusted table makes us allocate before reading anything
  // (V2 entries are 24 bytes; parse_blob_meta checks the exact size).
  // ZRAN blobs add a context (40 B) and a window (≤ 32 KiB) per chunk at most.
  const uint64_t ci_max_entry = (blob_.features & format::blob_features::kZran)
                                    ? sizeof(format::ChunkInfoV2) + sizeof(format::ZranInflateContextOnDisk) +
                                          format::kZranWindowSize
                                    : sizeof(format::ChunkInfoV2) +
                                          ((blob_.features & format::blob_features::kBatch) ? format::kBatchContextSize : 0);
  if (blob_.chunk_count == 0 || blob_.chunk_count > format::kMaxChunksPerBlob ||
      blob_.ci_uncompressed_size > uint64_t(blob_.chunk_count) * ci_max_entry ||
      (blob_.ci_compressed_size > blob_.ci_uncompressed_size &&
       !(blob_.cipher_algo != 0 && blob_.ci_compressed_size == 18)))
    return corrupt("blob {}: {} chunks with ci sizes {}/{}", blob_.blob_id, blob_.chunk_count,
                   blob_.ci_compressed_size, blob_.ci_uncompressed_size);
  // A TARFS blob is the tar itself: whole 512-byte tar blocks, not 4096.
  const uint64_t layout_unit = (blob_.features & format::blob_features::kTarfs) ? 512 : format::kBlockSize;
  if (blob_.uncompressed_size % layout_unit != 0 || blob_.uncompressed_size > (uint64_t(1) << 52))
    return corrupt("blob {}: uncompressed size {:#x} invalid", blob_.blob_id, blob_.uncompressed_size);
  if (!digests.empty() && digests.size() != blob_.chunk_count)
    return errorf(Errc::kInvalidArgument, "{} digests for {} chunks", digests.size(), blob_.chunk_count);
  if (cfg_.amplify_io == 0) cfg_.amplify_io = 1;

  std::error_code ec;
  fs::create_directories(cfg_.work_dir, ec);
  if (ec) return errorf(Errc::kIo, "creating {}: {}", cfg_.work_dir.string(), ec.message());

  if (Status s = load_meta(digests); !s)
    return std::unexpected(std::move(s).error().context(fmt::format("loading blob meta of {}", blob_.blob_id)));

  // Data file: sparse, exactly uncompressed_size; a wrong-sized one is reset,
  // and then no chunk map over it can be trusted.
  data_path_ = cfg_.work_dir / (blob_.blob_id + ".blob.data");
  data_fd_ = ::open(data_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (data_fd_ < 0) return sys_error(fmt::format("opening {}", data_path_.string()));
  direct_fd_ = ::open(data_path_.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  struct stat st;
  if (::fstat(data_fd_, &st) != 0) return sys_error(fmt::format("stat {}", data_path_.string()));
  if (!S_ISREG(st.st_mode)) return errorf(Errc::kInvalidArgument, "{} is not a regular file", data_path_.string());
  bool fresh = false;
  const fs::path map_path = cfg_.work_dir / (blob_.blob_id + ".chunk_map");
  if (uint64_t(st.st_size) != blob_.uncompressed_size) {
    // The map goes first: a crash between the two steps must never leave an
    // old map over a freshly emptied data file (its bits would claim holes).
    if (::unlink(map_path.c_str()) != 0 && errno != ENOENT)
      return sys_error(fmt::format("removing {}", map_path.string()));
    if (::ftruncate(data_fd_, 0) != 0 || ::ftruncate(data_fd_, off_t(blob_.uncompressed_size)) != 0)
      return sys_error(fmt::format("sizing {}", data_path_.string()));
    fresh = true;
  }
  NYDUS_ASSIGN_OR_RETURN(map_, ChunkMap::open(map_path, blob_.chunk_count, fresh));
  inflight_.assign(chunks_.size(), 0);
  const size_t words = (chunks_.size() + 63) / 64;
  ready_mem_.reset(new std::atomic<uint64_t>[words]);
  ahead_mark_.reset(new std::atomic<uint64_t>[words]);
  for (size_t w = 0; w < words; w++) ahead_mark_[w].store(0, std::memory_order_relaxed);
  for (size_t w = 0; w < words; w++) ready_mem_[w].store(0, std::memory_order_relaxed);
  for (uint32_t ci = 0; ci < chunks_.size(); ci++)
    if (map_->is_ready(ci)) mark_ready(ci);
  return ok();
}

Status BlobCacheImpl::read_data(uint64_t offset, std::span<uint8_t> out, const std::vector<uint32_t>& cis) {
  // Direct only for chunks whose persistent bit is set: their bytes were
  // synced before it was, so no dirty page of ours has to be written back
  // first (a direct read flushes the range it covers).
  if (direct_fd_ >= 0 && out.size() >= kDirectMin && offset % kDirectAlign == 0 &&
      reinterpret_cast<uintptr_t>(out.data()) % kDirectAlign == 0 && direct_ok_.load(std::memory_order_relaxed) &&
      std::all_of(cis.begin(), cis.end(), [&](uint32_t ci) { return map_->is_ready(ci); })) {
    const size_t head = out.size() & ~(kDirectAlign - 1);  // the tail (< 4 KiB) is read buffered
    Status ds = read_full_at(direct_fd_, offset, out.first(head), "reading blob cache data (direct)");
    if (ds) {
      if (head == out.size()) return ok();
      return read_full_at(data_fd_, offset + head, out.subspan(head), "reading blob cache data");
    }
    // The filesystem wants another alignment, say: buffered reads from now
    // on (they read the same bytes).
    direct_ok_.store(false, std::memory_order_relaxed);
  }
  // Gaps between chunks are holes of the sparse file: they read as zeros.
  return read_full_at(data_fd_, offset, out, "reading blob cache data");
}

std::vector<uint32_t> BlobCacheImpl::overlapping(uint64_t offset, uint64_t len) const {
  std::vector<uint32_t> out;
  const uint64_t end = offset + len;
  // Ranges are sorted and disjoint, so their ends are sorted too: find the
  // first chunk ending after `offset`.
  auto it = std::upper_bound(by_uoff_.begin(), by_uoff_.end(), offset, [&](uint64_t off, uint32_t ci) {
    return off < chunks_[ci].uncompressed_offset + chunks_[ci].uncompressed_size;
  });
  for (; it != by_uoff_.end() && chunks_[*it].uncompressed_offset < end; ++it) out.push_back(*it);
  return out;
}

std::vector<uint32_t> BlobCacheImpl::amplify(const std::vector<uint32_t>& cis) const {
  std::vector<uint32_t> extra;
  if (cis.empty() || !cfg_.amplify_reads || cfg_.amplify_io <= 1) return extra;
  bool missing = false;
  for (uint32_t ci : cis) missing |= !ready(ci);
  if (!missing) return extra;  // a cache hit stays a hit: no backend traffic
  return run_after(cis.back(), false);
}

std::vector<uint32_t> BlobCacheImpl::run_after(uint32_t last, bool skip_ready) const {
  std::vector<uint32_t> extra;
  if (last >= chunks_.size()) return extra;
  // The budget is for what comes after the read (at least one chunk, even a
  // big one: with 1 MiB chunks and amplify_io 1 MiB there would be none).
  uint64_t total = 0;
  const ChunkSlot* prev = &chunks_[last];
  auto it = std::upper_bound(by_uoff_.begin(), by_uoff_.end(), prev->uncompressed_offset,
                             [&](uint64_t off, uint32_t ci) { return off < chunks_[ci].uncompressed_offset; });
  if (skip_ready) {
    for (int n = 0; it != by_uoff_.end() && ready(*it); ++it)
      if (++n > kSkipLimit) return extra;
    if (it != by_uoff_.end()) prev = nullptr;  // a new run starts here
  }
  // A ZRAN chunk's range starts at the deflate block holding its first
  // byte, so neighbours overlap (small files share blocks): they join, and
  // only the bytes past the run's end count.
  uint64_t end = prev ? prev->compressed_offset + prev->compressed_size : 0;
  for (; it != by_uoff_.end(); ++it) {
    const ChunkSlot& c = chunks_[*it];
    const uint64_t c_end = c.compressed_offset + c.compressed_size;
    // Stop at cached data and at a gap one request should not carry.
    const bool joins = !prev || (zran_ ? c.compressed_offset <= end + kMaxJoinGap : joins_run(end, c.compressed_offset));
    const uint64_t more = !prev ? c.compressed_size : c_end > end ? c_end - end : 0;
    if (ready(*it) || !joins || (!extra.empty() && total + more > cfg_.amplify_io)) break;
    total += more;
    extra.push_back(*it);
    prev = &c;
    end = std::max(end, c_end);
  }
  return extra;
}

void BlobCacheImpl::submit_ahead(std::vector<uint32_t> batch) {
  if (cache_full()) return;
  const uint32_t first = batch.front();
  {
    std::lock_guard lk(mu_);
    // Marks of batches nobody read stay until their chunk is read; a bound
    // keeps them from piling up (dropping them only ends those chains).
    if (ahead_.size() >= kMaxMarks) {
      for (const auto& mark : ahead_)
        ahead_mark_[mark.first / 64].fetch_and(~(uint64_t(1) << (mark.first % 64)), std::memory_order_relaxed);
      ahead_.clear();
    }
    ahead_[first] = batch.back();
    ahead_mark_[first / 64].fetch_or(uint64_t(1) << (first % 64), std::memory_order_relaxed);
  }
  ReadAhead::instance().submit(weak_from_this(), std::move(batch));
}

uint32_t BlobCacheImpl::take_marks(const std::vector<uint32_t>& cis) {
  uint32_t end = kNoChunk;
  for (uint32_t ci : cis) {
    if (!marked(ci)) continue;
    std::lock_guard lk(mu_);
    if (auto it = ahead_.find(ci); it != ahead_.end()) {
      end = it->second;
      ahead_.erase(it);
    }
    ahead_mark_[ci / 64].fetch_and(~(uint64_t(1) << (ci % 64)), std::memory_order_relaxed);
  }
  return end;
}

Status BlobCacheImpl::ensure(const std::vector<uint32_t>& cis, bool prefetch, bool wait_for_others) {
  // A hit (most reads once read-ahead runs ahead) takes no lock.
  if (std::all_of(cis.begin(), cis.end(), [&](uint32_t ci) { return ready(ci); })) {
    hits_.fetch_add(cis.size(), std::memory_order_relaxed);
    if (!prefetch) {
      read_requests_.fetch_add(1, std::memory_order_relaxed);
      whole_hits_.fetch_add(1, std::memory_order_relaxed);
    }
    return ok();
  }
  bool first_look = true;
  std::optional<DemandGauge::Waiting> waiting;  // a reader waits on this miss: prefetch steps aside
  // Each round either fetches what nobody else is fetching or waits for the
  // thread that is; a waiter whose fetcher failed claims the chunk itself in
  // the next round. Bounded so a persistently failing peer cannot spin us.
  for (int round = 0; round < 8; round++) {
    std::vector<uint32_t> mine, theirs, peers;
    {
      std::lock_guard lk(mu_);
      for (uint32_t ci : cis) {
        if (ready(ci)) continue;
        if (inflight_[ci]) {
          theirs.push_back(ci);
        } else {
          inflight_[ci] = 1;
          mine.push_back(ci);
        }
      }
      // Peers: one fetch and one decode of a ZRAN context (from its
      // checkpoint) or of a batch produce every chunk in it, so take them all
      // (as upstream does for ZRAN): later reads nearby then cost nothing, and
      // a directory of small files in one eStargz gzip member costs one
      // request, not one per file. Read-ahead leaves a context's chunks before
      // its own to readers, who would otherwise wait for its whole run (mine
      // are in stream order, but for deduplicated chunks: then read-ahead
      // takes a few peers less, nothing worse).
      if (!group_of_.empty()) {
        auto stream_pos = [&](uint32_t ci) -> uint32_t { return zran_ ? zran_->chunks[ci].zran_offset : 0; };
        uint32_t last_group = kNoGroup;
        for (uint32_t ci : mine) {
          const uint32_t g = group_of_[ci];
          if (g == kNoGroup || g == last_group) continue;
          last_group = g;
          const uint32_t from = stream_pos(ci);
          for (uint32_t peer : peer_groups_[g])
            if (!ready(peer) && !inflight_[peer] && (!prefetch || stream_pos(peer) >= from)) {
              inflight_[peer] = 1;
              peers.push_back(peer);
            }
        }
      }
    }
    if (first_look) {
      const uint64_t missing = mine.size() + theirs.size();
      hits_.fetch_add(cis.size() - missing, std::memory_order_relaxed);
      misses_.fetch_add(missing, std::memory_order_relaxed);
      if (!prefetch) {
        read_requests_.fetch_add(1, std::memory_order_relaxed);
        if (missing == 0) whole_hits_.fetch_add(1, std::memory_order_relaxed);
        else if (missing < cis.size()) partial_hits_.fetch_add(1, std::memory_order_relaxed);
        if (missing) waiting.emplace();
      }
      first_look = false;
    }
    std::vector<uint32_t> urgent, deferred;
    const bool split = zran_ && !prefetch && !peers.empty();
    if (split) {
      urgent = mine;
      std::sort(urgent.begin(), urgent.end());
    }
    const size_t own = mine.size();
    mine.insert(mine.end(), peers.begin(), peers.end());
    if (mine.empty() && theirs.empty()) return ok();
    Status st = ok();
    if (!mine.empty()) {
      st = fetch_claimed(mine, prefetch, split ? &urgent : nullptr, split ? &deferred : nullptr);
      {
        std::lock_guard lk(mu_);
        std::sort(deferred.begin(), deferred.end());
        for (uint32_t ci : mine)
          if (!std::binary_search(deferred.begin(), deferred.end(), ci)) inflight_[ci] = 0;
      }
      cv_.notify_all();
      // A peer taken along that failed (its digest, say) fails its own
      // readers later, not this one.
      if (!st && std::any_of(mine.begin(), mine.begin() + ptrdiff_t(own), [&](uint32_t ci) { return !ready(ci); }))
        return st;
    }
    if (!wait_for_others) return ok();
    if (!theirs.empty()) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return std::none_of(theirs.begin(), theirs.end(), [&](uint32_t ci) { return inflight_[ci] != 0; }); });
    }
  }
  for (uint32_t ci : cis)
    if (!ready(ci))
      return errorf(Errc::kIo, "blob {}: chunk {} could not be fetched (concurrent fetches kept failing)",
                    blob_.blob_id, ci);
  return ok();
}

size_t BlobCacheImpl::run_end(const std::vector<uint32_t>& cis, size_t i) const {
  size_t j = i + 1;
  if (zran_) {
    // A ZRAN chunk's span starts at the deflate block holding its first byte,
    // so neighbours overlap by up to a block: they still share a request
    // (zran_run_end then joins them into one fetch and one inflate).
    const uint64_t base = chunks_[cis[i]].compressed_offset;
    uint64_t end = base + chunks_[cis[i]].compressed_size;
    for (; j < cis.size(); j++) {
      const ChunkSlot& next = chunks_[cis[j]];
      const uint64_t next_end = std::max(end, next.compressed_offset + next.compressed_size);
      if (next.compressed_offset > end + kMaxJoinGap || next_end - base > cfg_.amplify_io) break;
      end = next_end;
    }
    return j;
  }
  uint64_t total = chunks_[cis[i]].compressed_size;
  while (j < cis.size()) {
    const ChunkSlot& prev = chunks_[cis[j - 1]];
    const ChunkSlot& next = chunks_[cis[j]];
    // Chunks of one batch share its stored range: one read, one decode.
    if (next.batch && prev.batch && next.compressed_offset == prev.compressed_offset &&
        next.compressed_size == prev.compressed_size) {
      j++;
      continue;
    }
    const uint64_t prev_end = prev.compressed_offset + prev.compressed_size;
    if (!joins_run(prev_end, next.compressed_offset) ||
        total + (next.compressed_offset - prev_end) + next.compressed_size > cfg_.amplify_io)
      break;
    total += (next.compressed_offset - prev_end) + next.compressed_size;
    j++;
  }
  return j;
}

void BlobCacheImpl::read_ahead(uint64_t offset, uint64_t len) {
  if (cache_full()) return;
  if (!fits(offset, len, blob_.uncompressed_size) || len == 0) return;
  std::vector<uint32_t> missing;
  for (uint32_t ci : overlapping(offset, len))
    if (!ready(ci)) missing.push_back(ci);
  if (missing.empty()) return;
  sort_by_stored(missing);
  // One job per request: the read-ahead threads fetch them side by side.
  for (size_t i = 0; i < missing.size();) {
    const size_t j = run_end(missing, i);
    ReadAhead::instance().submit(weak_from_this(), std::vector<uint32_t>(missing.begin() + i, missing.begin() + j));
    i = j;
  }
}

Status BlobCacheImpl::verify_fetched(uint32_t ci, const ChunkRecord& c, std::span<const uint8_t> data) {
  if (ci < digests_.size() && digests_[ci] != format::Digest{}) {
    if (Status ds = format::verify_chunk(blob_.digester, c, data, digests_[ci]); !ds) {
      digest_failures_.fetch_add(1, std::memory_order_relaxed);
      return std::unexpected(std::move(ds).error().context(fmt::format("blob {} chunk {}", blob_.blob_id, ci)));
    }
  }
  return ok();
}

Status BlobCacheImpl::read_uncached(uint64_t offset, std::span<uint8_t> out, const std::vector<uint32_t>& cis) {
  std::memset(out.data(), 0, out.size());  // gaps between chunks read as zeros
  // Where a chunk's bytes [uoff, uoff + len) fall in `out`: the blob offset
  // they start at and how many (0 if none).
  auto clip = [&](uint64_t uoff, uint64_t len) -> std::pair<uint64_t, uint64_t> {
    const uint64_t from = std::max(offset, uoff), to = std::min(offset + out.size(), uoff + len);
    return {from, from < to ? to - from : 0};
  };
  std::vector<uint32_t> missing;
  for (uint32_t ci : cis) {
    if (!ready(ci)) {
      missing.push_back(ci);
      continue;
    }
    const auto [from, n] = clip(chunks_[ci].uncompressed_offset, chunks_[ci].uncompressed_size);
    if (n) NYDUS_TRY(read_full_at(data_fd_, from, out.subspan(from - offset, n), "reading blob cache data"));
  }
  if (missing.empty()) return ok();
  const ChunkSink sink = [&](uint32_t, const ChunkRecord& c, std::span<const uint8_t> data) {
    const auto [from, n] = clip(c.uncompressed_offset, data.size());
    if (n) std::memcpy(out.data() + (from - offset), data.data() + (from - c.uncompressed_offset), n);
  };
  return fetch_claimed(std::move(missing), false, nullptr, nullptr, &sink);
}

Status BlobCacheImpl::store_fetched(uint32_t ci, const ChunkRecord& c, std::span<const uint8_t> data,
                                    std::vector<uint32_t>& written) {
  NYDUS_TRY(verify_fetched(ci, c, data));
  if (Status ws = write_full_at(data_fd_, c.uncompressed_offset, data, "writing blob cache data"); !ws) {
    if (ws.error().code == Errc::kNoSpace) full_until_ms_.store(steady_ms() + kFullBackoffMs, std::memory_order_relaxed);
    return ws;
  }
  written.push_back(ci);
  return ok();
}

void BlobCacheImpl::publish(const std::vector<uint32_t>& written) {
  if (written.empty()) return;
  for (uint32_t ci : written) mark_ready(ci);
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lk(persist_mu_);
    if (pending_.empty()) first_pending_ = now;
    last_write_ = now;
    pending_.insert(pending_.end(), written.begin(), written.end());
  }
  if (!persist_scheduled_.exchange(true)) DeferredPersist::instance().schedule(weak_from_this(), now + kPersistQuiet);
}

std::optional<std::chrono::steady_clock::time_point> BlobCacheImpl::persist_if_settled() {
  {
    std::lock_guard lk(persist_mu_);
    if (!pending_.empty()) {
      const auto due = std::min(last_write_ + kPersistQuiet, first_pending_ + kPersistMaxLag);
      if (std::chrono::steady_clock::now() < due) return due;
    }
  }
  // Cleared first: a write from now on schedules its own run.
  persist_scheduled_ = false;
  (void)persist();  // an error leaves the bits pending for the next write or flush
  return std::nullopt;
}

void BlobCacheImpl::finish_tail(ZranTail& t) {
  std::vector<uint32_t> written;
  uint64_t fetched = 0;
  backend_requests_.fetch_add(1, std::memory_order_relaxed);
  Status rs = finish_zran_tail(t, *zran_, blob_, *backend_,
                               [&](uint32_t ci, std::span<const uint8_t> data) {
                                 (void)store_fetched(ci, chunk(ci), data, written);
                                 return ok();
                               },
                               &fetched);
  backend_bytes_.fetch_add(fetched, std::memory_order_relaxed);
  publish(written);
  // Readers waiting on these claim what is still missing themselves.
  {
    std::lock_guard lk(mu_);
    for (uint32_t ci : t.cis) inflight_[ci] = 0;
  }
  cv_.notify_all();
}

Status BlobCacheImpl::fetch_claimed(std::vector<uint32_t> cis, bool prefetch, const std::vector<uint32_t>* urgent,
                                    std::vector<uint32_t>* deferred, const ChunkSink* sink) {
  sort_by_stored(cis);
  Status first_error = ok();
  std::vector<uint32_t> written;
  Scratch fetched_buf, plain_buf;  // leased from the process's pool (common/scratch_pool.h)
  std::span<uint8_t> buf, plain;
  auto deliver = [&](uint32_t ci, const ChunkRecord& c, std::span<const uint8_t> data) {
    Status ds = ok();
    if (!sink) ds = store_fetched(ci, c, data, written);
    else if ((ds = verify_fetched(ci, c, data))) (*sink)(ci, c, data);
    if (!ds && first_error) first_error = std::move(ds);
  };
  size_t i = 0;
  while (i < cis.size()) {
    if (zran_) {
      // A run of chunks of one inflate context: one fetch of the layer from
      // the context's checkpoint, one inflate (see zran_fetch.h).
      const size_t j = zran_run_end(*zran_, cis, i, format::kZranMaxContextOutput);
      backend_requests_.fetch_add(1, std::memory_order_relaxed);
      if (prefetch) {
        prefetch_requests_.fetch_add(1, std::memory_order_relaxed);
        prefetch_chunks_.fetch_add(j - i, std::memory_order_relaxed);
      }
      // A reader waits only for the run up to its last chunk; the rest of
      // the context follows on a read-ahead thread from where that fetch ended.
      size_t head = j - i;
      if (urgent && deferred) {
        head = 0;
        for (size_t k = i; k < j; k++)
          if (std::binary_search(urgent->begin(), urgent->end(), cis[k])) head = k - i + 1;
        if (head == 0) head = j - i;
      }
      uint64_t fetched = 0;
      auto rs = read_zran_run(*zran_, blob_, *backend_, zran_dicts_.get(), std::span<const uint32_t>(cis).subspan(i, j - i),
                              head,
                              [&](uint32_t ci, std::span<const uint8_t> data) {
                                deliver(ci, chunk(ci), data);
                                return ok();
                              },
                              &fetched);
      backend_bytes_.fetch_add(fetched, std::memory_order_relaxed);
      if (prefetch) prefetch_bytes_.fetch_add(fetched, std::memory_order_relaxed);
      if (!rs) {
        if (first_error) first_error = std::unexpected(std::move(rs).error());
      } else if (*rs) {
        auto tail = std::make_shared<ZranTail>(std::move(**rs));
        if (ReadAhead::instance().submit_tail(weak_from_this(), tail)) deferred->insert(deferred->end(), tail->cis.begin(), tail->cis.end());
        else finish_tail(*tail);  // the queue is full: finish it here
      }
      i = j;
      continue;
    }
    const size_t j = run_end(cis, i);
    const uint64_t base = chunks_[cis[i]].compressed_offset;
    const uint64_t total = chunks_[cis[j - 1]].compressed_offset + chunks_[cis[j - 1]].compressed_size - base;
    buf = fetched_buf.get(total);
    backend_requests_.fetch_add(1, std::memory_order_relaxed);
    const auto started = std::chrono::steady_clock::now();
    if (prefetch) {
      uint64_t none = 0;
      prefetch_first_ms_.compare_exchange_strong(none, wall_millis(), std::memory_order_relaxed);
      prefetch_requests_.fetch_add(1, std::memory_order_relaxed);
      prefetch_chunks_.fetch_add(j - i, std::memory_order_relaxed);
    }
    Status rs = timed_backend_read(base, buf);
    if (prefetch) {
      prefetch_millis_.fetch_add(uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::steady_clock::now() - started)
                                              .count()),
                                 std::memory_order_relaxed);
      prefetch_last_ms_.store(wall_millis(), std::memory_order_relaxed);
    }
    if (!rs) {
      if (first_error) first_error = std::unexpected(std::move(rs).error().context(
                           fmt::format("fetching blob {} {:#x}+{}", blob_.blob_id, base, total)));
      i = j;
      continue;
    }
    backend_bytes_.fetch_add(total, std::memory_order_relaxed);
    if (prefetch) prefetch_bytes_.fetch_add(total, std::memory_order_relaxed);

    for (size_t k = i; k < j; k++) {
      const uint32_t ci = cis[k];
      const ChunkRecord c = chunk(ci);
      std::span<uint8_t> stored(buf.data() + (c.compressed_offset - base), c.compressed_size);
      // The same decode and digest check as `nydus-image check` (format/chunk_decode.h);
      // a raw chunk is decoded in place.
      std::span<uint8_t> data = stored;
      if (c.compressed || c.encrypted || c.batch) {
        plain = plain_buf.get(c.uncompressed_size);
        data = plain;
      }
      Status ds = format::decode_chunk(blob_, c, stored, data);
      if (!ds) {
        if (first_error)
          first_error = std::unexpected(std::move(ds).error().context(fmt::format("blob {} chunk {}", blob_.blob_id, ci)));
        continue;  // never written, never marked
      }
      deliver(ci, c, data);
    }
    i = j;
  }
  // Readers may use the bytes at once (they are in the page cache); the
  // persistent bits follow after the next sync.
  publish(written);
  return first_error;
}

void ReadAhead::start() {
  std::call_once(started_, [this] {
    for (int i = 0; i < kThreads; ++i)
      threads_.emplace_back([this] {
        const BackgroundRequestScope background;  // a reader may be waiting on the warm connection
        while (auto job = queue_.pop()) {
          queued_--;
          // Best effort; chunks a reader is already fetching are left to it.
          auto cache = job->cache.lock();
          if (!cache) continue;
          if (cache->cache_full() && !job->tail) continue;  // it could keep nothing
          if (job->tail) cache->finish_tail(*job->tail);
          else (void)cache->ensure(job->cis, /*prefetch=*/true, /*wait_for_others=*/false);
        }
      });
  });
}

void ReadAhead::submit(std::weak_ptr<BlobCacheImpl> c, std::vector<uint32_t> cis) {
  start();
  if (queued_.fetch_add(1) >= kMaxQueued) {
    queued_--;
    return;
  }
  if (!queue_.try_push(Job{std::move(c), std::move(cis), nullptr}, SIZE_MAX)) queued_--;  // stopped
}

bool ReadAhead::submit_tail(std::weak_ptr<BlobCacheImpl> c, std::shared_ptr<ZranTail> tail) {
  start();
  if (queued_.fetch_add(1) >= kMaxQueued) {
    queued_--;
    return false;
  }
  if (queue_.try_push(Job{std::move(c), {}, std::move(tail)}, SIZE_MAX)) return true;
  queued_--;  // stopped
  return false;
}

void DeferredPersist::schedule(std::weak_ptr<BlobCacheImpl> c, std::chrono::steady_clock::time_point due) {
  std::lock_guard lk(mu_);
  if (stop_) return;
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  due_.emplace_back(due, std::move(c));
  cv_.notify_one();
}

void DeferredPersist::run() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    if (due_.empty()) {
      cv_.wait(lk);
      continue;
    }
    // A copy: schedule() may grow due_ while we wait (found by ASan).
    const auto deadline =
        std::min_element(due_.begin(), due_.end(), [](auto& a, auto& b) { return a.first < b.first; })->first;
    if (cv_.wait_until(lk, deadline) == std::cv_status::no_timeout && !stop_) continue;
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<BlobCacheImpl>> now_due;
    for (auto it = due_.begin(); it != due_.end();) {
      if (it->first <= now) {
        if (auto c = it->second.lock()) now_due.push_back(std::move(c));
        it = due_.erase(it);
      } else {
        ++it;
      }
    }
    lk.unlock();
    std::vector<std::pair<std::chrono::steady_clock::time_point, std::weak_ptr<BlobCacheImpl>>> later;
    for (auto& c : now_due)
      if (auto next = c->persist_if_settled()) later.emplace_back(*next, c);
    now_due.clear();  // the last reference to a cache may go here, outside our lock
    lk.lock();
    for (auto& l : later) due_.push_back(std::move(l));
  }
}

Status BlobCacheImpl::persist() {
  std::vector<uint32_t> batch;
  {
    std::lock_guard lk(persist_mu_);
    if (pending_.empty()) return ok();
    batch.swap(pending_);
  }
  // Bytes reach the disk before any persistent bit claims them.
  if (::fdatasync(data_fd_) != 0) {
    int e = errno;
    std::lock_guard lk(persist_mu_);
    pending_.insert(pending_.end(), batch.begin(), batch.end());
    return sys_error("syncing blob cache data", e);
  }
  for (uint32_t ci : batch) map_->set_ready(ci);
  return ok();
}

}  // namespace

Result<std::shared_ptr<BlobCache>> BlobCache::open(const format::BlobInfo& blob, std::shared_ptr<Backend> backend,
                                                   const CacheConfig& cfg, std::vector<format::Digest> digests) {
  auto cache = std::make_shared<BlobCacheImpl>();
  NYDUS_TRY(cache->init(blob, std::move(backend), cfg, std::move(digests)));
  return std::shared_ptr<BlobCache>(std::move(cache));
}

void stop_background_work() {
  ReadAhead::instance().stop();
  DeferredPersist::instance().stop();
}

}  // namespace nydus::storage
