// Conversion of an OCI/Docker image into a Nydus image (what `nydusify
// convert` does): each layer tar becomes a RAFS v6 data blob with its own
// bootstrap (in parallel), the layer bootstraps are merged with OCI whiteout
// semantics, and the result is written as an OCI image whose layers are the
// Nydus blobs (media type application/vnd.oci.image.layer.nydus.blob.v1) and
// a gzip'd bootstrap layer, under an index whose platform carries the
// "nydus.remoteimage.v1" os feature — the shape nydus-snapshotter recognises.
// Conversion is deterministic (everything comes from the tar headers, owners
// included), so the same source layer always gives the same blob and images
// sharing layers share blobs in the target.
#pragma once

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
  std::string platform = "linux/amd64";
  format::Compressor compressor = format::Compressor::kZstd;
  uint32_t chunk_size = format::kDefaultChunkSize;
  unsigned jobs = 2;  // layers converted at once
  // Image paths to prefetch when mounted (the bootstrap's prefetch table).
  std::vector<std::string> prefetch_patterns;
  // Progress: (layer index, layer count, stage, detail). Stages: "pull",
  // "convert", "push", "done", and layer -1 for image-wide steps.
  std::function<void(int, int, const std::string&, const std::string&)> progress;
};

struct LayerResult {
  std::string source_digest;
  uint64_t source_size = 0;
  std::string blob_digest;  // empty: a layer with no file data (no blob)
  uint64_t blob_size = 0;
  std::filesystem::path bootstrap;
  std::vector<std::string> implicit_dirs;  // see builder::CreateReport
};

struct ConvertReport {
  std::vector<LayerResult> layers;
  std::string bootstrap_digest;
  uint64_t bootstrap_size = 0;
  std::string manifest_digest;
  std::string index_digest;
  PushStats push;
  double seconds = 0;
};

Result<ConvertReport> convert_image(const ConvertOptions& opts);

}  // namespace nydus::convert
