// Reading a ZRAN blob (a gzip layer referenced by `--type targz-ref`): its
// ci array and inflate contexts come from the meta blob, and a chunk's bytes
// from the layer itself, by fetching the compressed span from its context's
// checkpoint to the chunk's end and inflating from the checkpoint (upstream
// storage/src/cache: the chunk's zran context, ZranDecoder::uncompress).
#pragma once

#include <filesystem>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>

#include "common/result.h"
#include "format/blob_info.h"
#include "format/gzip_random.h"
#include "format/zran_meta.h"
#include "storage/backend.h"

namespace nydus::storage {

// A framed meta blob up to this size is fetched whole at mount (below).
inline constexpr uint64_t kZranWholeMeta = 256u << 10;

// The ZRAN meta of `blob`: from `<work_dir>/<blob id>.blob.meta` (upstream's
// cache layout) when it is there and valid, else from the meta blob
// (backend object hex(blob_meta_digest), ci_offset.. + ci size + 4096-byte
// header), then cached. `bytes_fetched` counts backend bytes.
//
// A meta blob whose ci buffer is stored as our builder frames it
// (format::encode_zran_ci_frames), or uncompressed, is read without its
// windows, most of its size (32 KiB per checkpoint): the header and the head
// of the ci buffer only (two ranges side by side; cached as `<blob
// id>.zran.tables`); each window is then fetched on first use (ZranDicts).
// A framed buffer of at most kZranWholeMeta bytes (sparse windows keep most
// metas small) comes whole with its header in one request instead, and its
// windows are decoded from memory on first use.
// Upstream's single zstd frame is fetched and decoded whole.
Result<std::shared_ptr<const format::ZranMeta>> load_zran_meta(const format::BlobInfo& blob, Backend& backend,
                                                                 const std::filesystem::path& work_dir,
                                                                 uint64_t* bytes_fetched);

// The windows of a meta loaded without them (ZranMeta::lazy_dicts): one
// range of the meta blob per context, fetched the first time a read starts
// there (concurrent readers of one context share the fetch), then kept,
// the last kResident of them (a read from a context fills the cache with
// its chunks, so its window is seldom wanted again).
class ZranDicts {
 public:
  ZranDicts(const format::ZranMeta& m, const format::BlobInfo& blob);
  using Window = std::shared_ptr<const std::vector<uint8_t>>;
  Result<Window> get(Backend& backend, uint32_t ctx, uint64_t* bytes_fetched);
  bool loaded(uint32_t ctx) const;

 private:
  const format::ZranMeta& m_;
  std::string meta_id_;
  uint64_t ci_offset_;  // the ci buffer's offset in the meta blob
  mutable std::mutex mu_;
  std::condition_variable cv_;
  static constexpr size_t kResident = 256;
  std::vector<Window> have_;
  std::deque<uint32_t> resident_;  // contexts whose window have_ holds, oldest first
  std::vector<uint8_t> busy_;
};

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
// The rest of a run whose head a reader waited for: the inflate state where
// the head's fetch ended, and what is left to fetch and hand over.
struct ZranTail {
  std::unique_ptr<format::InflateCursor> cursor;
  uint64_t base = 0;        // stream offset of the cursor's position 0
  uint32_t zran_index = 0;  // the run's context
  uint64_t next_in = 0;     // the layer bytes still to fetch: [next_in, in_end)
  uint64_t in_end = 0;
  std::vector<uint32_t> cis;
};

// `dicts`: the windows when m.lazy_dicts (fetched beside the layer's bytes).
// Only the first `head` chunks of the run are fetched and handed over when
// the rest lies after them: a reader waits for the bytes up to its chunk's
// end, not to its context's, and the rest comes back as a tail whose fetch
// goes on from there (finish_zran_tail) without fetching anything twice.
// `head` = cis.size(): the whole run, no tail.
Result<std::optional<ZranTail>> read_zran_run(const format::ZranMeta& m, const format::BlobInfo& blob,
                                              Backend& backend, ZranDicts* dicts, std::span<const uint32_t> cis,
                                              size_t head, const ZranChunkFn& fn, uint64_t* bytes_fetched);
Status finish_zran_tail(ZranTail& t, const format::ZranMeta& m, const format::BlobInfo& blob, Backend& backend,
                        const ZranChunkFn& fn, uint64_t* bytes_fetched);

}  // namespace nydus::storage
