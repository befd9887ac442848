// `nydusify convert --backend-type oss|s3|localfs --backend-config JSON`:
// the Nydus blobs go to an object store (or a directory) instead of the
// target registry, as nydus-snapshotter's pkg/backend stores them: object
// `<object_prefix><blob sha256 hex>` (localfs: `<dir>/<hex>`), skipped when
// it exists unless `--backend-force-push`. The converter then leaves them out
// of the manifest (only the bootstrap layer is listed).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "common/result.h"

namespace nydus::convert {

class BlobBackend {
 public:
  virtual ~BlobBackend() = default;
  virtual std::string type() const = 0;
  // Store blob `digest` ("sha256:<hex>") from `file`; false when it was
  // there already and not forced.
  virtual Result<bool> push(const std::string& digest, const std::filesystem::path& file) = 0;
};

// The config is upstream's: s3 {bucket_name, region (both required),
// endpoint (default s3.amazonaws.com), scheme (default https), object_prefix,
// access_key_id, access_key_secret}; oss {endpoint, bucket_name (required),
// object_prefix, access_key_id, access_key_secret}; localfs {dir}.
Result<std::unique_ptr<BlobBackend>> open_blob_backend(const std::string& type, const std::string& config_json,
                                                       bool force_push);

}  // namespace nydus::convert
