// `nydus-image unpack`: turn a RAFS v6 image back into a tree, either as a
// PAX tar stream or extracted into a directory (both through libarchive).
// Every entry keeps its mode, owner, mtime (with nanoseconds), xattrs,
// symlink target and device numbers; paths of one non-directory inode after
// the first become hardlinks to the first. File data is read chunk by chunk
// with digest verification. The image is untrusted: path components are
// validated and libarchive's secure-extraction checks stay on.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/image_reader.h"

namespace nydus::builder {

struct UnpackOptions {
  bool verify = true;  // check every chunk's digest while reading
};

struct UnpackReport {
  uint64_t entries = 0;    // entries written (root included)
  uint64_t files = 0;      // regular files with data written
  uint64_t hardlinks = 0;  // paths written as hardlinks
  uint64_t bytes = 0;      // file data bytes written
  std::vector<std::string> warnings;  // entries skipped or attributes not applied
};

// Write the whole tree as a PAX tar to `fd` (left open). The root is "./",
// everything else relative ("a/b"). Names are written as raw bytes
// (hdrcharset=BINARY) so non-UTF-8 names survive.
Result<UnpackReport> unpack_to_tar(format::ImageReader& image, int fd, const UnpackOptions& opts = {});

// Extract the tree into `dir` (created if missing); the root inode's mode,
// owner, times and xattrs are applied to `dir` itself. Ownership is only
// restored when running as root.
Result<UnpackReport> unpack_to_dir(format::ImageReader& image, const std::filesystem::path& dir,
                                   const UnpackOptions& opts = {});

}  // namespace nydus::builder
