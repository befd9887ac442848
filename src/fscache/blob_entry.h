// A blob cache entry as upstream's `/api/v2/blobs` takes it (nydus-snapshotter
// sends these in fscache mode):
//   {"type": "bootstrap", "id": "<fsid>", "domain_id": "<domain>",
//    "config_v2": {"version": 2, "id", "backend": {"type": T, T: {...}},
//                  "cache": {"type": "fscache", "fscache": {"work_dir"}, "prefetch": {...}},
//                  "metadata_path": "/path/to/bootstrap"}}
// or the legacy "config": {"id", "backend_type", "backend_config", "cache_type",
// "cache_config": {"work_dir"}, "prefetch_config": {...}, "metadata_path"}.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "runtime/config.h"

namespace nydus::fscache {

struct BlobEntry {
  std::string type;       // "bootstrap" (a "datablob" is registered through its bootstrap)
  std::string id;         // the fsid the kernel mount names
  std::string domain_id;  // may be empty
  std::filesystem::path metadata_path;
  runtime::DaemonConfig config;
  nlohmann::json raw;     // as received, for the failover state
};

Result<BlobEntry> parse_blob_entry(std::string_view body);
Result<BlobEntry> blob_entry_from_json(const nlohmann::json& j);

// Upstream's object key: "<domain>/<id>", or "<id>" without a domain.
std::string blob_key(std::string_view domain_id, std::string_view id);

}  // namespace nydus::fscache
