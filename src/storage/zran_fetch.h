// Reading a ZRAN blob (a gzip layer referenced by `--type targz-ref`): its
// ci array and inflate contexts come from the meta blob, and a chunk's bytes
// from the layer itself, by fetching the compressed span from its context's
// checkpoint to the chunk's end and inflating from the checkpoint (upstream
// storage/src/cache: the chunk's zran context, ZranDecoder::uncompress).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <span>

#include "common/result.h"
#include "format/blob_info.h"
#include "format/zran_meta.h"
#include "storage/backend.h"

namespace nydus::storage {

// The ZRAN meta of `blob`: from `<work_dir>/<blob id>.blob.meta` (upstream's
// cache layout) when it is there and valid, else from the meta blob
// (backend object hex(blob_meta_digest), ci_offset.. + ci size + 4096-byte
// header), then cached. `bytes_fetched` counts backend bytes.
Result<std::shared_ptr<const format::ZranMeta>> load_zran_meta(const format::BlobInfo& blob, Backend& backend,
                                                                 const std::filesystem::path& work_dir,
                                                                 uint64_t* bytes_fetched);

// A run may go on into later contexts while their chunks' compressed bytes
// start within this many bytes of what the run fetches already...
inline constexpr uint64_t kZranJoinGap = 4096;
// ...and while its output stays within this (one buffer of the fetching thread).
inline constexpr uint64_t kZranMaxJoinedOutput = 8u << 20;

// End of the run of `cis` (sorted by compressed offset) starting at i that
// one fetch and one inflate from the first chunk's checkpoint can serve:
// chunks of its context, then of later contexts whose bytes follow on
// (kZranJoinGap), the output within `max_bytes` (kZranMaxJoinedOutput once it
// spans contexts). Sequential reads then fetch each byte of the layer once: a
// context's last chunk reaches into the next context's span, and a fetch per
// context fetched that part twice.
size_t zran_run_end(const format::ZranMeta& m, std::span<const uint32_t> cis, size_t i, uint64_t max_bytes);

// Fetch and inflate the chunks `cis` (one run, see zran_run_end) and hand
// each one's bytes to `fn`. A chunk whose bytes cannot be produced exactly is
// an error for the whole run (nothing handed over for it).
using ZranChunkFn = std::function<Status(uint32_t ci, std::span<const uint8_t> data)>;
Status read_zran_run(const format::ZranMeta& m, const format::BlobInfo& blob, Backend& backend,
                     std::span<const uint32_t> cis, const ZranChunkFn& fn, uint64_t* bytes_fetched);

}  // namespace nydus::storage
