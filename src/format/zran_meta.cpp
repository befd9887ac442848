#include "format/zran_meta.h"

#include <cstring>

#include "format/compress.h"

namespace nydus::format {

namespace {

bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

ChunkInfoV2 encode_zran_ci_v2(const ZranChunk& z) {
  const DecodedChunkInfo& c = z.ci;
  ChunkInfoV2 e;
  const uint8_t flags = ci_v2_flags::kCompressed | ci_v2_flags::kZran;
  e.uncomp_info = ((c.uncompressed_offset >> 12) & 0xFFFF'FFFFull) |
                  (uint64_t(c.uncompressed_size - 1) & 0xFF'FFFF) << 32 | uint64_t(flags) << 56;
  e.comp_info = (c.compressed_offset & 0xFF'FFFF'FFFFull) | (uint64_t(c.compressed_size) & 0xFF'FFFF) << 40;
  e.data = uint64_t(z.zran_index) << 32 | z.zran_offset;
  return e;
}

}  // namespace

Result<ZranMeta> parse_zran_ci(std::span<const uint8_t> ci, const BlobMetaHeader& h, const ZranLimits& lim) {
  constexpr uint32_t kNeeded = blob_features::kZran | blob_features::kChunkInfoV2;
  if ((h.features & kNeeded) != kNeeded)
    return corrupt("blob meta features {:#x} lack ZRAN|CHUNK_INFO_V2", h.features);
  if (h.features & (blob_features::kBatch | blob_features::kEncrypted))
    return errorf(Errc::kUnsupported, "ZRAN blob meta with batch/encrypted features {:#x}", h.features);
  if (h.ci_entries == 0 || h.ci_entries > kMaxChunksPerBlob)
    return corrupt("ZRAN blob meta has {} entries", h.ci_entries);
  if (h.ci_uncompressed_size != ci.size())
    return corrupt("ci buffer is {} bytes, header says {}", ci.size(), h.ci_uncompressed_size);
  // Upstream (meta/mod.rs validate_header): the context table starts right
  // after the V2 array, holds at most one context per chunk, and the table
  // plus dictionaries end inside the ci buffer.
  const uint64_t array_size = uint64_t(h.ci_entries) * sizeof(ChunkInfoV2);
  if (h.ci_zran_offset != array_size)
    return corrupt("ZRAN table at {:#x}, expected right after the ci array at {:#x}", h.ci_zran_offset,
                   array_size);
  if (!fits(h.ci_zran_offset, h.ci_zran_size, ci.size()))
    return corrupt("ZRAN table {:#x}+{} beyond the {}-byte ci buffer", h.ci_zran_offset, h.ci_zran_size,
                   ci.size());
  if (h.ci_zran_count == 0 || h.ci_zran_count > h.ci_entries)
    return corrupt("ZRAN context count {} outside 1..{}", h.ci_zran_count, h.ci_entries);
  const uint64_t table_size = uint64_t(h.ci_zran_count) * sizeof(ZranInflateContextOnDisk);
  if (table_size > h.ci_zran_size)
    return corrupt("{} ZRAN contexts do not fit in {} bytes", h.ci_zran_count, h.ci_zran_size);
  if (lim.layer_size == 0) return errorf(Errc::kInvalidArgument, "ZRAN meta needs the layer size");

  ZranMeta m;
  const uint8_t* table = ci.data() + h.ci_zran_offset;
  const uint64_t dict_table_size = h.ci_zran_size - table_size;
  m.dicts.assign(table + table_size, table + table_size + dict_table_size);
  m.contexts.reserve(h.ci_zran_count);
  for (uint32_t i = 0; i < h.ci_zran_count; i++) {
    const auto d = load<ZranInflateContextOnDisk>(table + uint64_t(i) * sizeof(ZranInflateContextOnDisk));
    ZranContext c{d.in_offset, d.out_offset, d.in_len, d.out_len, d.ctx_byte, d.ctx_bits, d.dict_offset,
                  d.dict_size};
    if (c.in_len == 0 || !fits(c.in_offset, c.in_len, lim.layer_size))
      return corrupt("ZRAN context {}: compressed span {:#x}+{} outside the {}-byte layer", i, c.in_offset,
                     c.in_len, lim.layer_size);
    if (c.out_len == 0 || c.out_len > kZranMaxContextOutput || !fits(c.out_offset, c.out_len, uint64_t(1) << 56))
      return corrupt("ZRAN context {}: output {:#x}+{} out of range", i, c.out_offset, c.out_len);
    if (c.ctx_bits > 7) return corrupt("ZRAN context {}: {} pending bits", i, c.ctx_bits);
    if (c.dict_size > kZranWindowSize || !fits(c.dict_offset, c.dict_size, dict_table_size))
      return corrupt("ZRAN context {}: dictionary {:#x}+{} beyond the {}-byte table", i, c.dict_offset,
                     c.dict_size, dict_table_size);
    // A context without a window can only be the start of a gzip member.
    if (c.dict_size == 0 && c.ctx_bits != 0)
      return corrupt("ZRAN context {}: pending bits without a window", i);
    // The generator walks the layer once: checkpoints never go backwards.
    if (i > 0 && (c.in_offset < m.contexts.back().in_offset || c.out_offset < m.contexts.back().out_offset))
      return corrupt("ZRAN context {} ({:#x}/{:#x}) goes backwards", i, c.in_offset, c.out_offset);
    m.contexts.push_back(c);
  }

  m.chunks.reserve(h.ci_entries);
  for (uint32_t i = 0; i < h.ci_entries; i++) {
    ZranChunk z;
    z.ci = decode_ci_v2(load<ChunkInfoV2>(ci.data() + uint64_t(i) * sizeof(ChunkInfoV2)));
    const DecodedChunkInfo& c = z.ci;
    if (c.v2_flags & ~ci_v2_flags::kKnownMask) return corrupt("ci entry {} has unknown flags {:#x}", i, c.v2_flags);
    if (!(c.v2_flags & ci_v2_flags::kZran) || (c.v2_flags & (ci_v2_flags::kBatch | ci_v2_flags::kEncrypted)))
      return corrupt("ci entry {} in a ZRAN blob has flags {:#x}", i, c.v2_flags);
    z.zran_index = uint32_t(c.v2_data >> 32);
    z.zran_offset = uint32_t(c.v2_data);
    if (z.zran_index >= m.contexts.size())
      return corrupt("ci entry {}: ZRAN index {} beyond {} contexts", i, z.zran_index, m.contexts.size());
    const ZranContext& x = m.contexts[z.zran_index];
    if (c.uncompressed_size > kMaxChunkSize || !fits(z.zran_offset, c.uncompressed_size, x.out_len))
      return corrupt("ci entry {}: bytes {:#x}+{} beyond context {}'s {} bytes of output", i, z.zran_offset,
                     c.uncompressed_size, z.zran_index, x.out_len);
    if (c.compressed_offset < x.in_offset ||
        !fits(c.compressed_offset - x.in_offset, c.compressed_size, x.in_len))
      return corrupt("ci entry {}: compressed span {:#x}+{} outside context {} ({:#x}+{})", i,
                     c.compressed_offset, c.compressed_size, z.zran_index, x.in_offset, x.in_len);
    if (c.uncompressed_offset % kBlockSize != 0)
      return corrupt("ci entry {}: uncompressed offset {:#x} not 4K aligned", i, c.uncompressed_offset);
    if (lim.uncompressed_size && !fits(c.uncompressed_offset, c.uncompressed_size, lim.uncompressed_size))
      return corrupt("ci entry {}: uncompressed range {:#x}+{} beyond blob size {:#x}", i,
                     c.uncompressed_offset, c.uncompressed_size, lim.uncompressed_size);
    m.chunks.push_back(z);
  }
  return m;
}

Result<ZranMeta> parse_zran_blob_meta_cache(std::span<const uint8_t> file, const ZranLimits& lim) {
  if (file.size() < kBlobMetaHeaderSize || file.size() % kBlockSize != 0)
    return corrupt("blob.meta of {} bytes is not 4 KiB blocks ending in a header", file.size());
  const auto h = load<BlobMetaHeader>(file.data() + file.size() - kBlobMetaHeaderSize);
  if (h.magic != kBlobMetaMagic || h.magic2 != kBlobMetaMagic)
    return corrupt("blob.meta header magic {:#x}/{:#x}", h.magic, h.magic2);
  if (align_up(h.ci_uncompressed_size, kBlockSize) != file.size() - kBlobMetaHeaderSize)
    return corrupt("blob.meta holds {} bytes of ci data, header says {}", file.size() - kBlobMetaHeaderSize,
                   h.ci_uncompressed_size);
  return parse_zran_ci(file.first(h.ci_uncompressed_size), h, lim);
}

std::vector<uint8_t> encode_zran_ci(const std::vector<ZranChunk>& chunks,
                                    const std::vector<ZranContext>& contexts,
                                    const std::vector<std::vector<uint8_t>>& dict_of) {
  std::vector<uint8_t> out;
  out.reserve(chunks.size() * sizeof(ChunkInfoV2) + contexts.size() * (sizeof(ZranInflateContextOnDisk) + kZranWindowSize));
  for (const ZranChunk& z : chunks) {
    const ChunkInfoV2 e = encode_zran_ci_v2(z);
    const auto* p = reinterpret_cast<const uint8_t*>(&e);
    out.insert(out.end(), p, p + sizeof(e));
  }
  uint64_t dict_off = 0;
  for (size_t i = 0; i < contexts.size(); i++) {
    const ZranContext& c = contexts[i];
    ZranInflateContextOnDisk d{};
    d.in_offset = c.in_offset;
    d.out_offset = c.out_offset;
    d.dict_offset = dict_off;
    d.in_len = c.in_len;
    d.out_len = c.out_len;
    d.dict_size = uint32_t(dict_of[i].size());
    d.ctx_byte = c.ctx_byte;
    d.ctx_bits = c.ctx_bits;
    const auto* p = reinterpret_cast<const uint8_t*>(&d);
    out.insert(out.end(), p, p + sizeof(d));
    dict_off += dict_of[i].size();
  }
  for (const auto& w : dict_of) out.insert(out.end(), w.begin(), w.end());
  return out;
}

bool zran_header_matches(const BlobMetaHeader& h, const BlobInfo& b) {
  return h.magic == kBlobMetaMagic && h.magic2 == kBlobMetaMagic && h.ci_entries == b.chunk_count &&
         h.ci_compressor == uint32_t(b.ci_compressor) && h.ci_offset == b.ci_offset &&
         h.ci_compressed_size == b.ci_compressed_size && h.ci_uncompressed_size == b.ci_uncompressed_size &&
         (h.features & blob_features::kZran);
}

Result<ZranMetaBlob> decode_zran_meta_blob(std::span<const uint8_t> raw, const BlobInfo& b, std::string_view what) {
  if (raw.size() != b.ci_compressed_size + kBlobMetaHeaderSize)
    return corrupt("ZRAN meta blob {}: {} bytes read, {} expected", what, raw.size(),
                   b.ci_compressed_size + kBlobMetaHeaderSize);
  const auto h = load<BlobMetaHeader>(raw.data() + b.ci_compressed_size);
  if (!zran_header_matches(h, b)) return corrupt("ZRAN meta blob {}: header does not match the blob table", what);
  if (b.ci_compressor == Compressor::kNone && b.ci_compressed_size != b.ci_uncompressed_size)
    return corrupt("ZRAN meta blob {}: raw ci with sizes {}/{}", what, b.ci_compressed_size, b.ci_uncompressed_size);
  std::vector<uint8_t> ci(b.ci_uncompressed_size);
  NYDUS_TRY(decompress(b.ci_compressor, raw.first(b.ci_compressed_size), ci));
  NYDUS_ASSIGN_OR_RETURN(ZranMeta m, parse_zran_ci(ci, h, {b.compressed_size, b.uncompressed_size}));
  return ZranMetaBlob{std::move(m), h, std::move(ci)};
}

}  // namespace nydus::format
