#include "snapshotter/metrics.h"

#include <fmt/format.h>

namespace nydus::snapshotter {
namespace {

constexpr const char* kOpNames[] = {"PREPARE", "MOUNTS", "REMOVE", "CLEANUP"};

// A label value as the exposition format wants it: \, " and newline escaped.
std::string label_value(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

void Metrics::observe(SnapshotOp op, std::chrono::nanoseconds elapsed) {
  double ms = std::chrono::duration<double, std::milli>(elapsed).count();
  std::lock_guard lk(mu_);
  Histogram& h = ops_[static_cast<size_t>(op)];
  ++h.count;
  h.sum_ms += ms;
  for (size_t i = 0; i < kBuckets.size(); ++i)
    if (ms <= kBuckets[i]) {
      ++h.counts[i];
      break;
    }
}

std::string Metrics::render(const Gauges& g) const {
  std::string out;
  header(out, "snapshotter_snapshot_operation_elapsed_milliseconds", "histogram",
         "The elapsed time for snapshot events.");
  {
    std::lock_guard lk(mu_);
    for (size_t op = 0; op < ops_.size(); ++op) {
      const Histogram& h = ops_[op];
      uint64_t cumulative = 0;
      for (size_t i = 0; i < kBuckets.size(); ++i) {
        cumulative += h.counts[i];
        out += fmt::format("snapshotter_snapshot_operation_elapsed_milliseconds_bucket{{snapshot_operation=\"{}\",le=\"{}\"}} {}\n",
                           kOpNames[op], kBuckets[i], cumulative);
      }
      out += fmt::format("snapshotter_snapshot_operation_elapsed_milliseconds_bucket{{snapshot_operation=\"{}\",le=\"+Inf\"}} {}\n",
                         kOpNames[op], h.count);
      out += fmt::format("snapshotter_snapshot_operation_elapsed_milliseconds_sum{{snapshot_operation=\"{}\"}} {}\n",
                         kOpNames[op], h.sum_ms);
      out += fmt::format("snapshotter_snapshot_operation_elapsed_milliseconds_count{{snapshot_operation=\"{}\"}} {}\n",
                         kOpNames[op], h.count);
    }
  }
  header(out, "nydusd_counts", "gauge", "The counts of nydus daemon.");
  for (const auto& [version, n] : g.daemons_by_version)
    out += fmt::format("nydusd_counts{{version=\"{}\"}} {}\n", label_value(version), n);
  header(out, "snapshotter_cache_usage_kilobytes", "gauge", "Disk usage of snapshotter local cache.");
  out += fmt::format("snapshotter_cache_usage_kilobytes {}\n", g.cache_usage_bytes / 1024);
  header(out, "snapshotter_cache_blobs_deleted_total", "counter", "Total number of cache blobs deleted during cleanup.");
  out += fmt::format("snapshotter_cache_blobs_deleted_total {}\n", blobs_deleted.load());
  header(out, "snapshotter_cache_blob_deletion_errors_total", "counter",
         "Total number of errors encountered while deleting cache blobs.");
  out += fmt::format("snapshotter_cache_blob_deletion_errors_total {}\n", blob_deletion_errors.load());
  header(out, "snapshotter_cache_blobs_in_use", "gauge", "Number of cache blobs kept in use by the last cache GC.");
  out += fmt::format("snapshotter_cache_blobs_in_use {}\n", blobs_in_use.load());
  header(out, "snapshotter_snapshots", "gauge", "Snapshots by kind.");
  for (const char* kind : {"active", "view", "committed"}) {
    auto it = g.snapshots_by_kind.find(kind);
    out += fmt::format("snapshotter_snapshots{{kind=\"{}\"}} {}\n", kind, it == g.snapshots_by_kind.end() ? 0 : it->second);
  }
  header(out, "snapshotter_nydus_layers_skipped_total", "counter",
         "Nydus data layers answered AlreadyExists (never downloaded by containerd).");
  out += fmt::format("snapshotter_nydus_layers_skipped_total {}\n", nydus_layers_skipped.load());
  if (!config.fs_driver.empty()) {
    header(out, "snapshotter_config_info", "gauge",
           "The filesystem driver in use (what --fs-driver resolved to) and the daemon mode.");
    out += fmt::format("snapshotter_config_info{{fs_driver=\"{}\",requested_fs_driver=\"{}\",daemon_mode=\"{}\"}} 1\n",
                       label_value(config.fs_driver), label_value(config.requested_fs_driver),
                       label_value(config.daemon_mode));
  }
  return out;
}

}  // namespace nydus::snapshotter
