#include "format/verity.h"

#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/io.h"

namespace nydus::format {

namespace {

constexpr uint64_t kDigestsPerBlock = kVerityHashBlockSize / 32;

// One level's blocks: the digests below packed 128 a block, zero padded.
std::vector<uint8_t> pack_level(const std::vector<Digest>& digests) {
  const uint64_t blocks = (digests.size() + kDigestsPerBlock - 1) / kDigestsPerBlock;
  std::vector<uint8_t> out(blocks * kVerityHashBlockSize, 0);
  for (size_t i = 0; i < digests.size(); i++) std::memcpy(out.data() + i * 32, digests[i].data(), 32);
  return out;
}

std::vector<Digest> hash_blocks(std::span<const uint8_t> bytes) {
  std::vector<Digest> out;
  for (uint64_t o = 0; o < bytes.size(); o += kVerityHashBlockSize)
    out.push_back(sha256(bytes.subspan(o, kVerityHashBlockSize)));
  return out;
}

}  // namespace

Result<VerityTree> append_verity_tree(int fd, uint64_t data_blocks, uint32_t data_block_size) {
  if (data_block_size != 512 && data_block_size != 4096)
    return errorf(Errc::kInvalidArgument, "verity: data block size {} (512 or 4096)", data_block_size);
  if (data_blocks == 0) return make_error(Errc::kInvalidArgument, "verity: no data blocks");
  // Bound the in-memory level 1 (32 bytes a block): 2^32 blocks at most, as upstream's u32.
  if (data_blocks > UINT32_MAX) return errorf(Errc::kInvalidArgument, "verity: {} data blocks, at most 2^32-1", data_blocks);
  VerityTree t;
  t.data_block_size = data_block_size;
  t.data_blocks = data_blocks;
  const uint64_t data_size = data_blocks * data_block_size;
  t.hash_offset = (data_size + kVerityHashBlockSize - 1) / kVerityHashBlockSize * kVerityHashBlockSize;

  std::vector<Digest> level;
  level.reserve(data_blocks);
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t off = 0; off < data_size;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), data_size - off);
    NYDUS_TRY(read_full_at(fd, off, std::span<uint8_t>(buf.data(), n), "verity: reading data"));
    for (uint64_t b = 0; b < n; b += data_block_size)
      level.push_back(sha256(std::span<const uint8_t>(buf.data() + b, data_block_size)));
    off += n;
  }
  if (data_blocks == 1) {
    t.root = level[0];
    return t;
  }
  // Levels bottom up; each is hashed block by block into the next, until one block.
  std::vector<std::vector<uint8_t>> levels;
  for (;;) {
    levels.push_back(pack_level(level));
    if (levels.back().size() == kVerityHashBlockSize) break;
    level = hash_blocks(levels.back());
  }
  t.root = sha256(levels.back());
  uint64_t at = t.hash_offset;
  for (auto it = levels.rbegin(); it != levels.rend(); ++it) {  // top level first
    NYDUS_TRY(write_full_at(fd, at, *it, "verity: writing hash tree"));
    at += it->size();
  }
  t.hash_size = at - t.hash_offset;
  return t;
}

std::string verity_options_line(const VerityTree& t) {
  return fmt::format(
      "dm-verity options: --no-superblock --format=1 -s \"\" --hash=sha256 --data-block-size={} --hash-block-size={} "
      "--data-blocks {} --hash-offset {} {}",
      t.data_block_size, kVerityHashBlockSize, t.data_blocks, t.hash_offset, to_hex(t.root));
}

}  // namespace nydus::format
