#include "runtime/prefetch.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "storage/demand_gauge.h"

namespace nydus::runtime {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr size_t kMaxDepth = 4096;
constexpr auto kYieldStep = std::chrono::milliseconds(2);
constexpr auto kYieldLimit = std::chrono::milliseconds(500);
constexpr unsigned kWhileDemand = 4;

// Regular files below (and including) `nid`, depth first, each once.
Status collect_files(const format::Bootstrap& boot, uint64_t nid, std::unordered_set<uint64_t>& seen,
                     std::vector<format::InodeView>& files, size_t depth) {
  if (depth > kMaxDepth) return corrupt("directory tree deeper than {}", kMaxDepth);
  if (!seen.insert(nid).second) return ok();  // hardlink or a directory loop
  NYDUS_ASSIGN_OR_RETURN(format::InodeView iv, boot.inode(nid));
  if (iv.is_reg()) {
    files.push_back(iv);
    return ok();
  }
  if (!iv.is_dir()) return ok();
  std::vector<uint64_t> children;
  NYDUS_TRY(boot.for_each_dirent(iv, [&](const format::DirEntryView& d) {
    if (d.name != "." && d.name != "..") children.push_back(d.nid);
    return true;
  }));
  for (uint64_t c : children) NYDUS_TRY(collect_files(boot, c, seen, files, depth + 1));
  return ok();
}

}  // namespace

Result<std::vector<PrefetchRange>> plan_prefetch(const format::Bootstrap& boot, const std::vector<uint64_t>& nids,
                                                 uint64_t merging_size) {
  std::unordered_set<uint64_t> seen;
  std::vector<format::InodeView> files;
  for (uint64_t nid : nids) NYDUS_TRY(collect_files(boot, nid, seen, files, 0));

  const uint64_t cs = boot.chunk_size();
  if (cs == 0) return corrupt("chunk size 0");
  merging_size = std::max<uint64_t>(merging_size, 1);
  std::set<std::pair<uint32_t, uint32_t>> chunks_seen;  // (blob, blkaddr): dedup'd chunks once
  struct Piece {
    PrefetchRange r;
    size_t rank;  // position in the table's order
  };
  std::vector<Piece> chunks;
  for (const auto& f : files) {
    NYDUS_ASSIGN_OR_RETURN(std::vector<format::ChunkRef> refs, boot.chunks(f));
    for (size_t i = 0; i < refs.size(); ++i) {
      const auto& r = refs[i];
      if (!chunks_seen.emplace(r.blob_index, r.blkaddr).second) continue;
      chunks.push_back({{r.blob_index, uint64_t(r.blkaddr) << format::kBlockBits, std::min<uint64_t>(cs, f.size - i * cs)},
                        chunks.size()});
    }
  }
  // Merged in blob order: files stored side by side (a prefetch list the
  // builder laid out first, a directory's files) become few large requests
  // however the table orders them (a request per file costs a round trip and
  // the registry's per-request work). Fetched in the table's order: a range
  // goes where its earliest listed chunk is, so what is read first comes first.
  std::sort(chunks.begin(), chunks.end(), [](const Piece& a, const Piece& b) {
    return std::pair(a.r.blob_index, a.r.offset) < std::pair(b.r.blob_index, b.r.offset);
  });
  std::vector<Piece> merged;
  for (const auto& c : chunks) {
    if (!merged.empty()) {
      Piece& prev = merged.back();
      // Chunk data are 4 KiB aligned: the next chunk starts at the aligned end.
      const uint64_t prev_end =
          (prev.r.offset + prev.r.len + format::kBlockSize - 1) & ~uint64_t(format::kBlockSize - 1);
      if (prev.r.blob_index == c.r.blob_index && (c.r.offset == prev_end || c.r.offset == prev.r.offset + prev.r.len) &&
          c.r.offset + c.r.len - prev.r.offset <= merging_size) {
        prev.r.len = c.r.offset + c.r.len - prev.r.offset;
        prev.rank = std::min(prev.rank, c.rank);
        continue;
      }
    }
    merged.push_back(c);
  }
  std::sort(merged.begin(), merged.end(), [](const Piece& a, const Piece& b) { return a.rank < b.rank; });
  std::vector<PrefetchRange> out;
  out.reserve(merged.size());
  for (const auto& m : merged) out.push_back(m.r);
  return out;
}

TokenBucket::TokenBucket(uint64_t rate) : rate_(double(rate)), tokens_(double(rate)), last_ns_(now_ns()) {}

uint64_t TokenBucket::reserve(uint64_t n) {
  if (rate_ <= 0) return 0;
  std::lock_guard lk(mu_);
  const int64_t t = now_ns();
  tokens_ = std::min(rate_, tokens_ + rate_ * double(t - last_ns_) / 1e9);  // burst: one second's worth
  last_ns_ = t;
  tokens_ -= double(n);
  if (tokens_ >= 0) return 0;
  return uint64_t(-tokens_ / rate_ * 1e9);
}

