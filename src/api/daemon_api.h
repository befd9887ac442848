// What the HTTP API asks of a running daemon. The API server (src/api/) maps
// upstream nydusd's routes onto this interface; the daemon (src/daemon/)
// implements it. Keeping the two apart lets the API be tested with a fake.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace nydus::api {

struct MountRequest {
  std::string mountpoint;  // ?mountpoint= query parameter
  std::string source;      // bootstrap path
  std::string fs_type;     // "rafs" or "fanotify"
  std::string config;      // JSON text of the storage config, as upstream sends it
  bool prefetch_files_given = false;
  std::vector<std::string> prefetch_files;
};

class DaemonApi {
 public:
  virtual ~DaemonApi() = default;
  // GET /api/v1/daemon: {"id", "version": {...}, "state": "RUNNING"|"INIT"|..., "backend_collection": {...}, ...}
  virtual nlohmann::json daemon_info() = 0;
  // PUT (mount), POST (remount), DELETE (umount) /api/v1/mount?mountpoint=
  virtual Status mount(const MountRequest& req) = 0;
  virtual Status remount(const MountRequest& req) = 0;
  virtual Status umount(const std::string& mountpoint) = 0;
  // GET /api/v1/metrics[/<kind>]?id=<mountpoint or blob id>: kind is "" (fs
  // global), "files", "pattern", "backend", "blobcache", "inflight". Bodies
  // as upstream's (utils/src/metrics.rs); a null result for "inflight" means
  // no request in progress (204). kNotFound: no such counter (404).
  virtual Result<nlohmann::json> metrics(const std::string& kind, const std::map<std::string, std::string>& query) = 0;
  // GET /metrics: Prometheus text exposition.
  virtual std::string prometheus_metrics() = 0;

  // PUT /api/v1/config?id= {"registry_auth": "<base64 user:pass>"}: the
  // registry backends of the filesystem `id` (its mountpoint; "/" or empty
  // names the only one) use these credentials from their next request on.
  // Modes without such backends accept and ignore it, as upstream stores the
  // value for backends that are not there.
  virtual Status set_registry_auth(const std::string& id, const std::string& auth_base64) { return {}; }
  // GET /api/v1/daemon/backend?mountpoint=: the superblock summary of the
  // image mounted there (upstream: the RAFS super meta).
  virtual Result<nlohmann::json> backend_info(const std::string& mountpoint) {
    return errorf(Errc::kNotFound, "no filesystem mounted at {}", mountpoint);
  }

  // /api/v2/blobs (fscache mode): register a bootstrap entry (upstream's
  // BlobCacheEntry JSON), list, remove by domain and/or id, remove the cached
  // file of a blob. Modes without blob objects answer 501.
  virtual Status create_blob(std::string_view body) { return unsupported("blob objects"); }
  virtual Result<nlohmann::json> list_blobs(const std::string& domain_id, const std::string& blob_id) {
    return unsupported("blob objects");
  }
  virtual Status delete_blobs(const std::string& domain_id, const std::string& blob_id) {
    return unsupported("blob objects");
  }
  virtual Status delete_blob_file(const std::string& blob_id) { return unsupported("blob objects"); }

  // Live upgrade and failover, as nydus-snapshotter drives them: send the
  // daemon's state and its kernel fd to the supervisor (PUT
  // /api/v1/daemon/fuse/sendfd), take them over in a new daemon started with
  // --upgrade (PUT /api/v1/daemon/fuse/takeover), then start serving (PUT
  // /api/v1/daemon/start).
  virtual Status send_fd() { return unsupported("sendfd"); }
  virtual Status takeover() { return unsupported("takeover"); }
  virtual Status start() { return unsupported("start"); }

 private:
  static std::unexpected<Error> unsupported(std::string_view what) {
    return errorf(Errc::kUnsupported, "{} not supported by this daemon mode", what);
  }
};

}  // namespace nydus::api
