// A reference view of an OCI image's file tree, made by applying its layer
// tars in order the way a container runtime unpacks them (OCI whiteouts and
// opaque directories act on the lower layers) — written independently of
// the builder's merge, so `nydusify check` can compare a converted image
// against it. Only metadata and a SHA-256 per regular file are kept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"

namespace nydus::convert {

struct RefEntry {
  uint32_t mode = 0;  // type and permission bits
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;         // regular files
  int64_t mtime = 0;
  bool described = true;     // false: a parent directory no entry described
  std::string link_target;   // symlinks
  uint32_t rdev_major = 0, rdev_minor = 0;
  std::map<std::string, std::string> xattrs;
  std::string sha256;        // regular files: hex of the content
};

// Absolute paths ("/", "/etc/os-release") to entries.
using RefTree = std::map<std::string, RefEntry>;

// Apply one layer tar (plain, gzip or zstd) on top of `tree`.
Status apply_layer(RefTree& tree, const std::filesystem::path& layer_tar);

}  // namespace nydus::convert
