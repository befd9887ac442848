// RAFS v5 writer (see bootstrap_v5_writer.h). Indexes, inode numbers, link
// counts, directory sizes, block counts and digests follow upstream's
// builder so that an image written here is what upstream nydus-image 2.x
// writes for the same tree (up to xattr order, which upstream leaves to a
// hash map).
#include "format/bootstrap_v5_writer.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "format/bootstrap_v5.h"
#include "format/digest.h"

namespace nydus::format {

namespace {

uint64_t align8(uint64_t x) { return (x + 7) & ~uint64_t(7); }

// Pseudo size of a v5 directory: 8 bytes plus the name per child, rounded up
// to 4 KiB (4096 when empty), as upstream's v5_set_dir_size.
uint64_t dir_size(const std::vector<TreeNode>& nodes, const TreeNode& dir) {
  uint64_t d = 0;
  for (uint32_t c : dir.children) d += nodes[c].name.size() + 8;
  return d == 0 ? 4096 : align_up(d, 4096);
}

uint64_t xattr_bytes(const TreeNode& n) {
  uint64_t s = 0;
  for (const auto& x : n.xattrs) s += 4 + x.name.size() + 1 + x.value.size();
  return s;
}

uint64_t compressor_flag(Compressor c) {
  switch (c) {
    case Compressor::kNone: return super_flags::kCompressionNone;
    case Compressor::kLz4Block: return super_flags::kCompressionLz4;
    case Compressor::kGzip: return super_flags::kCompressionGzip;
    case Compressor::kZstd: return super_flags::kCompressionZstd;
  }
  return 0;
}

class Writer {
 public:
  explicit Writer(const BootstrapSpec& s) : s_(s), nodes_(s.nodes) {}
  Result<std::vector<uint8_t>> run();

 private:
  Status check();
  void assign_indexes();
  void assign_inodes();
  void compute_digests();
  void encode_inode(uint32_t n);

