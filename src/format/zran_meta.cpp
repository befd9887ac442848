#include "format/zran_meta.h"

#include <zstd.h>

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

namespace {

// `ci` = the first bytes of a ci buffer of `ci_total` bytes: all of it, or
// (without dictionaries) at least the ci array and the context table.
Result<ZranMeta> parse_zran(std::span<const uint8_t> ci, uint64_t ci_total, const BlobMetaHeader& h,
                            const ZranLimits& lim, bool with_dicts) {
  constexpr uint32_t kNeeded = blob_features::kZran | blob_features::kChunkInfoV2;
  if ((h.features & kNeeded) != kNeeded)
    return corrupt("blob meta features {:#x} lack ZRAN|CHUNK_INFO_V2", h.features);
  if (h.features & (blob_features::kBatch | blob_features::kEncrypted))
    return errorf(Errc::kUnsupported, "ZRAN blob meta with batch/encrypted features {:#x}", h.features);
  if (h.ci_entries == 0 || h.ci_entries > kMaxChunksPerBlob)
    return corrupt("ZRAN blob meta has {} entries", h.ci_entries);
  if (h.ci_uncompressed_size != ci_total)
    return corrupt("ci buffer is {} bytes, header says {}", ci_total, h.ci_uncompressed_size);
  // Upstream (meta/mod.rs validate_header): the context table starts right
  // after the V2 array, holds at most one context per chunk, and the table
  // plus dictionaries end inside the ci buffer.
  const uint64_t array_size = uint64_t(h.ci_entries) * sizeof(ChunkInfoV2);
  if (h.ci_zran_offset != array_size)
    return corrupt("ZRAN table at {:#x}, expected right after the ci array at {:#x}", h.ci_zran_offset,
                   array_size);
  if (!fits(h.ci_zran_offset, h.ci_zran_size, ci_total))
    return corrupt("ZRAN table {:#x}+{} beyond the {}-byte ci buffer", h.ci_zran_offset, h.ci_zran_size,
                   ci_total);
  if (h.ci_zran_count == 0 || h.ci_zran_count > h.ci_entries)
    return corrupt("ZRAN context count {} outside 1..{}", h.ci_zran_count, h.ci_entries);
  const uint64_t table_size = uint64_t(h.ci_zran_count) * sizeof(ZranInflateContextOnDisk);
  if (table_size > h.ci_zran_size)
    return corrupt("{} ZRAN contexts do not fit in {} bytes", h.ci_zran_count, h.ci_zran_size);
  if (lim.layer_size == 0) return errorf(Errc::kInvalidArgument, "ZRAN meta needs the layer size");
  if (ci.size() < h.ci_zran_offset + (with_dicts ? h.ci_zran_size : table_size))
    return corrupt("ZRAN ci buffer: {} bytes at hand, the tables need more", ci.size());

  ZranMeta m;
  const uint8_t* table = ci.data() + h.ci_zran_offset;
  const uint64_t dict_table_size = h.ci_zran_size - table_size;
  m.dict_table_offset = h.ci_zran_offset + table_size;
  m.dict_table_size = dict_table_size;
  m.lazy_dicts = !with_dicts;
  if (with_dicts) m.dicts.assign(table + table_size, table + table_size + dict_table_size);
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
    // A context without a window is a member start or a boundary in stored
    // blocks (pending bits too, after a Huffman block): a wrong one fails
    // inflate ("too far back") or the chunk digest, never passes wrong bytes.
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

}  // namespace

Result<ZranMeta> parse_zran_ci(std::span<const uint8_t> ci, const BlobMetaHeader& h, const ZranLimits& lim) {
  return parse_zran(ci, ci.size(), h, lim, true);
}

uint64_t zran_tables_size(const BlobMetaHeader& h) {
  return h.ci_zran_offset + uint64_t(h.ci_zran_count) * sizeof(ZranInflateContextOnDisk);
}

Result<ZranMeta> parse_zran_tables(std::span<const uint8_t> head, const BlobMetaHeader& h, const ZranLimits& lim) {
  return parse_zran(head, h.ci_uncompressed_size, h, lim, false);
}

namespace {

constexpr uint32_t kIndexFrameMagic = 0x184D2A5E;  // a zstd skippable frame
constexpr char kIndexTag[8] = {'N', 'Y', 'D', 'U', 'S', '-', 'Z', 'W'};

Status zstd_frame(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
  const size_t at = out.size();
  out.resize(at + ZSTD_compressBound(in.size()));
  const size_t n = ZSTD_compress(out.data() + at, out.size() - at, in.data(), in.size(), 3);
  if (ZSTD_isError(n)) return errorf(Errc::kInternal, "zstd: {}", ZSTD_getErrorName(n));
  out.resize(at + n);
  return ok();
}

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(v));
}

}  // namespace

