// `nydus-image merge`: stacks per-layer bootstraps (lowest first) into one
// bootstrap with overlay semantics (rafs-v6-format.md §8). Upper entries
// replace lower ones of the same path (directories over directories merge
// their children), whiteouts remove lower entries and are dropped. The blob
// table holds the blobs some chunk of the merged tree still uses, in order of
// first use walking the tree breadth first (upstream's order), and chunk
// indexes are remapped onto it. No file data is read. The output has the
// layers' RAFS version: v5 layers give a v5 image (chunk offsets and blob
// table entries as the layers record them); mixing v5 and v6 is refused.
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
  // -D without -B: the merged bootstrap is written here, named by its sha256.
  std::filesystem::path bootstrap_dir;
  // Per entry of `layers` (each list empty or one entry per layer), for the
  // layer's own blob (not one of the chunk dict's): --blob-digests replaces
  // its id and --blob-sizes its size; --blob-toc-digests / --blob-toc-sizes
  // set its ToC fields. A blob id that is the inlined-bootstrap placeholder
  // ("xxxx...") without a digest becomes --original-blob-ids' entry, else the
  // bootstrap file's name up to its first '.', as upstream does.
  std::vector<std::string> blob_digests;
  std::vector<std::string> original_blob_ids;
  std::vector<uint64_t> blob_sizes;
  std::vector<std::string> blob_toc_digests;
  std::vector<uint64_t> blob_toc_sizes;
  // --chunk-dict: the dictionary bootstrap the layers were built with. Its
  // blobs are not a layer's own blob, and its chunk size / uid-gid mode is the
  // one every layer must have.
  std::filesystem::path chunk_dict;
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

// Error messages of layers that cannot be merged (upstream's
// MergeError::InconsistentFilesystem, which makes nydus-image exit 2) start so.
inline constexpr std::string_view kInconsistentFilesystem = "Inconsistent RAFS Filesystem: ";

struct MergeReport {
  std::filesystem::path bootstrap;  // where it was written
  format::Compressor compressor = format::Compressor::kZstd;  // the last layer's, as upstream reports
  std::vector<format::BlobInfo> blobs;
  uint64_t inodes = 0;
  uint64_t bootstrap_size = 0;
  uint32_t fs_version = 6;  // RAFS version of the first layer (the output's: the set has one)
};

Result<MergeReport> merge_layers(const MergeOptions& opts);

}  // namespace nydus::builder
