// `nydus-image create --type estargztoc-ref`: a RAFS v6 bootstrap from an
// eStargz TOC (stargz.index.json, the SOURCE) whose data blob is the eStargz
// layer itself (--blob-id, --blob-data-size); nothing but the bootstrap is
// written. As upstream (builder/src/stargz.rs, nydus-image main.rs):
//   - blob compressor gzip, digester sha256, chunk size 4 MiB by default,
//     blob features ALIGNED|CAP_TAR_TOC without CHUNK_INFO_V2 (upstream's
//     "legacy stargz" blob, storage/src/device.rs);
//   - a chunk per TOC data entry ("reg" and "chunk"): its digest is the
//     entry's chunkDigest, its compressed offset the entry's gzip member
//     offset, its compressed size an upper bound of the member's deflate
//     size clamped to the next chunk's offset (compute_compressed_gzip_size);
//   - the TOC's own files (stargz.index.json, landmarks) are not in the tree.
// Ours differs where upstream's result is unusable or unchecked: no ci array
// is recorded in the blob table (upstream records one it never writes; the
// bootstrap's chunk table locates the chunks instead, see
// Bootstrap::adopt_stargz_chunks), identical chunks share one ci entry, mtime
// comes from "modtime", devices and fifos are kept, and the TOC is checked
// (overlapping or out-of-layer offsets, holes) before anything is written.
// Payloads that share a gzip member (innerOffset: layers made with eStargz's
// min chunk size, which upstream reads from the member's start, wrongly)
// become slices of the member's inflated head (Bootstrap::adopt_stargz_chunks).
// Reads verify chunkDigest.
#pragma once

#include "builder/create_image.h"

namespace nydus::builder {

// Upstream's default --chunk-size for estargztoc-ref (eStargz's own default).
inline constexpr uint32_t kEstargzChunkSize = 0x400000;

Result<CreateReport> create_estargz_toc_image(const CreateOptions& opts);

// Upper bound of the gzip-compressed size of `size` bytes, as upstream's
// compute_compressed_gzip_size (header, trailer, deflate block overhead).
uint64_t gzip_compressed_bound(uint64_t size);

}  // namespace nydus::builder
