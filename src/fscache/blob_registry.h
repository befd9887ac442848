// The images the fscache daemon may serve, registered through /api/v2/blobs:
// each bootstrap entry (key "<domain>/<fsid>", or "<fsid>" without a domain)
// and the data blobs of its blob table, keyed by the kernel volume they live
// in: "<domain>/<blob id>" (shared by every bootstrap of the domain that
// names them, reference-counted) or "<fsid>/<blob id>" without a domain. The kernel's OPEN names an object by
// volume key "erofs,<domain or fsid>" and cookie key (fsid or blob id), which
// find() maps back to what the object holds.
//
// Registration opens and validates the bootstrap and builds the backend from
// its config, but does no network I/O: blob caches open on first read.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "fscache/blob_entry.h"
#include "fscache/object_source.h"
#include "runtime/config.h"

namespace nydus::fscache {

struct ObjectLookup {
  std::shared_ptr<ObjectSource> source;
  bool is_bootstrap = false;
  // Bytes past a READ also written into the object (the config's amplify_io).
  uint64_t amplify = 0;
  // Data blobs: the bootstrap that registered the blob first, the blob's index
  // in its blob table and that entry's prefetch settings.
  std::shared_ptr<const format::Bootstrap> boot;
  uint32_t blob_index = 0;
  runtime::PrefetchConfig prefetch;
};

// A kernel cache object: volume "erofs,<volume_id>", cookie key.
struct CacheObjectName {
  std::string volume_id;
  std::string cookie;
  bool operator==(const CacheObjectName&) const = default;
};

class BlobRegistry {
 public:
  // `default_work_dir`: where blob caches live when an entry's config names none.
  explicit BlobRegistry(std::filesystem::path default_work_dir) : default_work_dir_(std::move(default_work_dir)) {}

  // Registers a bootstrap and its data blobs. kExists if the key is taken.
  // `backend` replaces the one the entry's config describes (tests).
  Status add(const BlobEntry& entry, std::shared_ptr<storage::Backend> backend = nullptr);
  // Upstream's DELETE /api/v2/blobs: `blob_id` empty removes the whole
  // domain; otherwise one bootstrap (and its references to its data blobs)
  // or one data blob reference. Returns the kernel cache objects nothing
  // registered refers to any more (which may be culled).
  Result<std::vector<CacheObjectName>> remove(const std::string& domain_id, const std::string& blob_id);

  std::optional<ObjectLookup> find(std::string_view volume_key, std::string_view cookie_key) const;

  // Registry credentials renewed (PUT /api/v1/config "registry_auth"): the
  // backends of every bootstrap registered with fsid `fsid` (in any domain)
  // take `auth_base64`, and its entry (the failover state) keeps it. Returns
  // how many bootstraps matched.
  Result<int> update_auth(std::string_view fsid, const std::string& auth_base64);

  // GET /api/v2/blobs?domain_id=[&blob_id=]: the registered objects.
  nlohmann::json list(const std::string& domain_id, const std::string& blob_id) const;
  // Every registered bootstrap entry as received (the failover state).
  std::vector<nlohmann::json> entries() const;
  // The data blob sources alive now (metrics).
  std::vector<std::shared_ptr<DataBlobSource>> data_blobs() const;
  bool contains_blob(const std::string& blob_id) const;

 private:
  struct Meta {
    BlobEntry entry;  // entry.config.amplify_io applies to the bootstrap object
    std::shared_ptr<const format::Bootstrap> boot;
    std::shared_ptr<BootstrapSource> source;
    std::vector<std::string> blob_keys;  // one reference each
  };
  struct Data {
    std::string volume_id;  // the kernel volume: the domain, or the fsid without one
    std::string domain_id;
    std::shared_ptr<DataBlobSource> source;
    std::shared_ptr<const format::Bootstrap> boot;  // of the first registrant
    uint32_t blob_index = 0;
    runtime::PrefetchConfig prefetch;
    uint64_t amplify = 0;
    unsigned refs = 0;
  };

  static std::string volume_of(const BlobEntry& e);
  // Drop one reference; true when it was the last.
  bool unref_locked(const std::string& key);

  // One DataBlobSource per (cache dir, blob id), so two registrations of one
  // blob never run two blob caches over the same files.
  std::shared_ptr<DataBlobSource> shared_source_locked(const format::BlobInfo& info,
                                                       const std::shared_ptr<storage::Backend>& backend,
                                                       const storage::CacheConfig& cc,
                                                       std::vector<format::Digest> digests);

  void remove_meta_locked(std::map<std::string, Meta>::iterator it, std::vector<CacheObjectName>& gone);

  std::filesystem::path default_work_dir_;
  mutable std::mutex mu_;
  std::map<std::string, Meta> metas_;
  std::map<std::string, Data> datas_;
  std::map<std::pair<std::string, std::string>, std::weak_ptr<DataBlobSource>> sources_;
};

}  // namespace nydus::fscache