// Index payload: tag, count, tables frame size, count + 1 window offsets.
uint64_t index_payload_size(uint64_t count) { return sizeof(kIndexTag) + 16 + 8 * (count + 1); }

Result<std::vector<uint8_t>> encode_zran_ci_frames(std::span<const uint8_t> ci, uint64_t tables_size,
                                                   const std::vector<std::vector<uint8_t>>& dict_of) {
  std::vector<uint8_t> tables, windows;
  NYDUS_TRY(zstd_frame(ci.first(tables_size), tables));
  const uint64_t count = dict_of.size();
  const uint64_t head = 8 + index_payload_size(count) + tables.size();
  std::vector<uint64_t> offsets;
  for (const auto& w : dict_of) {
    offsets.push_back(head + windows.size());
    if (!w.empty()) NYDUS_TRY(zstd_frame(w, windows));
  }
  offsets.push_back(head + windows.size());
  std::vector<uint8_t> out;
  out.reserve(head + windows.size());
  put<uint32_t>(out, kIndexFrameMagic);
  put<uint32_t>(out, uint32_t(index_payload_size(count)));
  out.insert(out.end(), kIndexTag, kIndexTag + sizeof(kIndexTag));
  put<uint64_t>(out, count);
  put<uint64_t>(out, tables.size());
  for (uint64_t o : offsets) put<uint64_t>(out, o);
  out.insert(out.end(), tables.begin(), tables.end());
  out.insert(out.end(), windows.begin(), windows.end());
  return out;
}

uint64_t zran_frames_head_bound(uint32_t chunks) {
  const uint64_t tables = uint64_t(chunks) * (sizeof(ChunkInfoV2) + sizeof(ZranInflateContextOnDisk));
  return 8 + index_payload_size(chunks) + ZSTD_compressBound(tables);
}

std::optional<uint64_t> zran_frames_head_size(std::span<const uint8_t> first) {
  if (first.size() < kZranFramesProbe || load<uint32_t>(first.data()) != kIndexFrameMagic ||
      std::memcmp(first.data() + 8, kIndexTag, sizeof(kIndexTag)) != 0)
    return std::nullopt;
  const uint64_t index = load<uint32_t>(first.data() + 4);
  const uint64_t tables = load<uint64_t>(first.data() + 24);
  if (tables > (uint64_t(1) << 40)) return std::nullopt;  // nonsense: left to the full parse to refuse
  return 8 + index + tables;
}

bool zran_window_frames_valid(std::span<const uint64_t> off, const BlobMetaHeader& h, uint64_t head_end) {
  if (off.size() != uint64_t(h.ci_zran_count) + 1 || off.front() != head_end || off.back() > h.ci_compressed_size)
    return false;
  for (size_t i = 1; i < off.size(); i++)
    if (off[i] < off[i - 1] || off[i] - off[i - 1] > ZSTD_compressBound(kZranWindowSize)) return false;
  return true;
}

Result<std::optional<ZranFramedHead>> parse_zran_frames_head(std::span<const uint8_t> prefix, const BlobMetaHeader& h) {
  if (h.ci_compressor != uint32_t(Compressor::kZstd)) return std::nullopt;
  const auto head = zran_frames_head_size(prefix);
  if (!head) return std::nullopt;
  // From here on it says it is ours: anything inconsistent is corrupt.
  const uint64_t count = load<uint64_t>(prefix.data() + 16);
  const uint64_t index = load<uint32_t>(prefix.data() + 4);
  if (count != h.ci_zran_count || index != index_payload_size(count))
    return corrupt("ZRAN window index of {} entries for {} contexts", count, h.ci_zran_count);
  if (*head > prefix.size() || *head > h.ci_compressed_size)
    return corrupt("ZRAN framed head of {} bytes, {} at hand", *head, prefix.size());
  ZranFramedHead out;
  out.window_frames.resize(count + 1);
  std::memcpy(out.window_frames.data(), prefix.data() + kZranFramesProbe, 8 * (count + 1));
  if (!zran_window_frames_valid(out.window_frames, h, *head))
    return corrupt("ZRAN window index out of order or outside the {}-byte ci buffer", h.ci_compressed_size);
  const uint64_t tables = zran_tables_size(h);
  if (h.ci_zran_offset > h.ci_uncompressed_size || tables > h.ci_uncompressed_size ||
      tables > uint64_t(h.ci_entries) * (sizeof(ChunkInfoV2) + sizeof(ZranInflateContextOnDisk)))
    return corrupt("ZRAN tables of {} bytes in a {}-byte ci buffer", tables, h.ci_uncompressed_size);
  out.tables.resize(tables);
  const uint64_t frame_at = 8 + index;
  NYDUS_TRY(decompress(Compressor::kZstd, prefix.subspan(frame_at, *head - frame_at), out.tables));
  return out;
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
