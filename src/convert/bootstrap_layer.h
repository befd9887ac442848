// The bootstrap layer of a Nydus image: a gzip'd tar holding the merged
// bootstrap as "image/image.boot" (what nydus-snapshotter unpacks).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/result.h"

namespace nydus::convert {

struct BootstrapLayer {
  std::filesystem::path file;  // the .tar.gz
  std::string digest;          // of the .tar.gz
  uint64_t size = 0;
  std::string diff_id;         // digest of the uncompressed tar
};

Result<BootstrapLayer> write_bootstrap_layer(const std::filesystem::path& bootstrap, const std::filesystem::path& dir);

// The bootstrap (image/image.boot) out of a bootstrap layer (gzip'd or plain tar).
Status extract_bootstrap(const std::filesystem::path& layer, const std::filesystem::path& out);

}  // namespace nydus::convert
