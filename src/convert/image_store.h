// Where images are read from and written to: an OCI distribution registry
// (HTTP API v2, anonymous / Basic / Bearer-token auth, redirects to blob
// storage) or an OCI image layout directory. Everything fetched is checked
// against its digest before use.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"
#include "convert/oci.h"

namespace nydus::convert {

struct StoreOptions {
  bool plain_http = false;      // registry over http from the start (--plain-http)
  bool skip_verify = false;     // TLS without verification (--*-insecure)
  // An https registry that answers in plain HTTP (or refuses the connection)
  // is retried over http, as upstream's converter does.
  bool http_fallback = true;
  std::string auth;             // base64("user:pass") for Basic or token requests (--*-auth)
  // Without `auth`: credentials from Docker's config.json and credential
  // helpers (docker_config.h), looked up when the registry first asks.
  bool use_docker_config = true;
  std::filesystem::path docker_config_dir;  // empty: $DOCKER_CONFIG or ~/.docker
  std::chrono::seconds blob_timeout{1800};
};

struct FetchedManifest {
  std::string media_type;
  std::string bytes;
  std::string digest;  // of `bytes`
};

struct PushStats {
  uint64_t blobs_pushed = 0;
  uint64_t blobs_present = 0;  // already there: not sent again (shared layers)
  uint64_t bytes_pushed = 0;
};

class ImageStore {
 public:
  virtual ~ImageStore() = default;
  virtual std::string describe() const = 0;

  // The manifest or index a tag or digest names.
  virtual Result<FetchedManifest> get_manifest(const std::string& reference) = 0;
  // A small blob (an image config) into memory, digest-checked.
  virtual Result<std::string> get_blob(const Descriptor& d) = 0;
  // A blob as a local file, digest-checked: the layout's own file, or a
  // download into `scratch_dir`.
  virtual Result<std::filesystem::path> blob_file(const Descriptor& d, const std::filesystem::path& scratch_dir) = 0;

  // Upload a blob unless the store has it already (then it only counts it).
  virtual Status push_blob(const std::string& digest, const std::filesystem::path& file) = 0;
  virtual Status push_blob_bytes(const std::string& digest, std::string_view bytes) = 0;
  // Store a manifest or index under a tag (or its digest).
  virtual Status push_manifest(const std::string& reference, std::string_view media_type, std::string_view bytes) = 0;
  virtual PushStats push_stats() const = 0;
};

Result<std::unique_ptr<ImageStore>> open_store(const ImageRef& ref, const StoreOptions& opts);

// The image manifest a reference names for `want`: the manifest itself, or
// through an index the entry for that platform — the Nydus one (with the
// nydus.remoteimage.v1 os feature) when `nydus`, else a plain one.
// `found` gets the entry's platform.
Result<FetchedManifest> resolve_manifest(ImageStore& s, const std::string& reference, const Platform& want, bool nydus,
                                         Platform* found = nullptr);

// sha256 of a file's bytes ("sha256:<hex>").
Result<std::string> file_digest(const std::filesystem::path& p);

}  // namespace nydus::convert
