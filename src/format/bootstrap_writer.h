// Serialises a filesystem tree into a RAFS v6 bootstrap exactly as upstream
// nydus-image lays it out (rafs-v6-format.md §2-§4): superblocks, device and
// blob tables, prefetch table, inodes placed with upstream's block-fragment
// allocator (§3.9), directories, symlinks, inline xattrs, chunk indexes and
// the sorted chunk-info table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"

namespace nydus::format {

struct XattrPair {
  std::string name;   // full name, e.g. "user.foo"
  std::string value;  // raw bytes
};

// One entry of the tree to write. nodes[0] is the root directory.
struct TreeNode {
  std::string name;            // raw bytes, no '/'; empty for the root
  uint32_t mode = 0;           // full st_mode
  uint32_t uid = 0, gid = 0;
  uint64_t mtime = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;           // regular files: file size (dirs/symlinks: computed)
  uint32_t rdev = 0;           // new-encoding dev_t for chr/blk/fifo/sock
  std::string symlink_target;
  std::vector<XattrPair> xattrs;
  std::vector<ChunkRecord> chunks;   // regular files, in file order
  std::vector<uint32_t> children;    // node indices; the writer sorts them by name
  int64_t hardlink_of = -1;    // index of the first node of a hardlink group, or -1
};

struct BootstrapSpec {
  std::vector<TreeNode> nodes;
  std::vector<BlobInfo> blobs;       // in blob-table order
  uint32_t chunk_size = kDefaultChunkSize;
  Compressor compressor = Compressor::kZstd;
  Digester digester = Digester::kBlake3;
  bool explicit_uid_gid = true;      // false with --repeatable: uid/gid stored as 0
  std::vector<uint32_t> prefetch_nodes;  // node indices for the prefetch table
  // TARFS mode (upstream's tar-tarfs): 512-byte EROFS blocks, chunks at
  // their 512-aligned offsets inside the tar, the TARFS super flag.
  bool tarfs = false;
};

struct BootstrapResult {
  std::vector<uint8_t> bytes;
  std::vector<uint64_t> nids;        // nid of every node (by node index)
};

// Node indices in the order upstream's builder walks the tree: a directory,
// then its non-directory children by name, then each subdirectory (depth
// first). Regular files are stored in the data blob in this order.
std::vector<uint32_t> placement_order(const std::vector<TreeNode>& nodes);

Result<BootstrapResult> write_bootstrap(const BootstrapSpec& spec);

}  // namespace nydus::format
