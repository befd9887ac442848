// Reads a RAFS v6 data blob: the blob meta (ci array + header) located from
// the blob table, the ToC found from the end of the file, and single chunks
// (bounds-checked, decompressed into an exactly sized buffer, digest-checked
// on request). Everything read is untrusted.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"

namespace nydus::format {

struct TocEntryInfo {
  std::string name;
  uint32_t flags = 0;  // toc_flags::*
  Digest digest{};
  uint64_t compressed_offset = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
};

// Parse a ToC: `tail` = the last bytes of the blob (at least the tar header);
// the entries are the `size` bytes before the final "rafs.blob.toc" header.
Result<std::vector<TocEntryInfo>> parse_toc(std::span<const uint8_t> tail);

// The decoded ci array of one blob (from blob.meta), validated against the
// blob table entry: every chunk inside the blob file and the uncompressed size.
struct BlobMeta {
  uint32_t features = 0;
  std::vector<DecodedChunkInfo> chunks;  // by ci index
};

// `meta_bytes` = ci_compressed_size + 4096 bytes read at ci_offset. Batch
// chunks come back resolved (compressed_size = their batch's stored size,
// batch_size/offset_in_batch set); encrypted blobs are decrypted with the
// key from the blob table.
Result<BlobMeta> parse_blob_meta(std::span<const uint8_t> meta_bytes, const BlobInfo& blob);

// The plaintext ci buffer (entries, then batch contexts) and header of a
// blob meta, decrypted and decompressed, before any entry is checked.
struct DecodedMetaBytes {
  std::vector<uint8_t> ci;
  BlobMetaHeader header{};
};
Result<DecodedMetaBytes> decode_meta_bytes(std::span<const uint8_t> meta_bytes, const BlobInfo& blob);

// Encode the blob.meta cache file (`<id>.blob.meta`): uncompressed ci buffer
// zero-padded to 4 KiB, then the 4096-byte header (as upstream caches it).
std::vector<uint8_t> encode_blob_meta_cache(std::span<const uint8_t> ci_buffer, const BlobInfo& blob);

// A data blob file opened for reading.
class BlobFile {
 public:
  static Result<BlobFile> open(const std::filesystem::path& path, const BlobInfo& blob);
  BlobFile(BlobFile&&) noexcept;
  BlobFile& operator=(BlobFile&&) noexcept;
  ~BlobFile();

  const BlobInfo& info() const { return info_; }
  uint64_t file_size() const { return file_size_; }

  // The blob meta (reads ci_offset .. + ci_compressed_size + 4096).
  Result<BlobMeta> read_meta() const;
  // The ToC, if the blob has one.
  Result<std::vector<TocEntryInfo>> read_toc() const;
  // Read stored bytes [off, off+len) exactly.
  Status pread_exact(uint64_t off, std::span<uint8_t> out) const;
  // Read and decompress one chunk into `out` (size must equal the chunk's
  // uncompressed size). With `verify`, the digest must match.
  Status read_chunk(const ChunkRecord& c, std::span<uint8_t> out, bool verify) const;
  // The inlined bootstrap (image.boot ToC entry), decompressed.
  Result<std::vector<uint8_t>> read_inlined_bootstrap() const;

 private:
  BlobFile() = default;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  BlobInfo info_;
};

}  // namespace nydus::format
