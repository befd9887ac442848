// Private to blob_writer.cpp / blob_reader.cpp: the pieces both sides must
// build identically (the 4096-byte blob meta header, ToC compressor flags).
#pragma once

#include <cstring>
#include <optional>

#include "format/blob_info.h"
#include "format/layout.h"

namespace nydus::format::blob_internal {

// The header that follows the ci array in the blob (and ends the blob.meta
// cache file). The ZRAN fields stay 0: we only write V1 arrays without ZRAN
// or batch contexts, and upstream leaves them 0 in that case too (fixture
// be7d77ee…: s_ci_zran_offset = 0).
inline BlobMetaHeader make_blob_meta_header(const BlobInfo& b) {
  BlobMetaHeader h;
  std::memset(&h, 0, sizeof(h));
  h.magic = kBlobMetaMagic;
  h.features = b.features;
  h.ci_compressor = uint32_t(b.ci_compressor);
  h.ci_entries = b.chunk_count;
  h.ci_offset = b.ci_offset;
  h.ci_compressed_size = b.ci_compressed_size;
  h.ci_uncompressed_size = b.ci_uncompressed_size;
  // BATCH blobs: the batch contexts follow the V2 entries, and the header's
  // ZRAN fields locate them (upstream's set_ci_zran_* for batches).
  const uint64_t entries = uint64_t(sizeof(ChunkInfoV2)) * b.chunk_count;
  if ((b.features & blob_features::kBatch) && b.ci_uncompressed_size >= entries) {
    h.ci_zran_offset = entries;
    h.ci_zran_size = b.ci_uncompressed_size - entries;
    h.ci_zran_count = uint32_t(h.ci_zran_size / kBatchContextSize);
  }
  h.magic2 = kBlobMetaMagic;
  return h;
}

inline uint32_t toc_flag_for(Compressor c) {
  switch (c) {
    case Compressor::kZstd: return toc_flags::kZstd;
    case Compressor::kLz4Block: return toc_flags::kLz4Block;
    default: return toc_flags::kNone;
  }
}

// Exactly one known compressor bit; anything else is not a valid entry.
inline std::optional<Compressor> compressor_for_toc_flags(uint32_t flags) {
  switch (flags) {
    case toc_flags::kNone: return Compressor::kNone;
    case toc_flags::kZstd: return Compressor::kZstd;
    case toc_flags::kLz4Block: return Compressor::kLz4Block;
    default: return std::nullopt;
  }
}

}  // namespace nydus::format::blob_internal
