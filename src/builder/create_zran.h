// `nydus-image create --type targz-ref`: a RAFS v6 image whose data is the
// original gzip layer itself. Nothing is copied: the bootstrap's chunks point
// into the layer's uncompressed tar stream through zlib inflate checkpoints
// ("ZRAN"), kept with the ci array in a small meta blob. As upstream
// (builder/src/tarball.rs, core/blob.rs, lib.rs finalize_blob): the data blob
// id is sha256 of the layer and its compressed size the layer's size, the
// blob features are ALIGNED|CHUNK_INFO_V2|ZRAN|SEPARATE, chunks are sha256
// digested, and the meta blob (zstd ci buffer + 4096-byte header) is named by
// its own sha256, recorded in the blob table's blob_meta_digest/size.
#pragma once

#include "builder/create_image.h"

namespace nydus::builder {

// Output spacing of the inflate checkpoints (upstream cuts a context after
// about 1-2 MiB of output; a read inflates at most this much before its chunk).
inline constexpr uint64_t kZranCheckpointSpan = 1 << 20;

Result<CreateReport> create_zran_image(const CreateOptions& opts);

}  // namespace nydus::builder