  template <typename T>
  void put(const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void put_bytes(std::string_view b, uint64_t padded) {
    out_.insert(out_.end(), b.begin(), b.end());
    out_.resize(out_.size() + (padded - b.size()), 0);
  }

  const BootstrapSpec& s_;
  std::vector<TreeNode> nodes_;           // children sorted by name
  std::vector<uint32_t> index_;           // node -> inode table index (1-based)
  std::vector<uint32_t> by_index_;        // index - 1 -> node
  std::vector<uint32_t> child_index_;     // directories: first child's index
  std::vector<uint64_t> ino_, parent_ino_;
  std::vector<uint32_t> nlink_;
  std::vector<Digest> digest_;
  uint64_t unique_inodes_ = 0;
  std::vector<uint8_t> out_;
};

Status Writer::check() {
  if (nodes_.empty() || !S_ISDIR(nodes_[0].mode)) return make_error(Errc::kInvalidArgument, "v5 writer: no root directory");
  if (nodes_.size() >= UINT32_MAX / 2) return make_error(Errc::kInvalidArgument, "v5 writer: too many inodes");
  if (!std::has_single_bit(s_.chunk_size) || s_.chunk_size < kMinChunkSize || s_.chunk_size > kMaxChunkSize)
    return errorf(Errc::kInvalidArgument, "v5 writer: chunk size {:#x}", s_.chunk_size);
  std::vector<uint8_t> seen(nodes_.size(), 0);
  seen[0] = 1;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const TreeNode& n = nodes_[i];
    if (i != 0 && (n.name.empty() || n.name.size() > 255))
      return errorf(Errc::kInvalidArgument, "v5 writer: node {}: name of {} bytes", i, n.name.size());
    if (n.symlink_target.size() > 4095)
      return errorf(Errc::kInvalidArgument, "v5 writer: node {}: symlink target too long", i);
    if (!n.children.empty() && !S_ISDIR(n.mode))
      return errorf(Errc::kInvalidArgument, "v5 writer: node {} has children but is not a directory", i);
    for (uint32_t c : n.children) {
      if (c == 0 || c >= nodes_.size() || seen[c])
        return errorf(Errc::kInvalidArgument, "v5 writer: node {}: child {} invalid or listed twice", i, c);
      seen[c] = 1;
    }
    if (n.hardlink_of >= 0 && (size_t(n.hardlink_of) >= nodes_.size() || S_ISDIR(n.mode)))
      return errorf(Errc::kInvalidArgument, "v5 writer: node {}: bad hard link", i);
    if (S_ISREG(n.mode)) {
      const uint64_t want = n.size / s_.chunk_size + (n.size % s_.chunk_size != 0);
      if (n.chunks.size() != want)
        return errorf(Errc::kInvalidArgument, "v5 writer: node {}: {} chunks for {} bytes (chunk size {})", i,
                      n.chunks.size(), n.size, s_.chunk_size);
      for (const ChunkRecord& c : n.chunks)
        if (c.blob_index >= s_.blobs.size())
          return errorf(Errc::kInvalidArgument, "v5 writer: node {}: chunk in blob {} of {}", i, c.blob_index,
                        s_.blobs.size());
    }
  }
  for (uint32_t p : s_.prefetch_nodes)
    if (p >= nodes_.size()) return errorf(Errc::kInvalidArgument, "v5 writer: prefetch node {} out of range", p);
  if (s_.blobs.size() > kMaxBlobs) return errorf(Errc::kInvalidArgument, "v5 writer: {} blobs", s_.blobs.size());
  return ok();
}

// Upstream's build_rafs: the root is 1; a directory's children take the next
// indexes in name order, then each child directory is entered in turn.
void Writer::assign_indexes() {
  for (auto& n : nodes_)
    std::sort(n.children.begin(), n.children.end(),
              [&](uint32_t a, uint32_t b) { return nodes_[a].name < nodes_[b].name; });
  index_.assign(nodes_.size(), 0);
  child_index_.assign(nodes_.size(), 0);
  by_index_.clear();
  index_[0] = 1;
  by_index_.push_back(0);
  // Iterative form of the recursion: a stack of directories still to enter,
  // pushed in reverse so they are entered in name order.
  std::vector<uint32_t> stack{0};
  while (!stack.empty()) {
    const uint32_t d = stack.back();
    stack.pop_back();
    child_index_[d] = uint32_t(by_index_.size() + 1);
    std::vector<uint32_t> dirs;
    for (uint32_t c : nodes_[d].children) {
      index_[c] = uint32_t(by_index_.size() + 1);
      by_index_.push_back(c);
      if (S_ISDIR(nodes_[c].mode)) dirs.push_back(c);
    }
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) stack.push_back(*it);
  }
}

// Inode numbers: a node's own index, except later names of a hard-link group,
// which take the first name's (in index order). Link counts: group size for
// non-directories, 2 + subdirectories for directories.
void Writer::assign_inodes() {
  const size_t n = nodes_.size();
  ino_.assign(n, 0);
  parent_ino_.assign(n, 0);
  nlink_.assign(n, 1);
  std::vector<int64_t> leader(n);
  for (size_t i = 0; i < n; ++i) leader[i] = nodes_[i].hardlink_of >= 0 ? nodes_[i].hardlink_of : int64_t(i);
  std::vector<uint64_t> group_ino(n, 0);
  std::vector<uint32_t> group_size(n, 0);
  for (uint32_t node : by_index_) {
    const auto g = size_t(leader[node]);
    if (group_ino[g] == 0) {
      group_ino[g] = index_[node];
      ++unique_inodes_;
    }
    ino_[node] = group_ino[g];
    ++group_size[g];
  }
  for (uint32_t node : by_index_) {
    const TreeNode& t = nodes_[node];
    if (S_ISDIR(t.mode)) {
      uint32_t subdirs = 0;
      for (uint32_t c : t.children) subdirs += S_ISDIR(nodes_[c].mode);
      nlink_[node] = 2 + subdirs;
      for (uint32_t c : t.children) parent_ino_[c] = ino_[node];
    } else {
      nlink_[node] = group_size[size_t(leader[node])];
    }
  }
}

// Bottom-up: children have larger indexes than their directory.
void Writer::compute_digests() {
  digest_.assign(nodes_.size(), Digest{});
  const Digester dg = s_.digester;
  for (auto it = by_index_.rbegin(); it != by_index_.rend(); ++it) {
    const TreeNode& t = nodes_[*it];
    std::vector<uint8_t> buf;
    auto add = [&](std::span<const uint8_t> b) { buf.insert(buf.end(), b.begin(), b.end()); };
    if (S_ISREG(t.mode)) {
      for (const auto& c : t.chunks) add(c.digest);
    } else if (S_ISLNK(t.mode)) {
      add({reinterpret_cast<const uint8_t*>(t.symlink_target.data()), t.symlink_target.size()});
    } else if (S_ISDIR(t.mode)) {
      for (uint32_t c : t.children) add(digest_[c]);
    }
    digest_[*it] = compute_digest(dg, buf);
  }
}

void Writer::encode_inode(uint32_t node) {
  const TreeNode& t = nodes_[node];
  const bool root = node == 0;
  const std::string_view name = root ? std::string_view("/") : std::string_view(t.name);
  RafsV5Inode ino{};
  std::memcpy(ino.digest, digest_[node].data(), sizeof(ino.digest));
  ino.parent = parent_ino_[node];
  ino.ino = ino_[node];
  ino.uid = s_.explicit_uid_gid ? t.uid : 0;
  ino.gid = s_.explicit_uid_gid ? t.gid : 0;
  ino.mode = t.mode;
  const uint64_t xsize = xattr_bytes(t);
  if (S_ISDIR(t.mode)) ino.size = dir_size(nodes_, t);
  else if (S_ISLNK(t.mode)) ino.size = t.symlink_target.size();
  else if (S_ISREG(t.mode)) ino.size = t.size;
  ino.blocks = (ino.size + align8(xsize) + 511) / 512;
  if (S_ISLNK(t.mode)) ino.flags |= v5_inode_flags::kSymlink;
  if (!t.xattrs.empty()) ino.flags |= v5_inode_flags::kXattr;
  ino.nlink = nlink_[node];
  if (S_ISDIR(t.mode)) {
    ino.child_index = child_index_[node];
    ino.child_count = uint32_t(t.children.size());
  } else if (S_ISREG(t.mode)) {
    ino.child_count = uint32_t(t.chunks.size());
  }
  ino.name_size = uint16_t(name.size());
  ino.symlink_size = S_ISLNK(t.mode) ? uint16_t(t.symlink_target.size()) : 0;
  const bool special = S_ISCHR(t.mode) || S_ISBLK(t.mode) || S_ISFIFO(t.mode) || S_ISSOCK(t.mode);
  ino.rdev = special ? t.rdev : 0;
  // Upstream ignores the root's mtime (repeatable builds).
  ino.mtime = root ? 0 : t.mtime;
  ino.mtime_nsec = root ? 0 : t.mtime_nsec;
  put(ino);
  put_bytes(name, align8(name.size()));
  if (S_ISLNK(t.mode)) put_bytes(t.symlink_target, align8(t.symlink_target.size()));
  if (!t.xattrs.empty()) {
    put(uint64_t(xsize));
    const size_t start = out_.size();
    for (const auto& x : t.xattrs) {
      put(uint32_t(x.name.size() + 1 + x.value.size()));
      out_.insert(out_.end(), x.name.begin(), x.name.end());
      out_.push_back(0);
      out_.insert(out_.end(), x.value.begin(), x.value.end());
    }
    out_.resize(start + align8(xsize), 0);
  }
  if (S_ISREG(t.mode)) {
    for (size_t k = 0; k < t.chunks.size(); ++k) {
      const ChunkRecord& c = t.chunks[k];
      put(chunk_info_record(c, uint64_t(k) * s_.chunk_size));
    }
  }
}

Result<std::vector<uint8_t>> Writer::run() {
  NYDUS_TRY(check());
  assign_indexes();
  if (by_index_.size() != nodes_.size())
    return errorf(Errc::kInvalidArgument, "v5 writer: {} of {} nodes reachable from the root", by_index_.size(),
                  nodes_.size());
  assign_inodes();
  compute_digests();

  const uint64_t entries = by_index_.size();
  const uint64_t inode_table_size = align8(entries * 4);
  std::vector<uint32_t> prefetch;
  for (uint32_t p : s_.prefetch_nodes) prefetch.push_back(uint32_t(ino_[p]));
  const uint64_t prefetch_size = align8(prefetch.size() * 4);
  // Blob table: frames "u32 readahead offset, u32 readahead size, id" joined
  // by one NUL, padded to 8.
  std::vector<uint8_t> blob_table;
  for (size_t b = 0; b < s_.blobs.size(); ++b) {
    if (b) blob_table.push_back(0);
    const uint32_t zero[2] = {0, 0};
    blob_table.insert(blob_table.end(), reinterpret_cast<const uint8_t*>(zero),
                      reinterpret_cast<const uint8_t*>(zero) + 8);
    blob_table.insert(blob_table.end(), s_.blobs[b].blob_id.begin(), s_.blobs[b].blob_id.end());
  }
  blob_table.resize(align8(blob_table.size()), 0);

  bool has_xattr = false;
  for (const auto& n : nodes_) has_xattr |= !n.xattrs.empty();

  RafsV5SuperBlock sb{};
  sb.magic = kRafsV5Magic;
  sb.fs_version = kRafsV5Version;
  sb.sb_size = uint32_t(kRafsV5SuperBlockSize);
  sb.block_size = s_.chunk_size;
  sb.flags = compressor_flag(s_.compressor) |
             (s_.digester == Digester::kSha256 ? super_flags::kHashSha256 : super_flags::kHashBlake3) |
             (s_.explicit_uid_gid ? super_flags::kExplicitUidGid : 0) | (has_xattr ? super_flags::kHasXattr : 0);
  sb.inodes_count = unique_inodes_;
  sb.inode_table_offset = kRafsV5SuperBlockSize;
  sb.inode_table_entries = uint32_t(entries);
  sb.prefetch_table_offset = kRafsV5SuperBlockSize + inode_table_size;
  sb.prefetch_table_entries = uint32_t(prefetch.size());
  sb.blob_table_offset = sb.prefetch_table_offset + prefetch_size;
  sb.blob_table_size = uint32_t(blob_table.size());
  sb.extended_blob_table_offset = sb.blob_table_offset + blob_table.size();
  sb.extended_blob_table_entries = uint32_t(s_.blobs.size());
  const uint64_t inodes_start =
      sb.extended_blob_table_offset + uint64_t(s_.blobs.size()) * kRafsV5ExtBlobEntrySize;

  out_.reserve(inodes_start + entries * 256);
  put(sb);
  out_.resize(kRafsV5SuperBlockSize, 0);
  // The inode table is filled once the inodes are placed.
  const size_t table_at = out_.size();
  out_.resize(out_.size() + inode_table_size, 0);
  for (uint32_t p : prefetch) put(p);
  out_.resize(sb.blob_table_offset, 0);
  out_.insert(out_.end(), blob_table.begin(), blob_table.end());
  for (const BlobInfo& b : s_.blobs) {
    RafsV5ExtBlobEntry e{};
    e.chunk_count = b.chunk_count;
    e.features = b.features;
    e.uncompressed_size = b.uncompressed_size;
    e.compressed_size = b.compressed_size;
    put(e);
  }
  // Inodes in depth-first pre-order (upstream's walk_dfs_pre).
  std::vector<uint32_t> stack{0};
  while (!stack.empty()) {
    const uint32_t node = stack.back();
    stack.pop_back();
    const uint64_t off = out_.size();
    if ((off >> 3) > UINT32_MAX) return make_error(Errc::kInvalidArgument, "v5 writer: bootstrap exceeds 32 GiB");
    const uint32_t slot = uint32_t(off >> 3);
    std::memcpy(out_.data() + table_at + (index_[node] - 1) * 4, &slot, 4);
    encode_inode(node);
    const auto& ch = nodes_[node].children;
    for (auto it = ch.rbegin(); it != ch.rend(); ++it) stack.push_back(*it);
  }
  return std::move(out_);
}

}  // namespace

Result<std::vector<uint8_t>> write_bootstrap_v5(const BootstrapSpec& spec) { return Writer(spec).run(); }

Status pack_uncompressed_offsets(std::span<const ChunkRecord> stored, uint32_t blob_index, BootstrapSpec* spec) {
  if (blob_index >= spec->blobs.size()) return errorf(Errc::kInvalidArgument, "no blob {}", blob_index);
  std::vector<uint64_t> off(stored.size());
  uint64_t pos = 0;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (stored[i].ci_index != i) return errorf(Errc::kInvalidArgument, "stored chunk {} has ci index {}", i, stored[i].ci_index);
    off[i] = pos;
    pos += stored[i].uncompressed_size;
  }
  for (auto& n : spec->nodes)
    for (auto& c : n.chunks) {
      if (c.blob_index != blob_index) continue;
      if (c.ci_index >= off.size()) return errorf(Errc::kInvalidArgument, "chunk ci {} not stored", c.ci_index);
      c.uncompressed_offset = off[c.ci_index];
    }
  spec->blobs[blob_index].uncompressed_size = pos;
  return ok();
}

}  // namespace nydus::format
