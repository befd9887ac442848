// What a data blob looks like from the bootstrap's point of view: one chunk's
// placement (compressed and uncompressed) and the blob-wide summary that goes
// into the blob table and device table.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/digest.h"
#include "format/layout.h"

namespace nydus::format {

// One stored chunk of a data blob (the fields of a bootstrap chunk-info record).
struct ChunkRecord {
  Digest digest{};                 // of the uncompressed bytes
  uint32_t blob_index = 0;         // position in the blob table
  uint32_t ci_index = 0;           // index in the blob's ci array / blob.digest
  uint64_t compressed_offset = 0;  // in the blob file
  uint32_t compressed_size = 0;    // stored bytes
  uint64_t uncompressed_offset = 0;  // in the blob's uncompressed layout, 4 KiB aligned
  uint32_t uncompressed_size = 0;
  bool compressed = false;         // stored bytes are compressed with the blob's compressor
  uint32_t crc32 = 0;              // CRC-32C of the uncompressed bytes
  bool has_crc32 = false;
};

// Blob-table view of one data blob (RafsV6Blob fields we produce or read).
struct BlobInfo {
  std::string blob_id;             // 64 lowercase hex chars (sha256 of the blob file)
  uint32_t chunk_size = kDefaultChunkSize;
  uint32_t chunk_count = 0;
  Compressor compressor = Compressor::kZstd;
  Digester digester = Digester::kBlake3;
  uint32_t features = 0;           // blob_features::*
  uint64_t compressed_size = 0;    // blob file size as recorded in the blob table
  uint64_t uncompressed_size = 0;  // size of the uncompressed layout (4 KiB multiple)
  Compressor ci_compressor = Compressor::kNone;
  uint64_t ci_offset = 0;
  uint64_t ci_compressed_size = 0;
  uint64_t ci_uncompressed_size = 0;
  uint32_t toc_size = 0;           // 128*N + 512, or 0
  Digest toc_digest{};             // sha256(ToC entries || its tar header), or zeros
  // ZRAN (SEPARATE) blobs: the blob.meta lives in a separate "meta blob"
  // named by sha256 of its content, recorded here (zeros with an inlined
  // bootstrap, where the bootstrap's own blob is the meta blob).
  Digest blob_meta_digest{};
  uint64_t blob_meta_size = 0;
  uint32_t mapped_blkaddr = 0;     // device slot uniaddr (flat-device layout)
  // RAFS v5 images record no blob meta (ci array) anywhere: the chunks the
  // bootstrap describes, sorted by ci index, stand in for it. Null otherwise.
  std::shared_ptr<const std::vector<ChunkRecord>> bootstrap_chunks;
};

}  // namespace nydus::format