namespace {

class BlobCacheTarget : public PrefetchTarget {
 public:
  explicit BlobCacheTarget(std::vector<std::shared_ptr<storage::BlobCache>> blobs) : blobs_(std::move(blobs)) {}
  bool is_ready(const PrefetchRange& r) override {
    auto* c = cache(r);
    return c && c->is_ready(r.offset, r.len);
  }
  Status fetch(const PrefetchRange& r) override {
    auto* c = cache(r);
    if (!c) return errorf(Errc::kCorrupt, "prefetch range names blob {} of {}", r.blob_index, blobs_.size());
    return c->fetch_range(r.offset, r.len, true);
  }
  bool demand_waiting() override { return storage::DemandGauge::waiting() > 0; }

 private:
  storage::BlobCache* cache(const PrefetchRange& r) {
    return r.blob_index < blobs_.size() ? blobs_[r.blob_index].get() : nullptr;
  }
  std::vector<std::shared_ptr<storage::BlobCache>> blobs_;
};

}  // namespace

std::shared_ptr<PrefetchTarget> blob_cache_target(std::vector<std::shared_ptr<storage::BlobCache>> blobs) {
  return std::make_shared<BlobCacheTarget>(std::move(blobs));
}

Prefetcher::Prefetcher(std::shared_ptr<const format::Bootstrap> boot,
                       std::vector<std::shared_ptr<storage::BlobCache>> blobs, PrefetchConfig cfg,
                       std::vector<std::string> extra_paths)
    : Prefetcher(std::move(boot), blob_cache_target(std::move(blobs)), cfg, std::move(extra_paths)) {}

Prefetcher::Prefetcher(std::shared_ptr<const format::Bootstrap> boot, std::shared_ptr<PrefetchTarget> target,
                       PrefetchConfig cfg, std::vector<std::string> extra_paths, std::optional<uint32_t> only_blob)
    : boot_(std::move(boot)),
      target_(std::move(target)),
      only_blob_(only_blob),
      cfg_(cfg),
      extra_paths_(std::move(extra_paths)),
      bucket_(cfg.bandwidth_rate) {}

Prefetcher::~Prefetcher() { stop(); }

void Prefetcher::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { run(); });
}

void Prefetcher::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

bool Prefetcher::sleep_ns(uint64_t ns) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
  while (!stop_) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return true;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(20)));
  }
  return false;
}

void Prefetcher::run() {
  std::vector<uint64_t> nids;
  if (cfg_.prefetch_all) {
    nids.push_back(boot_->root_nid());
  } else {
    for (uint32_t n : boot_->prefetch_nids()) nids.push_back(n);
    for (const auto& p : extra_paths_) {
      if (auto nid = boot_->resolve(p)) nids.push_back(*nid);
      else spdlog::warn("prefetch: {}: {}", p, nid.error().message);
    }
  }
  auto plan = plan_prefetch(*boot_, nids, cfg_.merging_size);
  if (!plan) {
    spdlog::warn("prefetch: planning failed: {}", plan.error().message);
    finished_ = true;
    return;
  }
  if (only_blob_)
    std::erase_if(*plan, [&](const PrefetchRange& r) { return r.blob_index != *only_blob_; });
  total_ = plan->size();
  spdlog::info("prefetch: {} ranges on {} threads", plan->size(), cfg_.threads_count);
  std::vector<std::thread> workers;
  const unsigned n = std::clamp<unsigned>(cfg_.threads_count, 1, 64);
  for (unsigned i = 0; i < n && i < plan->size(); ++i) workers.emplace_back([this, &plan] { worker(*plan); });
  for (auto& w : workers) w.join();
  finished_ = true;
  spdlog::info("prefetch: done ({} of {} ranges, {} bytes, {} errors{})", done_.load(), total_.load(),
               bytes_.load(), errors_.load(), stop_ ? ", stopped" : "");
}

void Prefetcher::worker(const std::vector<PrefetchRange>& ranges) {
  while (!stop_) {
    const size_t i = next_.fetch_add(1);
    if (i >= ranges.size()) return;
    const PrefetchRange& r = ranges[i];
    if (target_->is_ready(r)) {
      done_++;
      continue;
    }
    if (!sleep_ns(bucket_.reserve(r.len))) return;
    // While a reader waits on a miss, at most kWhileDemand of our fetches run
    // (eight would leave its request a thin share of the link; none
    // would stall what the reader needs next), and a worker holds back at
    // most kYieldLimit per range, so a steady stream of misses cannot starve us.
    // A slot is taken atomically, so the limit holds among the workers.
    for (auto waited = std::chrono::milliseconds(0);;) {
      unsigned a = active_.load();
      if (waited < kYieldLimit && a >= kWhileDemand && target_->demand_waiting()) {
        if (!sleep_ns(uint64_t(std::chrono::nanoseconds(kYieldStep).count()))) return;
        waited += kYieldStep;
        continue;
      }
      if (active_.compare_exchange_weak(a, a + 1)) break;
    }
    auto st = target_->fetch(r);
    active_--;
    if (!st) {
      errors_++;
      spdlog::debug("prefetch: blob {} [{:#x}, +{:#x}): {}", r.blob_index, r.offset, r.len, st.error().message);
      continue;
    }
    done_++;
    bytes_ += r.len;
  }
}

PrefetchStats Prefetcher::stats() const {
  return PrefetchStats{total_.load(), done_.load(), bytes_.load(), errors_.load(), finished_.load()};
}

}  // namespace nydus::runtime
