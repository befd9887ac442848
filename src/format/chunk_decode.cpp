#include "format/chunk_decode.h"

#include <cstring>
#include <string>
#include <vector>

#include "format/blob_cipher.h"
#include "format/compress.h"
#include "format/digest.h"
#include "format/layout.h"

namespace nydus::format {

Status decode_chunk(Compressor blob_compressor, const ChunkRecord& c, std::span<const uint8_t> stored,
                    std::span<uint8_t> out) {
  if (c.uncompressed_size == 0 || c.uncompressed_size > kMaxChunkSize || c.compressed_size == 0 ||
      c.compressed_size > kMaxChunkSize)
    return corrupt("chunk sizes {}/{} outside 1..16M", c.compressed_size, c.uncompressed_size);
  if (stored.size() != c.compressed_size || out.size() != c.uncompressed_size)
    return errorf(Errc::kInvalidArgument, "buffers of {}/{} bytes for a chunk of {}/{}", stored.size(), out.size(),
                  c.compressed_size, c.uncompressed_size);
  if (!c.compressed) {
    if (c.compressed_size != c.uncompressed_size)
      return corrupt("raw chunk with sizes {}/{}", c.compressed_size, c.uncompressed_size);
    return decompress(Compressor::kNone, stored, out);  // a memmove: in place is fine
  }
  return decompress(blob_compressor, stored, out);
}

Status decode_chunk(const BlobInfo& blob, const ChunkRecord& c, std::span<const uint8_t> stored,
                    std::span<uint8_t> out) {
  if (!c.encrypted && !c.batch) return decode_chunk(blob.compressor, c, stored, out);
  if (c.uncompressed_size == 0 || c.uncompressed_size > kMaxChunkSize || c.compressed_size == 0 ||
      c.compressed_size > kMaxChunkSize)
    return corrupt("chunk sizes {}/{} outside 1..16M", c.compressed_size, c.uncompressed_size);
  if (stored.size() != c.compressed_size || out.size() != c.uncompressed_size)
    return errorf(Errc::kInvalidArgument, "buffers of {}/{} bytes for a chunk of {}/{}", stored.size(), out.size(),
                  c.compressed_size, c.uncompressed_size);
  std::vector<uint8_t> decrypted;
  std::span<const uint8_t> plain = stored;
  if (c.encrypted) {
    NYDUS_ASSIGN_OR_RETURN(std::optional<XtsKey> key, blob_xts_key(blob));
    if (!key) return corrupt("encrypted chunk in blob {} that has no cipher", blob.blob_id);
    NYDUS_ASSIGN_OR_RETURN(decrypted, xts_decrypt(*key, stored));
    plain = decrypted;
  }
  if (!c.batch) {
    if (c.compressed) return decompress(blob.compressor, plain, out);
    if (plain.size() != out.size())
      return corrupt("raw encrypted chunk decrypts to {} bytes, expected {}", plain.size(), out.size());
    std::memcpy(out.data(), plain.data(), out.size());
    return ok();
  }
  if (c.batch_size == 0 || c.batch_size > kMaxChunkSize || c.offset_in_batch > c.batch_size ||
      c.uncompressed_size > c.batch_size - c.offset_in_batch)
    return corrupt("batch chunk {:#x}+{} outside its batch of {} bytes", c.offset_in_batch, c.uncompressed_size,
                   c.batch_size);
  // A batch holds several chunks a reader usually wants together: keep the
  // last decoded one per thread (keyed by blob and stored range).
  struct LastBatch {
    std::string blob_id;
    uint64_t offset = ~0ull;
    uint32_t size = 0;
    std::vector<uint8_t> data;
  };
  thread_local LastBatch last;
  if (last.blob_id != blob.blob_id || last.offset != c.compressed_offset || last.size != c.compressed_size ||
      last.data.size() != c.batch_size) {
    last.offset = ~0ull;
    // Upstream decompresses a batch iff its stored size differs from its
    // decoded size (the builder stores it raw when compression does not help).
    // A gzip "batch" is the head of an eStargz member: always inflated.
    std::vector<uint8_t> data(c.batch_size);
    if (plain.size() == c.batch_size && blob.compressor != Compressor::kGzip) {
      std::memcpy(data.data(), plain.data(), data.size());
    } else {
      NYDUS_TRY(decompress(blob.compressor, plain, data));
    }
    last.blob_id = blob.blob_id;
    last.offset = c.compressed_offset;
    last.size = c.compressed_size;
    last.data = std::move(data);
  }
  std::memcpy(out.data(), last.data.data() + c.offset_in_batch, out.size());
  return ok();
}

Status verify_chunk(Digester d, const ChunkRecord& c, std::span<const uint8_t> data, const Digest& expected) {
  if (compute_digest(d, data) != expected)
    return corrupt("chunk digest mismatch at blob offset {:#x} (ci index {})", c.compressed_offset, c.ci_index);
  return ok();
}

}  // namespace nydus::format
