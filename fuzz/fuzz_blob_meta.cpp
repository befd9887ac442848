// Fuzz target: parse_blob_meta. The first 48 bytes give the blob-table entry
// (BlobInfo); the rest is the blob meta (ci array + 4096-byte header). With
// bit 0 of the mode byte set, the ci fields of BlobInfo are copied from the
// header found at the end of the input so the fuzzer gets past the
// table/header agreement checks into decompression and ci decoding.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "format/blob_reader.h"
#include "blob_meta_header.h"

using namespace nydus::format;

namespace {
template <class T>
T take(const uint8_t*& p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  p += sizeof(v);
  return v;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kPrefix = 48;
  if (size < kPrefix) return 0;
  const uint8_t* p = data;
  BlobInfo b;
  const uint8_t mode = take<uint8_t>(p);
  b.compressor = Compressor(take<uint8_t>(p) & 3);
  b.ci_compressor = Compressor(take<uint8_t>(p) & 3);
  (void)take<uint8_t>(p);
  b.chunk_count = take<uint32_t>(p);
  b.features = take<uint32_t>(p);
  b.chunk_size = take<uint32_t>(p);
  b.compressed_size = take<uint64_t>(p);
  b.uncompressed_size = take<uint64_t>(p);
  b.ci_offset = take<uint64_t>(p);
  b.ci_uncompressed_size = take<uint32_t>(p);
  b.ci_compressed_size = take<uint32_t>(p);
  std::span<const uint8_t> meta(data + kPrefix, size - kPrefix);
  if (mode & 1) nydus::fuzz::ci_fields_from_header(meta, b);
  auto m = parse_blob_meta(meta, b);
  if (m && !m->chunks.empty()) (void)m->chunks.back().uncompressed_size;
  return 0;
}
