#include "format/chunk_decode.h"

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

Status verify_chunk(Digester d, const ChunkRecord& c, std::span<const uint8_t> data, const Digest& expected) {
  if (compute_digest(d, data) != expected)
    return corrupt("chunk digest mismatch at blob offset {:#x} (ci index {})", c.compressed_offset, c.ci_index);
  return ok();
}

}  // namespace nydus::format
