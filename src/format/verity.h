// dm-verity hash tree (format 1, sha256, no salt, 4096-byte hash blocks, no
// superblock), appended to a disk image as upstream's `nydus-image export
// --block --verity` does (utils/src/verity.rs): the levels are stored top
// level first from a 4096-aligned offset after the data, and the root hash
// and layout are what `veritysetup --no-superblock` needs.
#pragma once

#include <cstdint>

#include "common/result.h"
#include "format/digest.h"

namespace nydus::format {

inline constexpr uint32_t kVerityHashBlockSize = 4096;

struct VerityTree {
  uint32_t data_block_size = 0;
  uint64_t data_blocks = 0;
  uint64_t hash_offset = 0;  // byte offset of the tree in the file
  uint64_t hash_size = 0;    // bytes of the tree
  Digest root{};
};

// Hash the first data_blocks * data_block_size bytes of `fd` and write the
// tree at round_up(data size, 4096). One data block: no tree, the root is
// that block's hash (as the kernel's dm-verity, with zero levels).
Result<VerityTree> append_verity_tree(int fd, uint64_t data_blocks, uint32_t data_block_size);

// The line upstream prints (nydus-snapshotter parses it with this format).
std::string verity_options_line(const VerityTree& t);

}  // namespace nydus::format
