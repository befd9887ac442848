// Per-chunk compression as upstream Nydus does it: raw LZ4 blocks
// (LZ4_compress_default), single-shot zstd frames at level 3. Decompression
// always targets a buffer of the exact expected size, so a hostile stream can
// neither overflow it nor expand beyond it (no decompression bombs).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "format/layout.h"

namespace nydus::format {

Result<Compressor> parse_compressor(std::string_view name);
const char* compressor_name(Compressor c);

// Compress `in` into `out` (resized to the compressed length). Returns false
// when the output would not be strictly smaller than the input: the caller
// then stores the chunk raw, as upstream does.
Result<bool> compress(Compressor c, std::span<const uint8_t> in, std::vector<uint8_t>& out);

// Worst-case compressed size of `n` bytes (buffer size for compress_into).
size_t compress_bound(Compressor c, size_t n);

// Compress into a caller-owned buffer of at least compress_bound() bytes (no
// allocation, no zero-filling: the chunk pipeline calls this per chunk).
// Returns the compressed length, or nullopt when it would not be strictly
// smaller than the input (store raw). zstd contexts are reused per thread;
// the output equals single-shot ZSTD_compress at level 3.
Result<std::optional<size_t>> compress_into(Compressor c, std::span<const uint8_t> in, std::span<uint8_t> out);

// Decompress `in` into exactly `out.size()` bytes; any other length is kCorrupt.
Status decompress(Compressor c, std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace nydus::format
