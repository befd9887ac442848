#include "runtime/metrics_json.h"

namespace nydus::runtime {

using nlohmann::json;

json fs_io_stats_json(const runtime::FsIoStats* stats, const std::string& id) {
  static const runtime::FsIoStats kNone;
  return (stats ? *stats : kNone).global_json(id);
}

json blobcache_json(const std::vector<std::shared_ptr<storage::BlobCache>>& caches,
                    const std::filesystem::path& store_path, unsigned prefetch_workers) {
  uint64_t partial = 0, whole = 0, total = 0, entries = 0, pf_bytes = 0, pf_requests = 0, pf_chunks = 0,
           pf_millis = 0, pf_first = 0, pf_last = 0;
  bool all_ready = !caches.empty();
  json files = json::array(), blobs = json::array();
  for (const auto& c : caches) {
    const auto m = c->metrics();
    files.push_back(c->info().blob_id + ".blob.data");
    partial += m.partial_hits;
    whole += m.whole_hits;
    total += m.read_requests;
    entries += m.chunks_ready;
    pf_bytes += m.prefetch_bytes;
    pf_requests += m.prefetch_requests;
    pf_chunks += m.prefetch_chunks;
    pf_millis += m.prefetch_millis;
    if (m.prefetch_first_ms && (!pf_first || m.prefetch_first_ms < pf_first)) pf_first = m.prefetch_first_ms;
    pf_last = std::max(pf_last, m.prefetch_last_ms);
    all_ready = all_ready && m.chunks_ready >= m.chunks_total;
    blobs.push_back(json{{"id", c->info().blob_id},
                         {"chunks_total", m.chunks_total},
                         {"chunks_ready", m.chunks_ready},
                         {"hits", m.hits},
                         {"misses", m.misses},
                         {"backend_requests", m.backend_requests},
                         {"backend_bytes", m.backend_bytes},
                         {"digest_failures", m.digest_failures},
                         {"prefetch_data_amount", m.prefetch_bytes}});
  }
  return json{{"underlying_files", files},
              {"store_path", store_path.string()},
              {"partial_hits", partial},
              {"whole_hits", whole},
              {"total", total},
              {"entries_count", entries},
              {"prefetch_data_amount", pf_bytes},
              {"prefetch_requests_count", pf_requests},
              {"prefetch_workers", prefetch_workers},
              {"prefetch_unmerged_chunks", pf_chunks},
              {"prefetch_cumulative_time_millis", pf_millis},
              {"prefetch_begin_time_secs", pf_first / 1000},
              {"prefetch_begin_time_millis", pf_first % 1000},
              {"prefetch_end_time_secs", pf_last / 1000},
              {"prefetch_end_time_millis", pf_last % 1000},
              {"buffered_backend_size", 0},  // nothing is buffered between backend and cache here
              {"data_all_ready", all_ready},
              {"blobs", blobs}};
}

json backend_json(const storage::Backend* backend) {
  static const storage::BackendIoStats kNone;
  if (!backend) return kNone.to_json("");
  return backend->io_stats().to_json(backend->type());
}

json inflight_json(const std::vector<runtime::InflightOp>& ops) {
  if (ops.empty()) return nullptr;
  json arr = json::array();
  for (const auto& op : ops)
    arr.push_back(json{{"inode", op.inode}, {"opcode", op.opcode}, {"unique", op.unique},
                       {"timestamp_secs", op.timestamp_secs}});
  return arr;
}

}  // namespace nydus::runtime

#if __has_include("common/build_info.h")
#include "common/build_info.h"
#define NYDUS_HAVE_BUILD_INFO 1
#endif

namespace nydus::runtime {

nlohmann::json build_time_info_json() {
#ifdef NYDUS_HAVE_BUILD_INFO
  const BuildInfo& b = build_info();
  return json{{"package_ver", b.package_ver}, {"git_commit", b.git_commit}, {"build_time", b.build_time},
              {"profile", b.profile}, {"rustc", b.compiler}};
#else
#ifndef NYDUS_VERSION
#define NYDUS_VERSION "unknown"
#endif
#ifndef NYDUS_GIT_COMMIT
#define NYDUS_GIT_COMMIT "unknown"
#endif
#ifndef NYDUS_BUILD_TIME
#define NYDUS_BUILD_TIME "unknown"
#endif
#ifndef NYDUS_PROFILE
#define NYDUS_PROFILE "unknown"
#endif
  return json{{"package_ver", NYDUS_VERSION}, {"git_commit", NYDUS_GIT_COMMIT}, {"build_time", NYDUS_BUILD_TIME},
              {"profile", NYDUS_PROFILE}, {"rustc", "unknown"}};
#endif
}

}  // namespace nydus::runtime
