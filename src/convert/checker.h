// `nydusify check`: is a converted image what it should be?
//  - format: the manifest for the platform (an index entry marked with the
//    nydus.remoteimage.v1 feature or the Nydus artifact type when there is
//    one; with `multi_platform` the target must be such an index holding
//    the source's manifest too), blob
//    layers of the Nydus blob media type and annotation, a bootstrap layer
//    with its annotations, config diff ids matching the layers;
//  - bootstrap: image/image.boot inside the bootstrap layer parses, its blob
//    table names exactly the manifest's blobs, and every inode, chunk index
//    and chunk (downloaded, decompressed, digest-checked) is valid;
//  - filesystem (with --source): the tree equals the source image's layers
//    applied in order (layer_apply.h): types, modes, owners, mtimes, sizes,
//    link targets, devices, xattrs and every file's SHA-256.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"
#include "convert/image_store.h"

namespace nydus::convert {

struct CheckOptions {
  std::string target;
  StoreOptions target_store;
  std::string source;  // optional
  StoreOptions source_store;
  std::filesystem::path work_dir;
  std::string platform = host_platform();
  bool multi_platform = false;  // upstream's --multi-platform
};

struct CheckReport {
  std::vector<std::string> problems;  // empty: the image checks out
  uint64_t blobs = 0;
  uint64_t chunks_verified = 0;
  uint64_t entries = 0;           // of the Nydus tree
  uint64_t entries_compared = 0;  // with --source
  bool ok() const { return problems.empty(); }
};

Result<CheckReport> check_image(const CheckOptions& opts);

}  // namespace nydus::convert
