"""The Go structs nydus-snapshotter v0.15.15 (pkg/daemon/types/types.go,
pkg/daemon/client.go) and upstream nydusctl v2.4.4 (src/bin/nydusctl/commands.rs)
decode from nydusd's API, as go_structs schemas. Field names and Go types are
copied from that source; a field is required (not Opt) when upstream nydusd
v2.4.4 always writes it (its serde output, utils/src/metrics.rs,
service/src/daemon.rs), since Go would silently zero a missing one.
"""

from go_structs import Map, Opt, Struct

# types.BuildTimeInfo
BuildTimeInfo = Struct("types.BuildTimeInfo", {
    "package_ver": "string",
    "git_commit": "string",
    "build_time": "string",
    "profile": "string",
    "rustc": "string",
})

# types.DaemonInfo (id is Option<String> upstream: null without --id)
DaemonInfo = Struct("types.DaemonInfo", {
    "id": Opt("string"),
    "version": BuildTimeInfo,
    "state": "string",
})

# types.ErrorMessage: every non-2xx body (parseErrorMessage)
ErrorMessage = Struct("types.ErrorMessage", {
    "code": "string",
    "message": "string",
})

# types.FsMetrics (GET /api/v1/metrics). Upstream also writes
# record_latest_read_files_enabled, which the Go struct ignores; nydusctl's
# `metrics fsstats` reads the arrays with .as_array().unwrap().
FsMetrics = Struct("types.FsMetrics", {
    "files_account_enabled": "bool",
    "access_pattern_enabled": "bool",
    "measure_latency": "bool",
    "id": "string",
    "data_read": "uint",
    "block_count_read": ["uint"],
    "fop_hits": ["uint"],
    "fop_errors": ["uint"],
    "fop_cumulative_latency_total": ["uint"],
    "read_latency_dist": ["uint"],
    "nr_opens": "uint",
    "record_latest_read_files_enabled": "bool",
})

# types.InflightMetrics.Values element (GET /api/v1/metrics/inflight, 200)
InflightOp = Struct("types.InflightMetrics.Values", {
    "inode": "uint",
    "opcode": "uint",
    "unique": "uint",
    "timestamp_secs": "uint",
})
InflightMetrics = [InflightOp]

# types.CacheMetrics (GET /api/v1/metrics/blobcache). `id` is skipped by
# upstream's serde (so optional here).
CacheMetrics = Struct("types.CacheMetrics", {
    "id": Opt("string"),
    "underlying_files": ["string"],
    "store_path": "string",
    "partial_hits": "uint",
    "whole_hits": "uint",
    "total": "uint",
    "entries_count": "uint",
    "prefetch_data_amount": "uint",
    "prefetch_requests_count": "uint",
    "prefetch_workers": "uint",
    "prefetch_unmerged_chunks": "uint",
    "prefetch_cumulative_time_millis": "uint",
    "prefetch_begin_time_secs": "uint",
    "prefetch_begin_time_millis": "uint",
    "prefetch_end_time_secs": "uint",
    "prefetch_end_time_millis": "uint",
    "buffered_backend_size": "uint",
    "data_all_ready": "bool",
})

# Upstream nydusctl `metrics backend` (commands.rs reads these keys; the
# arrays with .as_array().unwrap()).
BackendMetrics = Struct("nydusctl.BackendMetrics", {
    "backend_type": "string",
    "read_count": "uint",
    "read_errors": "uint",
    "read_amount_total": "uint",
    "read_cumulative_latency_millis_total": "uint",
    "read_cumulative_latency_millis_dist": ["uint"],
    "read_count_block_size_dist": ["uint"],
    "read_latency_sizes_dist": [["uint"]],
})

# Upstream's FsBackendDescriptor in DaemonInfo.backend_collection (nydusctl
# `info` prints it).
FsBackendDescriptor = Struct("service.FsBackendDescriptor", {
    "backend_type": "string",
    "mountpoint": "string",
    "mounted_time": "string",
    "config": Opt(Map("any")),
})
DaemonInfoFull = Struct("service.DaemonInfo", {
    "version": BuildTimeInfo,
    "id": Opt("string"),
    "supervisor": Opt("string"),
    "state": "string",
    "backend_collection": Opt(Map(FsBackendDescriptor)),
})

# utils ErrorHolder (GET /api/v1/daemon/events)
ErrorHolder = Struct("utils.ErrorHolder", {
    "max_errors": "uint",
    "total_errors": "uint",
    "max_size": "uint",
    "total_size": "uint",
    "errors": ["string"],
})

# Per-file metrics: map inode -> InodeIoStats; ?latest=true: []uint64;
# access patterns: []AccessPattern.
InodeIoStats = Struct("utils.InodeIoStats", {
    "total_fops": "uint",
    "data_read": "uint",
    "block_count_read": ["uint"],
    "fop_hits": ["uint"],
    "fop_errors": ["uint"],
})
FilesMetrics = Map(InodeIoStats)
LatestReadFiles = ["uint"]
AccessPattern = Struct("utils.AccessPattern", {
    "ino": "uint",
    "nr_read": "uint",
    "first_access_time_secs": "uint",
    "first_access_time_nanos": "uint",
})
AccessPatterns = [AccessPattern]

# GET /api/v1/config: map[string]string
RuntimeConfig = Map("string")
