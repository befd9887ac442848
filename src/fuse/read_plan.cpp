#include "fuse/read_plan.h"

#include <algorithm>

namespace nydus::fuse {

Result<ReadPlan> plan_read(std::span<const format::ChunkRef> chunks, uint32_t chunk_size, uint64_t file_size,
                           uint64_t off, uint64_t size, std::span<const uint64_t> blob_sizes,
                           uint32_t block_bits) {
  ReadPlan plan;
  if (size == 0 || off >= file_size) return plan;
  if (chunk_size == 0) return corrupt("chunk size 0");
  // file_size - off > 0 here, so the clamp cannot overflow even for off near 2^64.
  const uint64_t total = std::min(size, file_size - off);
  const uint64_t end = off + total;
  const uint64_t first = off / chunk_size;
  const uint64_t last = (end - 1) / chunk_size;
  if (last >= chunks.size())
    return corrupt("file of {} bytes needs chunk {} but has {} chunks", file_size, last, chunks.size());

  plan.total = total;
  uint64_t pos = off;
  for (uint64_t i = first; i <= last; ++i) {
    const format::ChunkRef& c = chunks[i];
    const uint64_t chunk_start = i * chunk_size;
    const uint64_t in_chunk = pos - chunk_start;
    const uint64_t len = std::min<uint64_t>(chunk_size - in_chunk, end - pos);
    const uint64_t boff = (uint64_t(c.blkaddr) << block_bits) + in_chunk;
    if (c.blob_index >= blob_sizes.size())
      return corrupt("chunk {}: blob index {} out of range ({} blobs)", i, c.blob_index, blob_sizes.size());
    const uint64_t bsize = blob_sizes[c.blob_index];
    if (boff > bsize || len > bsize - boff)
      return corrupt("chunk {}: blob {} range [{:#x}, +{:#x}) exceeds its uncompressed size {:#x}", i,
                     c.blob_index, boff, len, bsize);
    ReadSegment seg{c.blob_index, boff, len, pos - off};
    if (!plan.segments.empty()) {
      ReadSegment& prev = plan.segments.back();
      if (prev.blob_index == seg.blob_index && prev.blob_offset + prev.len == seg.blob_offset) {
        prev.len += seg.len;
        pos += len;
        continue;
      }
    }
    plan.segments.push_back(seg);
    pos += len;
  }
  return plan;
}

}  // namespace nydus::fuse
