// For the blob-meta fuzz targets: copy the ci fields of a blob-table entry
// from the 4096-byte header at the end of `meta`, so an input gets past the
// table/header agreement checks into decompression and ci decoding.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

#include "format/blob_reader.h"

namespace nydus::fuzz {

inline void ci_fields_from_header(std::span<const uint8_t> meta, format::BlobInfo& b) {
  if (meta.size() < 4096) return;
  const uint8_t* h = meta.data() + meta.size() - 4096;
  uint32_t u32;
  std::memcpy(&u32, h + 4, 4);
  b.features = u32;
  std::memcpy(&u32, h + 8, 4);
  b.ci_compressor = format::Compressor(u32);
  std::memcpy(&u32, h + 12, 4);
  b.chunk_count = u32;
  std::memcpy(&b.ci_offset, h + 16, 8);
  std::memcpy(&b.ci_compressed_size, h + 24, 8);
  std::memcpy(&b.ci_uncompressed_size, h + 32, 8);
}

}  // namespace nydus::fuzz
