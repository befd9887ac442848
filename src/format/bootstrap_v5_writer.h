// RAFS v5 bootstrap writer: the tree model the v6 writer takes (BootstrapSpec)
// serialised the way upstream's builder (builder/src/core/{bootstrap,v5}.rs)
// lays a v5 image out: 8 KiB superblock, inode table, prefetch table, blob
// table, extended blob table, then every inode (depth-first pre-order) with
// its name, symlink target, xattrs and chunk infos. Inode indexes are given
// breadth-first per directory (a directory's children get consecutive
// indexes, sorted by name, before any subdirectory is entered) and every
// inode carries upstream's digest (files: hash of their chunk digests,
// symlinks: of the target, directories: of their children's digests, others:
// of nothing). Layout notes: rafs-v6-format.md, "RAFS v5" section.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"
#include "format/bootstrap_writer.h"

namespace nydus::format {

// Writes `spec` as a v5 bootstrap. Chunk records are written as given
// (blob_index = blob table position, ci_index, offsets); each blob's
// extended-table entry takes chunk_count, features, uncompressed_size and
// compressed_size from spec.blobs. prefetch_nodes become the prefetch table
// (their inode numbers).
Result<std::vector<uint8_t>> write_bootstrap_v5(const BootstrapSpec& spec);

// Upstream's v5 default (no --aligned-chunk): the uncompressed space of a blob
// is packed, chunk ci starting where chunk ci-1 ends. `stored` is every chunk
// of blob `blob_index` in ci order (ci_index == position); every reference to
// them in spec.nodes gets its packed offset and spec.blobs[blob_index] its
// packed uncompressed_size.
Status pack_uncompressed_offsets(std::span<const ChunkRecord> stored, uint32_t blob_index, BootstrapSpec* spec);

}  // namespace nydus::format
