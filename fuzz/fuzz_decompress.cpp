// Fuzz target: decompress. Byte 0 picks the compressor (bits 0-1: zstd, lz4
// block, none, gzip) and a size scale (bit 2: ×64), bytes 1-2 the expected
// output size (so up to 64 KiB, or 4 MiB scaled), byte 3 is unused; the rest
// is the compressed stream. The output buffer has exactly that size (not
// zero-filled, so ASan sees any write past it), as for a chunk.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "format/compress.h"

using namespace nydus::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  static constexpr Compressor kCs[] = {Compressor::kZstd, Compressor::kLz4Block, Compressor::kNone,
                                       Compressor::kGzip};
  const Compressor c = kCs[data[0] & 3];
  size_t out_len = size_t(data[1]) | size_t(data[2]) << 8;
  if (data[0] & 4) out_len <<= 6;
  std::unique_ptr<uint8_t[]> out(new uint8_t[out_len ? out_len : 1]);
  (void)decompress(c, std::span<const uint8_t>(data + 4, size - 4), std::span<uint8_t>(out.get(), out_len));
  return 0;
}
