#include "runtime/fs_io_stats.h"

#include <linux/fuse.h>

#include <algorithm>
#include <bit>

namespace nydus::runtime {

using nlohmann::json;

namespace {

uint64_t ld(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }

template <size_t N>
json to_json(const std::array<std::atomic<uint64_t>, N>& a) {
  json arr = json::array();
  for (const auto& v : a) arr.push_back(ld(v));
  return arr;
}

uint64_t wall_secs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count());
}

}  // namespace

StatsFop stats_fop_of(uint32_t opcode) {
  switch (opcode) {
    case FUSE_GETATTR: return StatsFop::kGetattr;
    case FUSE_READLINK: return StatsFop::kReadlink;
    case FUSE_OPEN: return StatsFop::kOpen;
    case FUSE_RELEASE: return StatsFop::kRelease;
    case FUSE_READ: return StatsFop::kRead;
    case FUSE_STATFS: return StatsFop::kStatfs;
    case FUSE_GETXATTR: return StatsFop::kGetxattr;
    case FUSE_LISTXATTR: return StatsFop::kListxattr;
    case FUSE_OPENDIR: return StatsFop::kOpendir;
    case FUSE_LOOKUP: return StatsFop::kLookup;
    case FUSE_READDIR: return StatsFop::kReaddir;
    case FUSE_READDIRPLUS: return StatsFop::kReaddirplus;
    case FUSE_ACCESS: return StatsFop::kAccess;
    case FUSE_FORGET: return StatsFop::kForget;
    case FUSE_BATCH_FORGET: return StatsFop::kBatchForget;
    default: return StatsFop::kMax;
  }
}

size_t request_size_index(uint64_t size) {
  // Upstream's table lookup: KiB magnitude -> bucket.
  const unsigned lz = unsigned(std::countl_zero(size >> 10));
  const unsigned shift = (std::max(lz, 53u) - 53u) << 2;
  return size_t((0x0112'2334'5567ull >> shift) & 0xf);
}

