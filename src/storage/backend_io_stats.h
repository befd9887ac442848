// Upstream nydusd's BackendMetrics (utils/src/metrics.rs): every blob read
// from a backend, by count, bytes, errors and latency, also bucketed by
// request size and latency (GET /api/v1/metrics/backend). Recorded by the
// callers that read blob data (the blob cache), so every backend type counts
// the same way.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include <nlohmann/json.hpp>

namespace nydus::storage {

class BackendIoStats {
 public:
  static constexpr size_t kBuckets = 8;

  // Upstream's buckets: request size (<1K, 1K~, 4K~, 16K~, 64K~, 128K~,
  // 512K~, 1M~) and latency (<=1ms, <=20ms, <=50ms, <=100ms, <=500ms, <=1s,
  // <=2s, >2s).
  static size_t size_index(uint64_t size) {
    const unsigned lz = size >> 10 == 0 ? 64u : unsigned(__builtin_clzll(size >> 10));
    const unsigned shift = ((lz > 53u ? lz : 53u) - 53u) << 2;
    return size_t((0x0112'2334'5567ull >> shift) & 0xf);
  }
  static size_t latency_index(uint64_t ms) {
    if (ms <= 1) return 0;
    if (ms <= 20) return 1;
    if (ms <= 50) return 2;
    if (ms <= 100) return 3;
    if (ms <= 500) return 4;
    if (ms <= 1000) return 5;
    if (ms <= 2000) return 6;
    return 7;
  }

  void record(uint64_t size, uint64_t millis, bool error) {
    constexpr auto r = std::memory_order_relaxed;
    read_count_.fetch_add(1, r);
    if (error) read_errors_.fetch_add(1, r);
    read_amount_.fetch_add(size, r);
    latency_total_.fetch_add(millis, r);
    const size_t si = size_index(size), li = latency_index(millis);
    latency_by_size_[si].fetch_add(millis, r);
    count_by_size_[si].fetch_add(1, r);
    latency_sizes_[si][li].fetch_add(1, r);
  }

  // Upstream's serde output of BackendMetrics (its `id` is not serialized).
  nlohmann::json to_json(const char* backend_type) const {
    using nlohmann::json;
    auto arr = [](const std::array<std::atomic<uint64_t>, kBuckets>& a) {
      json out = json::array();
      for (const auto& v : a) out.push_back(v.load(std::memory_order_relaxed));
      return out;
    };
    json sizes = json::array();
    for (const auto& row : latency_sizes_) sizes.push_back(arr(row));
    return json{{"backend_type", backend_type},
                {"read_count", read_count_.load()},
                {"read_errors", read_errors_.load()},
                {"read_amount_total", read_amount_.load()},
                {"read_cumulative_latency_millis_total", latency_total_.load()},
                {"read_cumulative_latency_millis_dist", arr(latency_by_size_)},
                {"read_count_block_size_dist", arr(count_by_size_)},
                {"read_latency_sizes_dist", sizes}};
  }

 private:
  std::atomic<uint64_t> read_count_{0}, read_errors_{0}, read_amount_{0}, latency_total_{0};
  std::array<std::atomic<uint64_t>, kBuckets> latency_by_size_{}, count_by_size_{};
  std::array<std::array<std::atomic<uint64_t>, kBuckets>, kBuckets> latency_sizes_{};
};

}  // namespace nydus::storage
