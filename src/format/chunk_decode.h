// A chunk's stored bytes -> its data, and the digest check. The one
// implementation: `nydus-image check`/`unpack`/`export` (BlobFile::read_chunk)
// and nydusd's blob cache both decode through here, so `check` validates the
// path the daemon runs.
#pragma once

#include <cstdint>
#include <span>

#include "common/result.h"
#include "format/blob_info.h"

namespace nydus::format {

// Decode `stored` (the chunk's compressed_size bytes as they sit in the blob)
// into `out` (exactly its uncompressed_size bytes), with the blob's
// compressor. The record is untrusted: its sizes are checked first. A raw
// chunk is copied, or left in place when `stored` and `out` are the same bytes.
Status decode_chunk(Compressor blob_compressor, const ChunkRecord& c, std::span<const uint8_t> stored,
                    std::span<uint8_t> out);

// The same for any chunk of `blob`: encrypted chunks are decrypted with the
// blob's key first (a wrong key is an error, never wrong bytes: the
// decompressor or the size check fails, and the digest check catches the
// rest), and a batch chunk decodes its whole batch (`stored` is the batch)
// and takes its slice. Raw unencrypted chunks may decode in place.
Status decode_chunk(const BlobInfo& blob, const ChunkRecord& c, std::span<const uint8_t> stored,
                    std::span<uint8_t> out);

// The decoded data against the chunk's digest `expected`.
Status verify_chunk(Digester d, const ChunkRecord& c, std::span<const uint8_t> data, const Digest& expected);

}  // namespace nydus::format