size_t latency_micros_index(uint64_t us) {
  if (us <= 200) return 0;
  if (us <= 1'000) return 1;
  if (us <= 20'000) return 2;
  if (us <= 50'000) return 3;
  if (us <= 500'000) return 4;
  if (us <= 1'000'000) return 5;
  if (us <= 2'000'000) return 6;
  return 7;
}

void FsIoStats::on_request(uint32_t opcode, uint64_t unique, uint64_t nodeid) {
  // Requests the kernel expects no reply to are settled now.
  if (opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET) {
    fop_hits_[size_t(stats_fop_of(opcode))].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (opcode == FUSE_INTERRUPT || opcode == FUSE_NOTIFY_REPLY) return;
  Pending p{opcode, nodeid, std::chrono::steady_clock::now(), wall_secs()};
  PendingShard& sh = shard_of(unique);
  std::lock_guard lk(sh.mu);
  sh.map.put(unique, p);  // false at the bound: that request goes unaccounted
}

void FsIoStats::on_reply(uint64_t unique, int32_t error, uint64_t payload) {
  Pending p;
  {
    PendingShard& sh = shard_of(unique);
    std::lock_guard lk(sh.mu);
    if (!sh.map.erase(unique, &p)) return;
  }
  settle(p, error, payload);
}

void FsIoStats::settle(const Pending& p, int32_t error, uint64_t payload) {
  const StatsFop fop = stats_fop_of(p.opcode);
  if (fop == StatsFop::kMax) return;
  const size_t f = size_t(fop);
  const bool ok = error == 0;
  const uint64_t bytes = ok && fop == StatsFop::kRead ? payload : 0;
  const uint64_t us = uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now() - p.start)
                                   .count());
  latency_total_[f].fetch_add(us, std::memory_order_relaxed);
  if (fop == StatsFop::kRead) {
    block_count_read_[request_size_index(bytes)].fetch_add(1, std::memory_order_relaxed);
    read_latency_dist_[latency_micros_index(us)].fetch_add(1, std::memory_order_relaxed);
  }
  if (ok) {
    fop_hits_[f].fetch_add(1, std::memory_order_relaxed);
    if (fop == StatsFop::kRead) data_read_.fetch_add(bytes, std::memory_order_relaxed);
    if (fop == StatsFop::kOpen) nr_opens_.fetch_add(1, std::memory_order_relaxed);
    if (fop == StatsFop::kRelease) nr_opens_.fetch_sub(1, std::memory_order_relaxed);
  } else {
    fop_errors_[f].fetch_add(1, std::memory_order_relaxed);
  }
  const bool files = files_enabled_.load(std::memory_order_relaxed);
  const bool pattern = pattern_enabled_.load(std::memory_order_relaxed) && fop == StatsFop::kRead;
  const bool latest = latest_enabled_.load(std::memory_order_relaxed) && fop == StatsFop::kRead && ok;
  if (!files && !pattern && !latest) return;
  std::lock_guard lk(files_mu_);
  if (files) {
    FileCounters& c = files_[p.inode];
    c.total_fops++;
    if (ok) c.fop_hits[f]++;
    else c.fop_errors[f]++;
    if (fop == StatsFop::kRead) {
      c.data_read += bytes;
      c.block_count_read[request_size_index(bytes)]++;
    }
  }
  if (pattern) {
    Pattern& pt = patterns_[p.inode];
    if (pt.nr_read++ == 0) {
      const auto t = std::chrono::system_clock::now().time_since_epoch();
      pt.first_secs = uint64_t(std::chrono::duration_cast<std::chrono::seconds>(t).count());
      pt.first_nanos = uint32_t(std::chrono::duration_cast<std::chrono::nanoseconds>(t).count() % 1'000'000'000);
    }
  }
  if (latest) latest_.insert(p.inode);
}

std::vector<InflightOp> FsIoStats::inflight() const {
  std::vector<InflightOp> out;
  for (const PendingShard& sh : pending_) {
    std::lock_guard lk(sh.mu);
    sh.map.for_each([&](uint64_t unique, const Pending& p) { out.push_back({p.inode, p.opcode, unique, p.wall_secs}); });
  }
  std::sort(out.begin(), out.end(), [](const InflightOp& a, const InflightOp& b) { return a.unique < b.unique; });
  return out;
}

json FsIoStats::global_json(const std::string& id) const {
  // Field order and types as upstream's serde output of FsIoStats.
  return json{{"files_account_enabled", files_enabled_.load()},
              {"access_pattern_enabled", pattern_enabled_.load()},
              {"record_latest_read_files_enabled", latest_enabled_.load()},
              {"measure_latency", true},
              {"id", id},
              {"nr_opens", ld(nr_opens_)},
              {"data_read", ld(data_read_)},
              {"block_count_read", to_json(block_count_read_)},
              {"fop_hits", to_json(fop_hits_)},
              {"fop_errors", to_json(fop_errors_)},
              {"fop_cumulative_latency_total", to_json(latency_total_)},
              {"read_latency_dist", to_json(read_latency_dist_)}};
}

json FsIoStats::files_json() const {
  json out = json::object();
  std::lock_guard lk(files_mu_);
  for (const auto& [ino, c] : files_)
    out[std::to_string(ino)] = json{{"total_fops", c.total_fops},
                                    {"data_read", c.data_read},
                                    {"block_count_read", c.block_count_read},
                                    {"fop_hits", c.fop_hits},
                                    {"fop_errors", c.fop_errors}};
  return out;
}

json FsIoStats::latest_read_files_json() {
  std::lock_guard lk(files_mu_);
  json out(latest_);
  latest_.clear();
  return out;
}

json FsIoStats::access_patterns_json() const {
  json out = json::array();
  std::lock_guard lk(files_mu_);
  for (const auto& [ino, p] : patterns_)
    if (p.nr_read > 0)
      out.push_back(json{{"ino", ino},
                         {"nr_read", p.nr_read},
                         {"first_access_time_secs", p.first_secs},
                         {"first_access_time_nanos", p.first_nanos}});
  return out;
}

}  // namespace nydus::runtime
