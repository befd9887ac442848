// Writes a RAFS v6 data blob as upstream Nydus lays it out (see
// rafs-v6-format.md §1.2): stored chunks back to back, then (optionally) the
// reverse-tar header of "image.blob", the blob meta (ci array V1, compressed
// with the blob's compressor when that shrinks it, + 4096-byte header), and,
// with the blob-toc feature, the chunk digest array and the ToC. With inline
// meta the bootstrap is appended too (zstd) before the ToC.
//
// Chunks are appended in the order the caller decides (the builder's walk
// order); each gets its compressed offset (running sum of stored sizes) and
// its uncompressed offset (running sum of 4 KiB-aligned sizes). The blob id is
// the sha256 of every byte written, computed while streaming.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "common/result.h"
#include "format/blob_cipher.h"
#include "format/blob_info.h"

namespace nydus::format {

struct BlobWriterOptions {
  Compressor compressor = Compressor::kZstd;
  Digester digester = Digester::kBlake3;
  uint32_t chunk_size = kDefaultChunkSize;
  uint32_t blob_index = 0;
  bool tar_headers = false;  // HAS_TAR_HEADER: reverse-tar header after each section
  bool toc = false;          // HAS_TOC + INLINED_CHUNK_DIGEST: blob.digest + rafs.blob.toc
  bool inline_bootstrap = false;  // INLINED_FS_META: image.boot section before the ToC
  bool blob_meta = true;     // false: no ci array + header (RAFS v5 blobs are chunks only)
  // --encrypt: every chunk (after compression), the ci array and the blob
  // meta header AES-128-XTS encrypted with this key (ENCRYPTED, V2 entries).
  std::optional<XtsKey> cipher;
  // --batch-size: small chunks given to add_batch_chunk are packed into
  // batches of < batch_size bytes, each compressed (and encrypted) as one
  // piece (BATCH, V2 entries, 40-byte batch contexts after the entries).
  uint32_t batch_size = 0;
};

class BlobWriter {
 public:
  // Write to `path` (created/truncated).
  static Result<std::unique_ptr<BlobWriter>> create(const std::filesystem::path& path,
                                                    const BlobWriterOptions& opts);
  ~BlobWriter();

  // Append one chunk. `stored` is what goes into the blob (compressed bytes if
  // `compressed`, else the raw chunk). Returns the record with offsets and
  // ci index assigned (blob_index from the options).
  Result<ChunkRecord> add_chunk(std::span<const uint8_t> stored, bool compressed,
                                uint32_t uncompressed_size, const Digest& digest, uint32_t crc32);

  // Append a small chunk to the open batch (batch_size set, `raw` shorter
  // than batch_size / 2). The batch is written when the next one would not
  // fit, before any add_chunk, and by finish_meta. The record has
  // compressed offset/size 0 and no COMPRESSED flag, as upstream's bootstrap
  // records batch chunks; the ci entry has the real placement.
  Result<ChunkRecord> add_batch_chunk(std::span<const uint8_t> raw, const Digest& digest, uint32_t crc32);
  uint32_t chunk_count() const;

  // Write every section after the chunk data except image.boot and the ToC.
  // Returns the blob-table description (blob_id still empty; compressed_size =
  // bytes written so far, which is what an inlined bootstrap records).
  Result<BlobInfo> finish_meta();

  // Only with inline_bootstrap, after finish_meta(): append the bootstrap.
  Status append_bootstrap(std::span<const uint8_t> bootstrap);

  // Write the ToC (if enabled), fsync, close. Returns the final info: blob_id
  // = sha256 of the file, compressed_size = file size, toc fields filled.
  Result<BlobInfo> close();

 private:
  BlobWriter();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nydus::format
