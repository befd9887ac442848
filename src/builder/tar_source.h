// Reads an OCI layer tar stream (plain, gzip or zstd; "-" = stdin) into the
// tree the bootstrap writer serialises. The stream is read once, in order:
// each regular file's data is handed to `on_data` in chunk-size pieces as it
// arrives, tagged with the file's arena node. The tar is untrusted: names,
// depth and entry count are bounded and symlinks are never followed.
// Whiteout markers (.wh.*) are kept as ordinary files; merge applies them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "builder/source_tree.h"
#include "common/result.h"

namespace nydus::builder {

struct TarLimits {
  size_t max_entries = 4u << 20;
  size_t max_depth = 256;        // path components
  size_t max_path = 64 * 1024;   // bytes of one entry's path
  // Leave out eStargz's own files at the root (stargz.index.json,
  // .prefetch.landmark, .no.prefetch.landmark): upstream's tarball builder
  // does for every tar type (is_stargz_special_files), so an eStargz layer
  // gives the same tree through tar-rafs, targz-ref or estargz-*.
  bool skip_estargz_files = true;
};

// One piece of file data: `node` is the arena index that finish-time
// `TarTree::origin` refers to.
using TarDataFn = std::function<Status(uint32_t node, uint64_t offset, std::vector<uint8_t> piece)>;
// Called for each regular file before its first piece, with its path in the
// image ("/a/b"): lets a build decide where in the blob that file's data goes.
using TarFileFn = std::function<void(uint32_t node, const std::string& image_path)>;
// Called for each regular file with contiguous data before its first piece:
// where its `size` bytes start in the uncompressed stream (as
// TarTree::stream_offset records at the end). An error stops the scan.
using TarStreamFn = std::function<Status(uint32_t node, uint64_t stream_offset, uint64_t size)>;

struct TarTree {
  SourceTree tree;               // paths[] empty: data came through on_data
  std::vector<uint32_t> origin;  // per node: arena node whose data it has
  // Directories the tar did not describe (parents of its entries, and "/"
  // without a "./" entry): their attributes are defaults, not the layer's,
  // so a merge keeps a lower layer's instead.
  std::vector<std::string> implicit_dirs;
  // By arena node (the `node` on_data saw): where its data starts in the
  // uncompressed tar stream, kNoStreamOffset for sparse entries (their data
  // is not one contiguous run). ZRAN builds point chunks into the stream.
  std::vector<uint64_t> stream_offset;
};
inline constexpr uint64_t kNoStreamOffset = ~uint64_t(0);

Result<TarTree> scan_tar(const std::string& source, uint32_t chunk_size, const TarDataFn& on_data,
                         const TarLimits& limits = {}, const TarFileFn& on_file = {},
                         const TarStreamFn& on_stream = {});

}  // namespace nydus::builder
