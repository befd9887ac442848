// Background prefetch of an image's data into its blob caches: the files of
// the bootstrap's prefetch table (a directory means everything below it), or
// every file with prefetch_all. Runs on its own threads so on-demand reads
// never queue behind it; honours a bandwidth limit and stops promptly.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "format/bootstrap.h"
#include "runtime/config.h"
#include "storage/blob_cache.h"

namespace nydus::runtime {

// A range of one blob's uncompressed layout to make ready.
struct PrefetchRange {
  uint32_t blob_index = 0;
  uint64_t offset = 0;
  uint64_t len = 0;
  bool operator==(const PrefetchRange&) const = default;
};

// The ranges covering the data of `nids` (directories expand to the regular
// files below them, each chunk once): chunks adjacent in a blob are merged
// (whatever their order in `nids`) while the merged range stays within
// `merging_size`; ranges come in the order of their first chunk in `nids`.
Result<std::vector<PrefetchRange>> plan_prefetch(const format::Bootstrap& boot, const std::vector<uint64_t>& nids,
                                                 uint64_t merging_size);

// Token bucket of `rate` bytes/s; rate 0 is unlimited. Takes a debt instead
// of waiting for a full bucket, so one request larger than the burst works.
class TokenBucket {
 public:
  explicit TokenBucket(uint64_t rate);
  // Nanoseconds the caller should wait before spending `n` bytes.
  uint64_t reserve(uint64_t n);

 private:
  std::mutex mu_;
  double rate_;
  double tokens_;
  int64_t last_ns_;
};

struct PrefetchStats {
  uint64_t ranges_total = 0;
  uint64_t ranges_done = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  bool finished = false;
};

// Where prefetched ranges go: the image's blob caches (FUSE and fanotify
// modes), or a cachefiles object's anon fd (fscache mode).
class PrefetchTarget {
 public:
  virtual ~PrefetchTarget() = default;
  virtual bool is_ready(const PrefetchRange& r) = 0;
  virtual Status fetch(const PrefetchRange& r) = 0;
  // A reader is waiting on a miss right now: the prefetcher steps aside.
  virtual bool demand_waiting() { return false; }
};

// The blob caches of an image, by blob index.
std::shared_ptr<PrefetchTarget> blob_cache_target(std::vector<std::shared_ptr<storage::BlobCache>> blobs);

class Prefetcher {
 public:
  // `extra_paths`: absolute paths in the image to prefetch besides the
  // bootstrap's table (the API's prefetch_files).
  Prefetcher(std::shared_ptr<const format::Bootstrap> boot, std::vector<std::shared_ptr<storage::BlobCache>> blobs,
             PrefetchConfig cfg, std::vector<std::string> extra_paths = {});
  // Same, into any target; with `only_blob`, just the ranges of that blob.
  Prefetcher(std::shared_ptr<const format::Bootstrap> boot, std::shared_ptr<PrefetchTarget> target,
             PrefetchConfig cfg, std::vector<std::string> extra_paths = {},
             std::optional<uint32_t> only_blob = std::nullopt);
  ~Prefetcher();

  void start();
  // Ask the threads to stop, without waiting.
  void request_stop() { stop_ = true; }
  // Ask the threads to stop and join them; a fetch in flight finishes first.
  void stop();
  PrefetchStats stats() const;

 private:
  void run();
  void worker(const std::vector<PrefetchRange>& ranges);
  bool sleep_ns(uint64_t ns);  // false when stopped meanwhile

  std::shared_ptr<const format::Bootstrap> boot_;
  std::shared_ptr<PrefetchTarget> target_;
  std::optional<uint32_t> only_blob_;
  PrefetchConfig cfg_;
  std::vector<std::string> extra_paths_;
  TokenBucket bucket_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> next_{0};
  std::atomic<unsigned> active_{0};  // fetches in flight
  std::atomic<uint64_t> total_{0}, done_{0}, bytes_{0}, errors_{0};
  std::atomic<bool> finished_{false};
};

}  // namespace nydus::runtime
