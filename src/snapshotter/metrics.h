// Prometheus metrics of the snapshotter, in the text exposition format 0.0.4,
// with nydus-snapshotter v0.15's names where it has one (pkg/metrics/data):
//   snapshotter_snapshot_operation_elapsed_milliseconds{snapshot_operation}  histogram
//     (PREPARE, MOUNTS, REMOVE, CLEANUP; upstream's buckets)
//   nydusd_counts{version}                       gauge, running daemons by package_ver
//   snapshotter_cache_usage_kilobytes            gauge, disk usage of <root>/cache
//   snapshotter_cache_blobs_deleted_total        counter, blob IDs removed by the GC
//   snapshotter_cache_blob_deletion_errors_total counter
//   snapshotter_cache_blobs_in_use               gauge, blob IDs the last GC kept
// and, upstream having none for them:
//   snapshotter_snapshots{kind}                  gauge, snapshots by kind (active, view, committed)
//   snapshotter_nydus_layers_skipped_total       counter, Nydus data layers answered
//                                                AlreadyExists (never downloaded)
//   snapshotter_config_info{fs_driver,requested_fs_driver,daemon_mode}  gauge, always 1:
//                                                the driver --fs-driver (e.g. auto) resolved to
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace nydus::snapshotter {

enum class SnapshotOp { kPrepare, kMounts, kRemove, kCleanup };

class Metrics {
 public:
  void observe(SnapshotOp op, std::chrono::nanoseconds elapsed);
  std::atomic<uint64_t> blobs_deleted{0};
  std::atomic<uint64_t> blob_deletion_errors{0};
  std::atomic<uint64_t> blobs_in_use{0};
  std::atomic<uint64_t> nydus_layers_skipped{0};
  // Set once before the metrics server starts.
  struct Config {
    std::string fs_driver, requested_fs_driver, daemon_mode;
  };
  Config config;

  // What a scrape reads from the snapshotter at that moment.
  struct Gauges {
    std::map<std::string, uint64_t> snapshots_by_kind;
    std::map<std::string, uint64_t> daemons_by_version;
    uint64_t cache_usage_bytes = 0;
  };
  std::string render(const Gauges& g) const;

 private:
  // nydus-snapshotter's defaultDurationBuckets (milliseconds).
  static constexpr std::array<double, 14> kBuckets{.5, 1, 5, 10, 50, 100, 150, 200, 250, 300, 350, 400, 600, 1000};
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> counts{};  // per bucket, not cumulative
    uint64_t count = 0;
    double sum_ms = 0;
  };
  mutable std::mutex mu_;
  std::array<Histogram, 4> ops_{};
};

// Times a snapshot operation into `m` when it goes out of scope.
class OpTimer {
 public:
  OpTimer(Metrics& m, SnapshotOp op) : m_(m), op_(op), start_(std::chrono::steady_clock::now()) {}
  ~OpTimer() { m_.observe(op_, std::chrono::steady_clock::now() - start_); }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  Metrics& m_;
  SnapshotOp op_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace nydus::snapshotter
