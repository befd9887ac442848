// Fuzz target: parse_zran_blob_meta_cache (the ZRAN blob.meta: V2 ci array,
// inflate contexts, dictionaries, 4096-byte header). The first 8 bytes give
// the layer size to bound the contexts against; the rest is the file.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "format/zran_meta.h"

using namespace nydus::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t layer_size;
  std::memcpy(&layer_size, data, 8);
  auto m = parse_zran_blob_meta_cache(std::span<const uint8_t>(data + 8, size - 8), {layer_size, 1ull << 40});
  if (m) {
    // Every accepted chunk's context and window are addressable.
    for (const auto& z : m->chunks) (void)m->dict(m->contexts.at(z.zran_index)).size();
  }
  return 0;
}
