// The ZRAN part of a blob meta: for a blob whose data is an original gzip
// layer (`nydus-image create --type targz-ref`), the V2 ci array is followed,
// inside the same ci buffer, by a table of 40-byte inflate contexts (zlib
// checkpoints) and the dictionary table they index. A chunk names its context
// (zran index) and where its bytes start in that context's output (zran
// offset). Layout: upstream storage/src/meta/zran.rs (ZranInflateContext) and
// storage/src/meta/mod.rs (BlobCompressionContextHeader s_ci_zran_*,
// validate_header); our spec: rafs-v6-format.md section "ZRAN blobs".
// Everything here is untrusted and bounded before use.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"
#include "format/layout.h"

namespace nydus::format {

#pragma pack(push, 1)
// On-disk ZranInflateContext (40 bytes, little endian).
struct ZranInflateContextOnDisk {
  uint64_t in_offset;    // compressed offset in the layer where inflate resumes
  uint64_t out_offset;   // uncompressed offset (in the tar stream) at that point
  uint64_t dict_offset;  // into the dictionary table
  uint32_t in_len;       // compressed bytes to feed from in_offset
  uint32_t out_len;      // uncompressed bytes produced from those
  uint32_t dict_size;    // window bytes (0 at the start of a stream, else ≤ 32 KiB)
  uint8_t ctx_byte;      // the byte before in_offset, when ctx_bits != 0
  uint8_t ctx_bits;      // bits of ctx_byte still unread at the checkpoint (0..7)
  uint8_t reserved1;
  uint8_t reserved2;
};
#pragma pack(pop)
static_assert(sizeof(ZranInflateContextOnDisk) == 40);

inline constexpr uint32_t kZranWindowSize = 32 * 1024;
// A context covers at most this much output; upstream cuts at 2 MiB plus one
// chunk, so 64 MiB is far above anything valid and bounds one inflate.
inline constexpr uint32_t kZranMaxContextOutput = 64u << 20;

struct ZranContext {
  uint64_t in_offset = 0;
  uint64_t out_offset = 0;
  uint32_t in_len = 0;
  uint32_t out_len = 0;
  uint8_t ctx_byte = 0;
  uint8_t ctx_bits = 0;
  uint64_t dict_offset = 0;  // into ZranMeta::dicts
  uint32_t dict_size = 0;
};

struct ZranChunk {
  DecodedChunkInfo ci;       // compressed_* = the layer span read while this chunk was produced
  uint32_t zran_index = 0;   // context
  uint32_t zran_offset = 0;  // offset of the chunk's first byte in the context's output
};

struct ZranMeta {
  std::vector<ZranChunk> chunks;      // by ci index
  std::vector<ZranContext> contexts;  // by zran index
  std::vector<uint8_t> dicts;         // the dictionary table (empty when lazy_dicts)
  uint64_t dict_table_offset = 0;     // where that table starts in the ci buffer
  uint64_t dict_table_size = 0;       // its size (every context's window is bounded inside it)
  bool lazy_dicts = false;            // parsed from the tables alone: windows are fetched per context
  std::vector<uint64_t> window_frames;  // lazy, framed ci buffer: where each window's zstd frame is stored
  std::vector<uint8_t> stored_windows;  // lazy, when fetched with the head: the stored buffer from window_frames[0] on

