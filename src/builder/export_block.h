// `nydus-image export --block`: one raw EROFS disk image holding the
// bootstrap followed by every blob's uncompressed layout at the block address
// its device slot records (mapped_blkaddr). Mounted without device= options,
// the kernel's EROFS treats it as a "flat device" and finds blob data there.
#pragma once

#include <filesystem>

#include "common/result.h"
#include "format/image_reader.h"

namespace nydus::builder {

struct ExportReport {
  uint64_t disk_size = 0;
  uint64_t chunks_written = 0;
};

Result<ExportReport> export_block(format::ImageReader& image, const std::filesystem::path& output, bool verify);

}  // namespace nydus::builder
