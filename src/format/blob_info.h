// What a data blob looks like from the bootstrap's point of view: one chunk's
// placement (compressed and uncompressed) and the blob-wide summary that goes
// into the blob table and device table.
#pragma once

#include <cstdint>
#include <cstring>
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
  bool encrypted = false;          // stored bytes are AES-XTS encrypted (after compression)
  // A batch chunk (`--batch-size`): the stored bytes [compressed_offset,
  // +compressed_size) are a whole batch of `batch_size` bytes once decoded,
  // and this chunk is [offset_in_batch, +uncompressed_size) of it.
  bool batch = false;
  uint32_t batch_size = 0;
  uint32_t offset_in_batch = 0;
};

// A bootstrap chunk-info record (the same 80 bytes in RAFS v5 and v6) as a
// ChunkRecord, and back; `file_offset` is the chunk's offset in its file.
inline ChunkRecord chunk_record_from(const ChunkInfoRecord& r) {
  ChunkRecord c;
  std::memcpy(c.digest.data(), r.block_id, c.digest.size());
  c.blob_index = r.blob_index;
  c.ci_index = r.index;
  c.compressed_offset = r.compressed_offset;
  c.compressed_size = r.compressed_size;
  c.uncompressed_offset = r.uncompressed_offset;
  c.uncompressed_size = r.uncompressed_size;
  c.compressed = r.flags & chunk_flags::kCompressed;
  c.has_crc32 = r.flags & chunk_flags::kHasCrc32;
  c.crc32 = r.crc32;
  c.encrypted = r.flags & chunk_flags::kEncrypted;
  c.batch = r.flags & chunk_flags::kBatch;
  return c;
}

inline ChunkInfoRecord chunk_info_record(const ChunkRecord& c, uint64_t file_offset) {
  ChunkInfoRecord r{};
  std::memcpy(r.block_id, c.digest.data(), sizeof(r.block_id));
  r.blob_index = c.blob_index;
  r.flags = (c.compressed ? chunk_flags::kCompressed : 0) | (c.has_crc32 ? chunk_flags::kHasCrc32 : 0) |
            (c.encrypted ? chunk_flags::kEncrypted : 0) | (c.batch ? chunk_flags::kBatch : 0);
  r.compressed_size = c.compressed_size;
  r.uncompressed_size = c.uncompressed_size;
  r.compressed_offset = c.compressed_offset;
  r.uncompressed_offset = c.uncompressed_offset;
  r.file_offset = file_offset;
  r.index = c.ci_index;
  // Without kHasCrc32 the slot keeps what the record held (0 for upstream's
  // images; an eStargz innerOffset for ours, see Bootstrap::adopt_stargz_chunks).
  r.crc32 = c.crc32;
  return r;
}

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
  // Encrypted blobs (cipher_algo 1 = AES-128-XTS): upstream reuses
  // blob_meta_digest as the key and blob_meta_size as the IV's first half;
  // cipher_iv_tail is the table's cipher_iv (the IV's second half). See
  // format/blob_cipher.h.
  uint32_t cipher_algo = 0;
  uint64_t cipher_iv_tail = 0;
  // RAFS v5 images record no blob meta (ci array) anywhere: the chunks the
  // bootstrap describes, sorted by ci index, stand in for it. Null otherwise.
  std::shared_ptr<const std::vector<ChunkRecord>> bootstrap_chunks;
};

// Upstream's "legacy stargz" blob (storage/src/device.rs compute_features):
// gzip chunks without CHUNK_INFO_V2. Its chunks' compressed sizes are upper
// bounds (a gzip member read as a span of the layer), see format/stargz_toc.h.
inline bool is_legacy_stargz(const BlobInfo& b) {
  return b.compressor == Compressor::kGzip && !(b.features & blob_features::kChunkInfoV2);
}

}  // namespace nydus::format
