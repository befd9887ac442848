// Mapping a FUSE read of a chunked RAFS file onto blob ranges. Pure: no I/O,
// so it is unit-tested on its own and the FUSE layer only executes the plan.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"
#include "format/bootstrap.h"

namespace nydus::fuse {

// Copy `len` bytes from blob `blob_index`'s uncompressed layout at
// `blob_offset` into the reply buffer at `buf_offset`.
struct ReadSegment {
  uint32_t blob_index = 0;
  uint64_t blob_offset = 0;
  uint64_t len = 0;
  uint64_t buf_offset = 0;

  bool operator==(const ReadSegment&) const = default;
};

struct ReadPlan {
  uint64_t total = 0;  // bytes the reply carries (clamped at EOF)
  std::vector<ReadSegment> segments;
};

// Plan a read of [off, off + size) of a file of `file_size` bytes whose chunk
// i covers file bytes [i*chunk_size, min((i+1)*chunk_size, file_size)) and
// lives at chunks[i].blkaddr << block_bits of its blob (12; 9 in TARFS mode). Reads at or past EOF give an
// empty plan. Segments that continue each other in the same blob are merged
// so a sequential file costs one cache read. `blob_sizes[b]` is blob b's
// uncompressed size: a segment outside it, a missing chunk or a bad
// chunk_size is kCorrupt (the image lies), never a short or wrong read.
Result<ReadPlan> plan_read(std::span<const format::ChunkRef> chunks, uint32_t chunk_size, uint64_t file_size,
                           uint64_t off, uint64_t size, std::span<const uint64_t> blob_sizes,
                           uint32_t block_bits = format::kBlockBits);

}  // namespace nydus::fuse
