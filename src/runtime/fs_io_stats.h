// Upstream nydusd's filesystem I/O statistics (utils/src/metrics.rs
// FsIoStats), counted where every FUSE request passes: the channel sees each
// request's header when it is read and its reply when it is written, so it
// knows the operation, the inode, whether it failed, how long it took and how
// many bytes a READ returned, without any code in the operation handlers.
// It also keeps the requests in progress (GET /api/v1/metrics/inflight, the
// snapshotter's hung-IO detection), per-inode counters when
// "iostats_files" is set, access patterns and the latest read files.
// It lives in runtime, not fuse: it needs no libfuse, and the fanotify mode
// answers GET /api/v1/metrics with its (all-zero) shape too.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/u64_table.h"

namespace nydus::runtime {

// Upstream's StatsFop order: the index of each fop_hits/fop_errors entry.
enum class StatsFop : uint8_t {
  kGetattr, kReadlink, kOpen, kRelease, kRead, kStatfs, kGetxattr, kListxattr, kOpendir, kLookup, kReaddir,
  kReaddirplus, kAccess, kForget, kBatchForget, kMax
};
constexpr size_t kStatsFopCount = size_t(StatsFop::kMax);
constexpr size_t kBlockSizeBuckets = 8;   // <1K, 1K~, 4K~, 16K~, 64K~, 128K~, 512K~, 1M~
constexpr size_t kLatencyBuckets = 8;     // <=200us, <=1ms, <=20ms, <=50ms, <=500ms, <=1s, <=2s, >2s

// The StatsFop of a FUSE opcode, or kMax when upstream does not count it.
StatsFop stats_fop_of(uint32_t opcode);
// Upstream's bucket of a request size, and of a latency in microseconds.
size_t request_size_index(uint64_t size);
size_t latency_micros_index(uint64_t micros);

struct InflightOp {
  uint64_t inode = 0;
  uint32_t opcode = 0;
  uint64_t unique = 0;
  uint64_t timestamp_secs = 0;  // wall clock, when the request was read
};

class FsIoStats {
 public:
  void set_files_enabled(bool on) { files_enabled_ = on; }
  void set_access_pattern_enabled(bool on) { pattern_enabled_ = on; }
  void set_latest_read_files_enabled(bool on) { latest_enabled_ = on; }

  // A request was read from the kernel / its reply written (`error` is the
  // reply's negative errno or 0, `payload` the bytes after the header).
  void on_request(uint32_t opcode, uint64_t unique, uint64_t nodeid);
  void on_reply(uint64_t unique, int32_t error, uint64_t payload);

  std::vector<InflightOp> inflight() const;
  // The JSON bodies upstream answers with.
  nlohmann::json global_json(const std::string& id) const;  // GET /api/v1/metrics
  nlohmann::json files_json() const;                        // GET /api/v1/metrics/files
  nlohmann::json latest_read_files_json();                  // ?latest=true (clears the set)
  nlohmann::json access_patterns_json() const;              // GET /api/v1/metrics/pattern

 private:
  using Counters = std::array<std::atomic<uint64_t>, kStatsFopCount>;
  struct Pending {
    uint32_t opcode;
    uint64_t inode;
    std::chrono::steady_clock::time_point start;
    uint64_t wall_secs;
  };
  struct FileCounters {
    uint64_t total_fops = 0, data_read = 0;
    std::array<uint64_t, kBlockSizeBuckets> block_count_read{};
    std::array<uint64_t, kStatsFopCount> fop_hits{}, fop_errors{};
  };
  struct Pattern {
    uint64_t nr_read = 0, first_secs = 0;
    uint32_t first_nanos = 0;
  };
  void settle(const Pending& p, int32_t error, uint64_t payload);

  std::atomic<bool> files_enabled_{false}, pattern_enabled_{false}, latest_enabled_{false};
  std::atomic<uint64_t> nr_opens_{0}, data_read_{0};
  std::array<std::atomic<uint64_t>, kBlockSizeBuckets> block_count_read_{};
  Counters fop_hits_{}, fop_errors_{}, latency_total_{};
  std::array<std::atomic<uint64_t>, kLatencyBuckets> read_latency_dist_{};

  // Requests in progress by unique, sharded so the workers, each adding and
  // removing one per request, rarely meet on a lock.
  struct PendingShard {
    mutable std::mutex mu;
    U64Table<Pending> map{kMaxPendingPerShard};  // no allocation per request
  };
  static constexpr size_t kPendingShards = 16;
  // Never grows past this even if replies went missing.
  static constexpr size_t kMaxPendingPerShard = (1 << 16) / kPendingShards;
  PendingShard& shard_of(uint64_t unique) { return pending_[(unique >> 1) % kPendingShards]; }
  std::array<PendingShard, kPendingShards> pending_;
  mutable std::mutex files_mu_;                    // the per-inode maps below
  std::unordered_map<uint64_t, FileCounters> files_;
  std::unordered_map<uint64_t, Pattern> patterns_;
  std::set<uint64_t> latest_;
};

}  // namespace nydus::runtime