  std::span<const uint8_t> dict(const ZranContext& c) const {
    return std::span<const uint8_t>(dicts).subspan(c.dict_offset, c.dict_size);
  }
};

// What the blob table says about the blob, to bound the meta against.
struct ZranLimits {
  uint64_t layer_size = 0;         // size of the gzip layer (blob compressed_size)
  uint64_t uncompressed_size = 0;  // the blob's uncompressed (4 KiB aligned) layout; 0 = unchecked
};

// `ci` = the whole uncompressed ci buffer (ci_uncompressed_size bytes: V2 ci
// array, context table, dictionaries); `h` = its header.
Result<ZranMeta> parse_zran_ci(std::span<const uint8_t> ci, const BlobMetaHeader& h, const ZranLimits& lim);

// Without the dictionaries: `head` = at least the first zran_tables_size(h)
// bytes of the ci buffer (ci array and context table). Every window is still
// bounded inside the dictionary table; ZranMeta::dicts stays empty.
uint64_t zran_tables_size(const BlobMetaHeader& h);
Result<ZranMeta> parse_zran_tables(std::span<const uint8_t> head, const BlobMetaHeader& h, const ZranLimits& lim);

// The ci buffer stored as zstd frames, as our builder writes it: first a
// skippable frame (magic 0x184D2A5E) holding the index ("NYDUS-ZW", u64
// count, u64 size of the next frame, u64 offsets[count + 1] of each context's
// window frame in the stored buffer), then one frame for the ci array and
// context table, then one frame per window (none for an empty one: equal
// offsets). Any zstd decoder reads the whole as the plain ci buffer
// (upstream's ZSTD_decompressDCtx too); a reader that knows the index
// fetches the head (index + tables) at mount and a window on first use.
Result<std::vector<uint8_t>> encode_zran_ci_frames(std::span<const uint8_t> ci, uint64_t tables_size,
                                                   const std::vector<std::vector<uint8_t>>& dict_of);
struct ZranFramedHead {
  std::vector<uint8_t> tables;          // zran_tables_size(h) bytes of the ci buffer
  std::vector<uint64_t> window_frames;  // ci_zran_count + 1 offsets into the stored buffer
};
// From the first kZranFramesProbe bytes of a stored ci buffer: how long its
// head is (index and tables frame), or nullopt when it is not laid out this
// way (upstream's single frame).
inline constexpr size_t kZranFramesProbe = 32;
std::optional<uint64_t> zran_frames_head_size(std::span<const uint8_t> first);
// From the stored buffer's head (`prefix`, at least zran_frames_head_size
// bytes): nullopt when it is not laid out this way, an error when it claims
// to be and lies.
Result<std::optional<ZranFramedHead>> parse_zran_frames_head(std::span<const uint8_t> prefix, const BlobMetaHeader& h);
// The largest head a blob of `chunks` chunks can have.
uint64_t zran_frames_head_bound(uint32_t chunks);
// Whether `offsets` is a valid window index for `h` (monotonic, starting at
// `head_end`, inside the stored buffer, each frame no larger than a window
// can compress to).
bool zran_window_frames_valid(std::span<const uint64_t> offsets, const BlobMetaHeader& h, uint64_t head_end);

// The blob.meta cache file as upstream writes it (`<blob id>.blob.meta`):
// the uncompressed ci buffer padded to 4 KiB, then the 4096-byte header.
Result<ZranMeta> parse_zran_blob_meta_cache(std::span<const uint8_t> file, const ZranLimits& lim);

// Whether a blob.meta header describes `blob`'s ZRAN ci buffer as its blob
// table entry does (magics, entries, compressor, offset, sizes, ZRAN bit).
bool zran_header_matches(const BlobMetaHeader& h, const BlobInfo& blob);

// The ZRAN meta of `blob` from its meta blob: `raw` = the ci_compressed_size
// bytes at ci_offset, then the 4096-byte header. `what` names the source in
// errors. The header and the uncompressed ci buffer come back too, for
// whoever caches them (the blob.meta cache file).
struct ZranMetaBlob {
  ZranMeta meta;
  BlobMetaHeader header{};
  std::vector<uint8_t> ci;
};
Result<ZranMetaBlob> decode_zran_meta_blob(std::span<const uint8_t> raw, const BlobInfo& blob, std::string_view what);

// The inverse, for the builder: ci array ‖ context table ‖ dictionaries.
// `dict_of[i]` is context i's window.
std::vector<uint8_t> encode_zran_ci(const std::vector<ZranChunk>& chunks,
                                    const std::vector<ZranContext>& contexts,
                                    const std::vector<std::vector<uint8_t>>& dict_of);

}  // namespace nydus::format
