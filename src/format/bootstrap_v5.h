// RAFS v5 bootstrap reader. A v5 image ("SFAR" magic, 8 KiB superblock,
// inode table of 8-byte-unit offsets, 128-byte inodes followed by name,
// symlink target, xattrs and 80-byte chunk infos) is parsed, validated and
// turned into the same tree model the v6 writer takes (BootstrapSpec), so
// Bootstrap can open the v6 image written from it and every consumer (FUSE,
// storage, check/inspect/stat/unpack) reads v5 through one code path.
// Layout notes: rafs-v6-format.md, "RAFS v5" section.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"
#include "format/bootstrap_writer.h"

namespace nydus::format {

inline constexpr uint32_t kRafsV5Version = 0x500;
inline constexpr uint64_t kRafsV5SuperBlockSize = 8192;
inline constexpr uint64_t kRafsV5InodeSize = 128;
inline constexpr uint64_t kRafsV5ExtBlobEntrySize = 64;
inline constexpr uint64_t kRafsV5RootIndex = 1;  // inode table index of "/"

// RafsInodeFlags of a v5 inode.
namespace v5_inode_flags {
inline constexpr uint64_t kSymlink = 0x1;
inline constexpr uint64_t kHardlink = 0x2;
inline constexpr uint64_t kXattr = 0x4;
inline constexpr uint64_t kHasHole = 0x8;
}  // namespace v5_inode_flags

// The on-disk superblock fields (first 80 bytes of the 8 KiB block).
struct RafsV5SuperBlock {
  uint32_t magic;
  uint32_t fs_version;
  uint32_t sb_size;
  uint32_t block_size;  // the chunk size
  uint64_t flags;       // super_flags::*
  uint64_t inodes_count;
  uint64_t inode_table_offset;
  uint64_t prefetch_table_offset;
  uint64_t blob_table_offset;
  uint32_t inode_table_entries;
  uint32_t prefetch_table_entries;
  uint32_t blob_table_size;
  uint32_t extended_blob_table_entries;
  uint64_t extended_blob_table_offset;
};
static_assert(sizeof(RafsV5SuperBlock) == 80);

struct RafsV5Inode {
  uint8_t digest[32];
  uint64_t parent;
  uint64_t ino;
  uint32_t uid;
  uint32_t gid;
  uint32_t projid;
  uint32_t mode;
  uint64_t size;
  uint64_t blocks;
  uint64_t flags;  // v5_inode_flags::*
  uint32_t nlink;
  uint32_t child_index;  // directories: first child's inode table index
  uint32_t child_count;  // directories: children; regular files: chunk infos
  uint16_t name_size;
  uint16_t symlink_size;
  uint32_t rdev;
  uint32_t mtime_nsec;
  uint64_t mtime;
  uint8_t reserved[8];
};
static_assert(sizeof(RafsV5Inode) == kRafsV5InodeSize);

struct RafsV5ExtBlobEntry {
  uint32_t chunk_count;
  uint32_t features;
  uint64_t uncompressed_size;
  uint64_t compressed_size;
  uint8_t reserved[40];
};
static_assert(sizeof(RafsV5ExtBlobEntry) == kRafsV5ExtBlobEntrySize);

// One blob as the v5 tables describe it (before the translation re-lays
// its uncompressed space out on 4 KiB boundaries).
struct RafsV5BlobSummary {
  std::string blob_id;
  uint32_t readahead_offset = 0;
  uint32_t readahead_size = 0;
  uint32_t chunk_count = 0;
  uint32_t features = 0;             // raw ext blob table features
  uint64_t uncompressed_size = 0;    // as recorded (not 4 KiB aligned in general)
  uint64_t compressed_size = 0;
  bool has_ext_entry = false;
};

struct RafsV5Image {
  RafsV5SuperBlock sb{};
  std::vector<RafsV5BlobSummary> blobs;
  // The tree in the v6 writer's model. Blobs carry a virtual uncompressed
  // layout: chunk ci of a blob starts at the sum of the 4 KiB-rounded sizes
  // of chunks 0..ci-1 (v5 packs chunks at arbitrary byte offsets; the v6
  // model addresses them by 4 KiB block). Compressed placement is unchanged.
  BootstrapSpec spec;
  // Per blob of spec.blobs, sorted by ci index: the chunks files reference,
  // with their virtual uncompressed offsets. A v5 blob no file references is
  // left out of spec.blobs (the others are renumbered in order).
  std::vector<std::vector<ChunkRecord>> blob_chunks;
  // Parallel to blob_chunks: each chunk's uncompressed offset as the v5 image
  // records it (what a v5 image written from these chunks must keep).
  std::vector<std::vector<uint64_t>> recorded_uncompressed_offsets;
};

bool is_rafs_v5(std::span<const uint8_t> bytes);

// Parse and validate. Every offset, size and index is bounded by the input;
// a directory graph that is not a tree (a child index naming an ancestor or a
// node twice), an index outside the inode table, a bad name, a chunk outside
// its blob, etc. is kCorrupt; valid but unsupported content (sparse files,
// encrypted chunks) is kUnsupported.
Result<RafsV5Image> parse_rafs_v5(std::span<const uint8_t> bytes);

}  // namespace nydus::format
