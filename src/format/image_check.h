// Full validation of an image: every inode, directory, symlink, xattr and
// chunk index of the bootstrap; with the blobs at hand, every stored chunk is
// read, decompressed and digest-checked once. Problems are collected (up to a
// cap) rather than stopping at the first, so `check` can list them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/image_reader.h"

namespace nydus::format {

struct CheckReport {
  uint64_t inodes = 0, dirs = 0, files = 0, symlinks = 0, others = 0, hardlinks = 0;
  uint64_t file_bytes = 0, chunk_refs = 0, chunks_verified = 0, bytes_verified = 0;
  std::vector<std::string> errors;    // the image is invalid if non-empty
  std::vector<std::string> warnings;  // e.g. a blob whose sha256 is not its id
  bool ok() const { return errors.empty(); }
};

struct CheckOptions {
  bool verify_data = true;      // read and digest-check every chunk (needs blobs)
  bool verify_blob_ids = true;  // sha256 of each blob file equals its id (warning only)
  size_t max_errors = 100;
};

CheckReport check_image(ImageReader& image, const CheckOptions& opts);

}  // namespace nydus::format
