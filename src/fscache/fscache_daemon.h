// `nydusd singleton --fscache <dir>`: the daemon side of EROFS over fscache.
// Images are registered through /api/v2/blobs; the kernel's EROFS mounts them
// (`mount -t erofs none -o fsid=<id>[,domain_id=<d>]`) and reads through the
// cache objects this daemon fills. Failover: the device fd and the registered
// entries go to the supervisor (sendfd); a daemon started with --upgrade
// takes them over and sends `restore`, so requests the old one left
// unanswered are served.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "api/daemon_api.h"
#include "common/result.h"
#include "fscache/blob_registry.h"
#include "fscache/fscache_service.h"

namespace nydus::fscache {

struct FscacheOptions {
  std::filesystem::path dir;                            // the kernel's cache dir ("dir" command)
  std::string tag;                                      // optional cache tag
  unsigned threads = 4;                                 // READ workers
  std::filesystem::path device = "/dev/cachefiles";     // or an emulator's socket
  std::string id;                                       // daemon id
  std::string supervisor;                               // supervisor socket, for sendfd/takeover
  bool upgrade = false;                                 // wait for takeover instead of binding
};

class FscacheDaemon : public api::DaemonApi {
 public:
  // Without `upgrade`: open the device, bind the cache and serve. With it:
  // wait (state INIT) for takeover().
  static Result<std::unique_ptr<FscacheDaemon>> create(const FscacheOptions& opts);
  ~FscacheDaemon() override;

  // Stop serving and close the device (with no supervisor holding it, the
  // kernel fails what is pending). Idempotent.
  void shutdown();
  // The service stopped on its own (the device hung up).
  bool failed() const;

  // The failover state: {"kind": "fscache", "dir", "tag", "threads", "entries": [...]}.
  nlohmann::json state() const;

  // api::DaemonApi
  nlohmann::json daemon_info() override;
  Status mount(const api::MountRequest& req) override;
  Status remount(const api::MountRequest& req) override;
  Status umount(const std::string& mountpoint) override;
  Result<nlohmann::json> metrics(const std::string& kind, const std::map<std::string, std::string>& query) override;
  std::string prometheus_metrics() override;
  // `id`: a registered bootstrap's fsid ("/<fsid>" too), or upstream
  // nydus-snapshotter's "/<snapshot id>" (its fsid is sha256 of
  // "nydus-snapshot-<snapshot id>", upstream's FscacheID).
  Status set_registry_auth(const std::string& id, const std::string& auth_base64) override;
  Status create_blob(std::string_view body) override;
  Result<nlohmann::json> list_blobs(const std::string& domain_id, const std::string& blob_id) override;
  Status delete_blobs(const std::string& domain_id, const std::string& blob_id) override;
  Status delete_blob_file(const std::string& blob_id) override;
  Status send_fd() override;
  Status takeover() override;
  Status start() override;

 private:
  explicit FscacheDaemon(FscacheOptions opts);
  Status serve(CacheDevice dev, bool restore);
  void cull(const std::vector<CacheObjectName>& gone);

  FscacheOptions opts_;
  BlobRegistry registry_;
  mutable std::mutex mu_;  // guards service_ and state_
  std::unique_ptr<FscacheService> service_;
  std::string state_ = "INIT";
};

// Remove a kernel cache object's file ("cull"), found under
// <dir>/cache/I<volume key>/@<fan-out>/D<cookie>. Only possible while no
// mount uses it; skipped (ok) when the file does not exist.
Status cull_cache_object(CacheDevice& dev, const std::filesystem::path& dir, const CacheObjectName& obj);

}  // namespace nydus::fscache
