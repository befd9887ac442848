// Fuzz target: parse_zran_blob_meta_cache (the ZRAN blob.meta: V2 ci array,
// inflate contexts, dictionaries, 4096-byte header) and parse_zran_tables. The first 8 bytes give
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
  // The same bytes read the lazy way (header, then the tables only): every
  // window lies inside the dictionary table it would be fetched from.
  if (size >= 8 + kBlobMetaHeaderSize) {
    const auto h = load<BlobMetaHeader>(data + size - kBlobMetaHeaderSize);
    auto t = parse_zran_tables(std::span<const uint8_t>(data + 8, size - 8 - kBlobMetaHeaderSize), h,
                               {layer_size, 1ull << 40});
    if (t) {
      for (const auto& c : t->contexts)
        if (c.dict_offset + c.dict_size > t->dict_table_size) __builtin_trap();
      for (const auto& z : t->chunks) (void)t->contexts.at(z.zran_index);
    }
  }
  return 0;
}
