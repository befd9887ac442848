// Fuzz target: batch-chunk and encrypted blob meta (parse_blob_meta with
// BATCH / ENCRYPTED) and the batch/decrypt decode of the chunks it yields.
// Input: [mode][compressor][2 spare] then the blob meta (ci buffer + 4096-byte
// header); the blob-table ci fields are copied from that header so the fuzzer
// reaches the batch table. Mode bit 0 adds BATCH|CHUNK_INFO_V2, bit 1 a fixed
// AES-128-XTS key. Every resolved chunk is then decoded from the input's
// first bytes, as if they were the blob.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "format/blob_cipher.h"
#include "format/blob_reader.h"
#include "format/chunk_decode.h"
#include "blob_meta_header.h"

using namespace nydus::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kPrefix = 4;
  if (size < kPrefix + 4096) return 0;
  const uint8_t mode = data[0];
  std::span<const uint8_t> meta(data + kPrefix, size - kPrefix);
  BlobInfo b;
  b.blob_id = "fuzz";
  b.compressor = Compressor(data[1] & 3);
  nydus::fuzz::ci_fields_from_header(meta, b);
  b.uncompressed_size = uint64_t(1) << 40;
  if (mode & 1) b.features |= blob_features::kBatch | blob_features::kChunkInfoV2;
  if (mode & 2) {
    XtsKey k;
    for (int i = 0; i < 32; i++) k.key[i] = uint8_t(i);
    for (int i = 0; i < 16; i++) k.iv[i] = uint8_t(100 + i);
    set_blob_xts_key(b, k);
  }
  auto m = parse_blob_meta(meta, b);
  if (!m) return 0;
  std::vector<uint8_t> out;
  for (size_t i = 0; i < m->chunks.size() && i < 64; i++) {
    const auto& d = m->chunks[i];
    if (d.compressed_offset > size || d.compressed_size > size - d.compressed_offset) continue;
    ChunkRecord r;
    r.compressed_offset = d.compressed_offset;
    r.compressed_size = d.compressed_size;
    r.uncompressed_size = d.uncompressed_size;
    r.compressed = d.compressed;
    r.encrypted = d.encrypted;
    r.batch = d.batch;
    r.batch_size = d.batch_size;
    r.offset_in_batch = d.offset_in_batch;
    out.resize(r.uncompressed_size);
    (void)decode_chunk(b, r, std::span(data + d.compressed_offset, d.compressed_size), out);
  }
  return 0;
}
