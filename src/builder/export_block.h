// `nydus-image export --block`: one raw EROFS disk image holding the
// bootstrap followed by every blob's uncompressed layout at the block address
// its device slot records (mapped_blkaddr). Mounted without device= options,
// the kernel's EROFS treats it as a "flat device" and finds blob data there.
#pragma once

#include <filesystem>
#include <optional>

#include "common/result.h"
#include "format/image_reader.h"
#include "format/verity.h"

namespace nydus::builder {

struct ExportReport {
  uint64_t disk_size = 0;
  uint64_t chunks_written = 0;
  std::optional<format::VerityTree> verity;  // with `verity`: the tree appended after the data
};

// TARFS images (512-byte blocks) get each tar copied whole, as upstream's
// block device holds it; `verity` appends a dm-verity tree over the disk's
// blocks (512-byte data blocks for TARFS, else 4096).
Result<ExportReport> export_block(format::ImageReader& image, const std::filesystem::path& output, bool verify,
                                  bool verity = false);

}  // namespace nydus::builder
