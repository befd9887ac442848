// Random access into a gzip stream (one or more members, as `gzip -dc` reads
// it) through zlib inflate checkpoints, the way ZRAN blobs are read: a
// checkpoint sits at a deflate block boundary and records the compressed and
// uncompressed offsets there, the bits of the boundary byte still unread, and
// the last 32 KiB of output (the window back-references may reach). Raw
// inflate resumes from it with inflatePrime + inflateSetDictionary (upstream
// utils/src/compress/zlib_random.rs does the same; zlib's examples/zran.c is
// the origin of the technique).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "common/result.h"

namespace nydus::format {

struct GzipCheckpoint {
  uint64_t in_offset = 0;   // first compressed byte still (partly) unread
  uint64_t out_offset = 0;  // uncompressed bytes produced before this point
  uint8_t bits = 0;         // 0..7 bits of the byte at in_offset - 1 still unread
  uint8_t prev_byte = 0;    // that byte (meaningful when bits != 0)
  std::vector<uint8_t> window;  // ≤ 32 KiB of output before out_offset (empty at a member start)
};

// What inflate needs to resume at a checkpoint (the window is borrowed).
struct InflatePoint {
  uint8_t bits = 0;
  uint8_t prev_byte = 0;
  std::span<const uint8_t> window;
};

// Inflate from a checkpoint: `input` = the layer's bytes from its in_offset
// on (as many as the caller has); writes exactly out.size() bytes of the
// uncompressed stream starting at its out_offset + skip. Crosses member
// boundaries (trailer, next header). Input that ends too early, or is not a
// valid continuation, is kCorrupt: never partial or wrong output.
Status inflate_from_checkpoint(const InflatePoint& at, std::span<const uint8_t> input, uint64_t skip, std::span<uint8_t> out);

// Inflate from a checkpoint in steps: compressed input arrives in pieces
// (ranges of the layer fetched one after another), output is taken in order.
// inflate_from_checkpoint is one cursor used once.
class InflateCursor {
 public:
  static Result<std::unique_ptr<InflateCursor>> start(const InflatePoint& at);
  ~InflateCursor();
  InflateCursor(const InflateCursor&) = delete;
  InflateCursor& operator=(const InflateCursor&) = delete;
  // Append the next compressed bytes (what inflate has not consumed yet is kept).
  void feed(std::span<const uint8_t> more);
  // The same, taking the buffer over without a copy when nothing is left over
  // from earlier input (a fetch buffer handed straight to inflate).
  void feed(std::vector<uint8_t>&& more);
  // Output bytes produced so far, counted from the checkpoint.
  uint64_t position() const { return pos_; }
  // Skip to output offset `pos` (≥ position()) and fill `out` exactly.
  // Input that ends first, or is not a valid continuation, is kCorrupt and
  // leaves the cursor unusable.
  Status take(uint64_t pos, std::span<uint8_t> out);

 private:
  InflateCursor();
  struct State;
  std::unique_ptr<State> st_;
  uint64_t pos_ = 0;
  bool failed_ = false;
  bool member_ended_ = false;  // the last take ended exactly at a member's end
};

// A deflate block boundary seen while scanning: output up to `out` needs
// input only up to `in` (exclusive).
struct GzipBoundary {
  uint64_t in = 0;
  uint64_t out = 0;
};

struct GzipIndex {
  std::vector<GzipCheckpoint> checkpoints;  // ordered; one at each member start
  std::vector<GzipBoundary> boundaries;     // every block end, ordered
  uint64_t in_size = 0;                     // compressed bytes consumed
  uint64_t out_size = 0;                    // uncompressed stream size
};

// Pull-style input: fill `buf`, return bytes read (0 at end).
using GzipReadFn = std::function<Result<size_t>(std::span<uint8_t> buf)>;
// Every uncompressed piece, in order.
using GzipSinkFn = std::function<Status(std::span<const uint8_t> piece)>;

// Scan a whole gzip stream once: output goes to `sink`; a checkpoint is taken
// at the start of every member and then, without `wanted`, at the first
// block boundary after each `span` bytes of output. With `wanted` (sorted
// uncompressed offsets a reader will start at: chunk starts), it is taken at
// the last boundary before a wanted offset once ~`span` bytes have passed (at
// most 2 × `span` apart), so a chunk's fetch from its checkpoint starts at
// most one deflate block early instead of up to `span` early, and never
// re-fetches the tail of the chunk before it. Trailing garbage after a member
// is kCorrupt.
Result<GzipIndex> index_gzip(const GzipReadFn& read, const GzipSinkFn& sink, uint64_t span,
                             std::span<const uint64_t> wanted = {});
// The same with wanted offsets revealed while the scan runs (a tar reader
// beside it): `wanted(end)` says whether any wanted offset below `end` was
// not reported by an earlier call, and must know all of them (waiting for
// its source if need be): the checkpoints are then the same as with the
// whole list up front. Null: no wanted offsets (checkpoints every `span`).
using GzipWantedFn = std::function<Result<bool>(uint64_t end)>;
Result<GzipIndex> index_gzip(const GzipReadFn& read, const GzipSinkFn& sink, uint64_t span,
                             const GzipWantedFn& wanted);

}  // namespace nydus::format
