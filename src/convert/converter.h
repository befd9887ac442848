// Conversion of an OCI/Docker image into a Nydus image (what `nydusify
// convert` does): each layer tar becomes a RAFS v6 data blob with its own
// bootstrap (in parallel), the layer bootstraps are merged with OCI whiteout
// semantics, and each converted manifest's layers are the Nydus blobs
// (media type application/vnd.oci.image.layer.nydus.blob.v1) plus a gzip'd
// bootstrap layer — the shape nydus-snapshotter recognises.
// The result keeps the source's shape, as upstream's converter does: a
// manifest gives a manifest, an index gives an index of the converted
// platforms (a single one gives a manifest); Docker media types stay unless
// `oci`. `merge_platform` pushes an OCI index holding the source manifests
// and the Nydus ones (marked with the nydus.remoteimage.v1 os feature and the
// Nydus artifact type).
// Conversion is deterministic (everything comes from the tar headers, owners
// included), so the same source layer always gives the same blob and images
// sharing layers share blobs in the target.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/result.h"
#include "convert/image_store.h"
#include "format/layout.h"

namespace nydus::convert {

struct ConvertOptions {
  std::string source;  // image reference (registry or oci:DIR:TAG)
  std::string target;
  StoreOptions source_store;
  StoreOptions target_store;
  std::filesystem::path work_dir;  // scratch: layers, blobs, bootstraps
  std::string platform = host_platform();  // "os/arch[/variant]", comma-separated
  bool all_platforms = false;
  bool merge_platform = false;  // an index with the source and the Nydus manifests
  bool oci = false;             // Docker media types become OCI ones
  // --oci-ref: zran images (nydus-snapshotter's packRef): each gzip layer
  // stays the data, referenced in place; its Nydus blob is the small meta
  // blob (`create --type targz-ref --blob-inline-meta --features blob-toc`),
  // annotated with the source layer's digest. The target repository must
  // hold the source layers (pushed when absent; a no-op in the same repo).
  bool oci_ref = false;
  format::Compressor compressor = format::Compressor::kZstd;
  uint32_t chunk_size = format::kDefaultChunkSize;
  uint32_t batch_size = 0;  // --batch-size: small files packed into batches (not with oci_ref)
  unsigned jobs = 2;  // layers converted at once
  int push_retry_count = 3;  // a failed push is tried again this many times
  std::chrono::milliseconds push_retry_delay{5000};
  // Image paths to prefetch when mounted (the bootstrap's prefetch table).
  std::vector<std::string> prefetch_patterns;
  // --chunk-dict: a Nydus image reference (registry or oci:DIR:TAG) whose
  // bootstrap is the chunk dictionary (see chunk_dict.h); empty: none.
  std::string chunk_dict;
  StoreOptions chunk_dict_store;
  // --backend-type oss|s3|localfs with its JSON config (blob_backend.h):
  // blobs go there, the manifest lists the bootstrap layer only.
  std::string backend_type;
  std::string backend_config;
  bool backend_force_push = false;
  // Progress: (layer index, layer count, stage, detail). Stages: "pull",
  // "convert", "push", "done", and layer -1 for image-wide steps.
  std::function<void(int, int, const std::string&, const std::string&)> progress;
};

struct LayerResult {
  std::string source_digest;
  uint64_t source_size = 0;
  std::string blob_digest;  // empty: a layer with no file data (no blob)
  uint64_t blob_size = 0;
  std::string toc_digest;   // --oci-ref: hex sha256 of the meta blob's ToC (for merge)
  std::filesystem::path bootstrap;
  std::vector<std::string> implicit_dirs;  // see builder::CreateReport
};

struct PlatformResult {
  Platform platform;
  std::vector<LayerResult> layers;
  std::string bootstrap_digest;
  uint64_t bootstrap_size = 0;
  std::string manifest_digest;
  std::string manifest_media_type;
};

struct ConvertReport {
  std::vector<PlatformResult> platforms;
  std::string target_digest;      // what the target tag names (manifest or index)
  std::string target_media_type;
  uint64_t source_image_size = 0; // configs + layers of the converted platforms
  uint64_t target_image_size = 0;
  PushStats push;
  double pull_seconds = 0, convert_seconds = 0, push_seconds = 0;
  double seconds = 0;
};

Result<ConvertReport> convert_image(const ConvertOptions& opts);

// A Go duration as upstream's --push-retry-delay takes it: "5s", "1m30s",
// "500ms", "1h" (units ns, us, ms, s, m, h; decimals allowed).
Result<std::chrono::milliseconds> parse_go_duration(std::string_view s);

}  // namespace nydus::convert
