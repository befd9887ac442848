// `nydus-image merge`: stacks per-layer bootstraps (lowest first) into one
// bootstrap with overlay semantics (rafs-v6-format.md §8). Upper entries
// replace lower ones of the same path (directories over directories merge
// their children), whiteouts remove lower entries and are dropped. The blob
// table is every layer's blobs in layer order (deduplicated by id) and each
// layer's chunk indexes are remapped onto it. No file data is read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"

namespace nydus::builder {

enum class WhiteoutSpec {
  kOci,        // .wh.<name> removes <name>, .wh..wh..opq hides the lower children
  kOverlayfs,  // char device 0/0 removes the name, trusted.overlay.opaque=y hides the lower children
  kNone,       // nothing is special
};

struct MergeOptions {
  std::vector<std::filesystem::path> layers;  // lowest first
  std::filesystem::path parent_bootstrap;     // optional: below every layer
  std::filesystem::path bootstrap;            // output
  // Per entry of `layers`: the real blob id / blob size for a layer whose
  // bootstrap names its blob with the inlined placeholder ("xxxx...").
  std::vector<std::string> blob_digests;
  std::vector<uint64_t> blob_sizes;
  WhiteoutSpec whiteout = WhiteoutSpec::kOci;
  // Per entry of `layers` (or empty): paths of directories the layer did not
  // describe itself (CreateReport::implicit_dirs). Over an existing lower
  // directory they keep the lower one's attributes, as unpacking the layers
  // in order would.
  std::vector<std::vector<std::string>> implicit_dirs;
  // `--prefetch-policy fs`: image paths whose data the daemon prefetches
  // (the merged image's prefetch table).
  std::vector<std::string> prefetch_patterns;
};

struct MergeReport {
  std::vector<format::BlobInfo> blobs;
  uint64_t inodes = 0;
  uint64_t bootstrap_size = 0;
};

Result<MergeReport> merge_layers(const MergeOptions& opts);

}  // namespace nydus::builder
