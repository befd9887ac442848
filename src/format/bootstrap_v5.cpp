// RAFS v5 parser: untrusted bytes in, a validated tree (BootstrapSpec) out.
// Offsets are checked against the input before every load, counts are
// bounded by the input size before anything is allocated from them, and the
// directory graph is walked iteratively with a visited set, so a hostile image
// gives an error, never a crash, a hang or a huge allocation.
#include "format/bootstrap_v5.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <unordered_map>

namespace nydus::format {

namespace {

constexpr uint64_t kAlign = 8;
constexpr uint32_t kMaxName = 255;
constexpr uint32_t kMaxSymlink = 4095;
constexpr uint64_t kMaxVirtualBlobSize = 1ull << 44;  // Bootstrap's blob table limit
constexpr uint32_t kKnownChunkFlags = chunk_flags::kCompressed | chunk_flags::kHole | chunk_flags::kEncrypted |
                                      chunk_flags::kBatch | chunk_flags::kHasCrc32;
constexpr uint64_t kKnownInodeFlags = v5_inode_flags::kSymlink | v5_inode_flags::kHardlink |
                                      v5_inode_flags::kXattr | v5_inode_flags::kHasHole;

uint64_t align8(uint64_t x) { return (x + kAlign - 1) & ~(kAlign - 1); }

bool in_range(uint64_t size, uint64_t off, uint64_t len) { return off <= size && len <= size - off; }

// [a, a+alen) and [b, b+blen) share a byte.
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return alen != 0 && blen != 0 && a < b + blen && b < a + alen;
}

bool valid_blob_id(std::string_view id) {
  if (id.empty() || id.size() > 64 || id == "." || id == "..") return false;
  for (unsigned char c : id)
    if (c <= 0x20 || c >= 0x7f || c == '/') return false;
  return true;
}

bool valid_name(std::string_view n) {
  return !n.empty() && n.size() <= kMaxName && n != "." && n != ".." && n.find('/') == std::string_view::npos &&
         n.find('\0') == std::string_view::npos;
}

class Parser {
 public:
  explicit Parser(std::span<const uint8_t> b) : d_(b.data()), size_(b.size()) {}
  Result<RafsV5Image> run();

 private:
  Status superblock();
  Status blob_tables();
  Result<uint64_t> inode_offset(uint64_t index) const;
  // Decode the inode at table `index` into node `out` (chunks, xattrs, name).
  Status decode(uint64_t index, RafsV5Inode* raw, TreeNode* out);
  Status decode_xattrs(uint64_t off, uint64_t index, TreeNode* out, uint64_t* end);
  Status decode_chunks(uint64_t off, const RafsV5Inode& ino, uint64_t index, TreeNode* out);
  Status tree();
  Status layout_blobs();

  const uint8_t* d_;
  uint64_t size_;
  RafsV5Image img_;
  std::vector<RafsV5ExtBlobEntry> ext_;
  // Per blob: chunks by ci index as first met (sparse: a hostile index
  // costs one entry, not an array up to it).
  std::vector<std::unordered_map<uint32_t, ChunkRecord>> seen_;
  // Node index -> inode table index, and the raw inode number of every node.
  std::vector<uint64_t> node_ino_;
};

Status Parser::superblock() {
  if (size_ <= kRafsV5SuperBlockSize)
    return corrupt("RAFS v5 bootstrap of {} bytes is not larger than its 8192-byte superblock", size_);
  if (size_ % kAlign != 0) return corrupt("RAFS v5 bootstrap size {} is not a multiple of 8", size_);
  const auto sb = load<RafsV5SuperBlock>(d_);
  img_.sb = sb;
  if (sb.magic != kRafsV5Magic) return corrupt("RAFS v5 superblock: bad magic {:#x}", sb.magic);
  if (sb.fs_version != kRafsV5Version)
    return errorf(Errc::kUnsupported, "RAFS superblock version {:#x} (only v5 0x500 is read)", sb.fs_version);
  if (sb.sb_size != kRafsV5SuperBlockSize)
    return corrupt("RAFS v5 superblock: sb_size {} (expected 8192)", sb.sb_size);
  const uint32_t cs = sb.block_size;
  if (!std::has_single_bit(cs) || cs < kMinChunkSize || cs > kMaxChunkSize)
    return corrupt("RAFS v5 superblock: chunk size {:#x} is not a power of two in [4K, 16M]", cs);
  const uint64_t f = sb.flags;
  if (f & ~super_flags::kKnownMask) return corrupt("RAFS v5 superblock: unknown flags {:#x}", f & ~super_flags::kKnownMask);
  if (std::popcount(f & super_flags::kCompressionMask) != 1)
    return corrupt("RAFS v5 superblock: flags {:#x} must name exactly one compressor", f);
  if (std::popcount(f & super_flags::kHashMask) != 1)
    return corrupt("RAFS v5 superblock: flags {:#x} must name exactly one digester", f);
  if (f & (super_flags::kTarfsMode | super_flags::kEncryptionAes128Xts))
    return errorf(Errc::kUnsupported, "RAFS v5 superblock: flags {:#x} (TARFS/encryption) not supported", f);

  // Tables live after the superblock, inside the file, and do not overlap.
  const uint64_t it_off = sb.inode_table_offset, it_len = uint64_t(sb.inode_table_entries) * 4;
  if (it_off < kRafsV5SuperBlockSize || !in_range(size_, it_off, it_len))
    return corrupt("RAFS v5 inode table [{:#x}, +{}) outside the image", it_off, it_len);
  if (sb.inodes_count > sb.inode_table_entries)
    return corrupt("RAFS v5 superblock: {} inodes but {} inode table entries", sb.inodes_count, sb.inode_table_entries);
  if (sb.inode_table_entries == 0) return corrupt("RAFS v5 inode table is empty");
  const uint64_t bt_off = sb.blob_table_offset, bt_len = sb.blob_table_size;
  if ((bt_len && bt_off < kRafsV5SuperBlockSize) || !in_range(size_, bt_off, bt_len) ||
      overlaps(bt_off, bt_len, it_off, it_len))
    return corrupt("RAFS v5 blob table [{:#x}, +{}) invalid", bt_off, bt_len);
  const uint64_t ex_off = sb.extended_blob_table_offset,
                 ex_len = uint64_t(sb.extended_blob_table_entries) * kRafsV5ExtBlobEntrySize;
  if (ex_len && (ex_off < kRafsV5SuperBlockSize || !in_range(size_, ex_off, ex_len) ||
                 overlaps(ex_off, ex_len, it_off, it_len) || overlaps(ex_off, ex_len, bt_off, bt_len)))
    return corrupt("RAFS v5 extended blob table [{:#x}, +{}) invalid", ex_off, ex_len);
  const uint64_t pf_off = sb.prefetch_table_offset, pf_len = uint64_t(sb.prefetch_table_entries) * 4;
  if (pf_len && (pf_off < kRafsV5SuperBlockSize || !in_range(size_, pf_off, pf_len) ||
                 overlaps(pf_off, pf_len, it_off, it_len) || overlaps(pf_off, pf_len, bt_off, bt_len) ||
                 overlaps(pf_off, pf_len, ex_off, ex_len)))
    return corrupt("RAFS v5 prefetch table [{:#x}, +{}) invalid", pf_off, pf_len);
  return ok();
}

Status Parser::blob_tables() {
  const auto& sb = img_.sb;
  for (uint64_t i = 0; i < sb.extended_blob_table_entries; ++i)
    ext_.push_back(load<RafsV5ExtBlobEntry>(d_ + sb.extended_blob_table_offset + i * kRafsV5ExtBlobEntrySize));
  // Frames of u32 readahead offset | u32 readahead size | id, separated by
  // one NUL (the last one padded with NULs to 8 bytes).
  const uint8_t* p = d_ + sb.blob_table_offset;
  uint64_t left = sb.blob_table_size;
  while (left > 8) {
    RafsV5BlobSummary b;
    b.readahead_offset = load<uint32_t>(p);
    b.readahead_size = load<uint32_t>(p + 4);
    const uint8_t* id = p + 8;
    const void* z = std::memchr(id, 0, left - 8);
    const uint64_t id_len = z ? uint64_t(static_cast<const uint8_t*>(z) - id) : left - 8;
    b.blob_id.assign(reinterpret_cast<const char*>(id), id_len);
    const uint64_t used = 8 + id_len + (z ? 1 : 0);
    p += used;
    left -= used;
    const size_t index = img_.blobs.size();
    if (!valid_blob_id(b.blob_id)) return corrupt("RAFS v5 blob {}: invalid blob id", index);
    for (const auto& prev : img_.blobs)
      if (prev.blob_id == b.blob_id) return corrupt("RAFS v5 blob {}: duplicate blob id {}", index, b.blob_id);
    if (index >= kMaxBlobs) return corrupt("RAFS v5 blob table has more than {} blobs", kMaxBlobs);
    if (!ext_.empty()) {
      if (index >= ext_.size())
        return corrupt("RAFS v5 extended blob table ({} entries) is shorter than the blob table", ext_.size());
      const auto& e = ext_[index];
      b.has_ext_entry = true;
      b.chunk_count = e.chunk_count;
      b.features = e.features;
      b.uncompressed_size = e.uncompressed_size;
      b.compressed_size = e.compressed_size;
      if (b.chunk_count > kMaxChunksPerBlob)
        return corrupt("RAFS v5 blob {}: chunk_count {} exceeds 2^24", index, b.chunk_count);
      if (b.features & (blob_features::kEncrypted | blob_features::kZran | blob_features::kBatch |
                        blob_features::kTarfs))
        return errorf(Errc::kUnsupported, "RAFS v5 blob {}: features {:#x} not supported", index, b.features);
    }
    img_.blobs.push_back(std::move(b));
  }
  seen_.resize(img_.blobs.size());
  return ok();
}

Result<uint64_t> Parser::inode_offset(uint64_t index) const {
  const auto& sb = img_.sb;
  if (index == 0 || index > sb.inode_table_entries)
    return corrupt("RAFS v5 inode index {} outside the inode table (1..{})", index, sb.inode_table_entries);
  const uint64_t off = uint64_t(load<uint32_t>(d_ + sb.inode_table_offset + (index - 1) * 4)) << 3;
  if (off < kRafsV5SuperBlockSize || !in_range(size_, off, kRafsV5InodeSize))
    return corrupt("RAFS v5 inode {}: offset {:#x} outside the image", index, off);
  return off;
}

Status Parser::decode_xattrs(uint64_t off, uint64_t index, TreeNode* out, uint64_t* end) {
  if (!in_range(size_, off, 8)) return corrupt("RAFS v5 inode {}: xattr table outside the image", index);
  const uint64_t total = load<uint64_t>(d_ + off);
  const uint64_t data = off + 8;
  if (!in_range(size_, data, total) || !in_range(size_, data, align8(total)))
    return corrupt("RAFS v5 inode {}: xattr table of {} bytes outside the image", index, total);
  uint64_t pos = 0;
  while (pos < total) {
    if (total - pos < 4) return corrupt("RAFS v5 inode {}: truncated xattr pair size", index);
    const uint32_t pair = load<uint32_t>(d_ + data + pos);
    pos += 4;
    if (pair > total - pos) return corrupt("RAFS v5 inode {}: xattr pair of {} bytes overruns its table", index, pair);
    std::string_view bytes(reinterpret_cast<const char*>(d_ + data + pos), pair);
    pos += pair;
    const size_t nul = bytes.find('\0');
    if (nul == std::string_view::npos || nul == 0)
      return corrupt("RAFS v5 inode {}: xattr pair without a NUL-terminated name", index);
    out->xattrs.push_back(XattrPair{std::string(bytes.substr(0, nul)), std::string(bytes.substr(nul + 1))});
  }
  *end = data + align8(total);
  return ok();
}

Status Parser::decode_chunks(uint64_t off, const RafsV5Inode& ino, uint64_t index, TreeNode* out) {
  const uint64_t n = ino.child_count;
  if (!in_range(size_, off, n * sizeof(ChunkInfoRecord)))
    return corrupt("RAFS v5 inode {}: {} chunk infos outside the image", index, n);
  const uint64_t cs = img_.sb.block_size;
  const uint64_t want = ino.size / cs + (ino.size % cs != 0);
  if (n != want) {
    if (ino.flags & v5_inode_flags::kHasHole)
      return errorf(Errc::kUnsupported, "RAFS v5 inode {}: sparse file ({} chunks for {} bytes) not supported", index,
                    n, ino.size);
    return corrupt("RAFS v5 inode {}: {} chunk infos for a {}-byte file (chunk size {})", index, n, ino.size, cs);
  }
  out->chunks.reserve(n);
  for (uint64_t k = 0; k < n; ++k) {
    const auto r = load<ChunkInfoRecord>(d_ + off + k * sizeof(ChunkInfoRecord));
    const uint64_t fo = k * cs;
    const uint64_t us = std::min<uint64_t>(cs, ino.size - fo);
    if (r.flags & ~kKnownChunkFlags) return corrupt("RAFS v5 inode {} chunk {}: unknown flags {:#x}", index, k, r.flags);
    if (r.flags & (chunk_flags::kEncrypted | chunk_flags::kBatch | chunk_flags::kHole))
      return errorf(Errc::kUnsupported, "RAFS v5 inode {} chunk {}: flags {:#x} not supported", index, k, r.flags);
    if (r.file_offset != fo)
      return corrupt("RAFS v5 inode {} chunk {}: file offset {} (expected {})", index, k, r.file_offset, fo);
    if (r.uncompressed_size != us)
      return corrupt("RAFS v5 inode {} chunk {}: uncompressed size {} (expected {})", index, k, r.uncompressed_size, us);
    if (r.blob_index >= img_.blobs.size())
      return corrupt("RAFS v5 inode {} chunk {}: blob index {} out of range ({} blobs)", index, k, r.blob_index,
                     img_.blobs.size());
    const bool compressed = r.flags & chunk_flags::kCompressed;
    if (r.compressed_size == 0 || r.compressed_size > 2 * kMaxChunkSize ||
        (!compressed && r.compressed_size != r.uncompressed_size))
      return corrupt("RAFS v5 inode {} chunk {}: compressed size {} invalid", index, k, r.compressed_size);
    uint64_t cend;
    if (__builtin_add_overflow(r.compressed_offset, uint64_t(r.compressed_size), &cend))
      return corrupt("RAFS v5 inode {} chunk {}: compressed range overflows", index, k);
    const RafsV5BlobSummary& b = img_.blobs[r.blob_index];
    if (b.has_ext_entry) {
      if (r.index >= b.chunk_count)
        return corrupt("RAFS v5 inode {} chunk {}: ci index {} >= blob chunk count {}", index, k, r.index, b.chunk_count);
      if (b.compressed_size && cend > b.compressed_size)
        return corrupt("RAFS v5 inode {} chunk {}: compressed range ends at {:#x}, past the blob ({:#x})", index, k,
                       cend, b.compressed_size);
    } else if (r.index >= kMaxChunksPerBlob) {
      return corrupt("RAFS v5 inode {} chunk {}: ci index {} exceeds 2^24", index, k, r.index);
    }
    ChunkRecord c = chunk_record_from(r);  // uncompressed_offset is re-laid out in layout_blobs()
    // One ci index is one stored chunk: every reference must agree on it.
    auto [slot, fresh] = seen_[r.blob_index].try_emplace(r.index, c);
    const ChunkRecord& s = slot->second;
    if (!fresh && (s.digest != c.digest || s.compressed_offset != c.compressed_offset ||
               s.compressed_size != c.compressed_size || s.uncompressed_size != c.uncompressed_size ||
               s.uncompressed_offset != c.uncompressed_offset || s.compressed != c.compressed)) {
      return corrupt("RAFS v5 inode {} chunk {}: blob {} ci {} described differently elsewhere", index, k,
                     r.blob_index, r.index);
    }
    out->chunks.push_back(c);
  }
  return ok();
}

Status Parser::decode(uint64_t index, RafsV5Inode* raw, TreeNode* out) {
  NYDUS_ASSIGN_OR_RETURN(uint64_t off, inode_offset(index));
  const auto ino = load<RafsV5Inode>(d_ + off);
  *raw = ino;
  if (ino.flags & ~kKnownInodeFlags) return corrupt("RAFS v5 inode {}: unknown flags {:#x}", index, ino.flags);
  if (ino.ino == 0) return corrupt("RAFS v5 inode {}: inode number 0", index);
  if (ino.nlink == 0) return corrupt("RAFS v5 inode {}: link count 0", index);
  if (ino.name_size == 0 || ino.name_size > kMaxName + 1)
    return corrupt("RAFS v5 inode {}: name size {} not in 1..256", index, ino.name_size);
  if (file_type_from_mode(ino.mode) == FileType::kUnknown)
    return corrupt("RAFS v5 inode {}: invalid file type in mode {:#o}", index, ino.mode);
  const uint64_t name_off = off + kRafsV5InodeSize;
  const uint64_t link_off = name_off + align8(ino.name_size);
  uint64_t end = link_off + align8(ino.symlink_size);
  if (!in_range(size_, name_off, end - name_off))
    return corrupt("RAFS v5 inode {}: name/symlink exceed the image", index);
  out->name.assign(reinterpret_cast<const char*>(d_ + name_off), ino.name_size);
  out->mode = ino.mode;
  out->uid = ino.uid;
  out->gid = ino.gid;
  out->mtime = ino.mtime;
  out->mtime_nsec = ino.mtime_nsec;
  out->rdev = ino.rdev;
  const uint32_t type = ino.mode & S_IFMT;
  if (type == S_IFLNK) {
    if (ino.symlink_size == 0 || ino.symlink_size > kMaxSymlink)
      return corrupt("RAFS v5 inode {}: symlink target length {} not in 1..4095", index, ino.symlink_size);
    out->symlink_target.assign(reinterpret_cast<const char*>(d_ + link_off), ino.symlink_size);
    if (out->symlink_target.find('\0') != std::string::npos)
      return corrupt("RAFS v5 inode {}: symlink target contains a NUL byte", index);
  }
  if (ino.flags & v5_inode_flags::kXattr) NYDUS_TRY(decode_xattrs(end, index, out, &end));
  if (type == S_IFREG) {
    out->size = ino.size;
    NYDUS_TRY(decode_chunks(end, ino, index, out));
  }
  return ok();
}

Status Parser::tree() {
  const uint64_t entries = img_.sb.inode_table_entries;
  auto& nodes = img_.spec.nodes;
  std::vector<bool> visited(entries + 1, false);
  std::unordered_map<uint64_t, uint32_t> by_ino;  // inode number -> first node (non-directories)
  struct Pending {
    uint64_t index;   // inode table index
    uint32_t parent;  // node index of the parent directory
  };
  std::vector<Pending> work{{kRafsV5RootIndex, 0}};
  visited[kRafsV5RootIndex] = true;
  // Breadth first over a graph whose nodes can each be entered once: at most
  // `entries` iterations, so a cycle or shared subtree cannot loop or blow up.
  for (size_t w = 0; w < work.size(); ++w) {
    const Pending p = work[w];
    RafsV5Inode raw{};
    TreeNode node;
    auto st = decode(p.index, &raw, &node);
    if (!st) return st;
    const uint32_t me = uint32_t(nodes.size());
    if (me == 0) {
      if ((raw.mode & S_IFMT) != S_IFDIR) return corrupt("RAFS v5 root inode is not a directory");
      node.name.clear();
    } else {
      if (!valid_name(node.name)) return corrupt("RAFS v5 inode {}: invalid file name", p.index);
      nodes[p.parent].children.push_back(me);
      if ((raw.mode & S_IFMT) != S_IFDIR) {
        auto [it, fresh] = by_ino.emplace(raw.ino, me);
        if (!fresh) {
          const TreeNode& first = nodes[it->second];
          if ((first.mode & S_IFMT) != (raw.mode & S_IFMT) || first.size != node.size)
            return corrupt("RAFS v5 inode {}: hard link to inode {} of another type or size", p.index, raw.ino);
          node.hardlink_of = it->second;
        }
      }
    }
    if ((raw.mode & S_IFMT) == S_IFDIR && raw.child_count > 0) {
      const uint64_t first = raw.child_index, count = raw.child_count;
      if (first == 0 || first > entries || count > entries - first + 1)
        return corrupt("RAFS v5 inode {}: children [{}, +{}) outside the inode table (1..{})", p.index, first, count,
                       entries);
      for (uint64_t c = first; c < first + count; ++c) {
        if (visited[c])
          return corrupt("RAFS v5 inode {}: child index {} is already in the tree (directory cycle or shared entry)",
                         p.index, c);
        visited[c] = true;
        work.push_back({c, me});
      }
    }
    node_ino_.push_back(raw.ino);
    nodes.push_back(std::move(node));
  }
  // Directory entries must be unique (v5 lookups binary-search sorted names).
  for (const auto& n : nodes) {
    std::vector<std::string_view> names;
    names.reserve(n.children.size());
    for (uint32_t c : n.children) names.push_back(nodes[c].name);
    std::sort(names.begin(), names.end());
    if (std::adjacent_find(names.begin(), names.end()) != names.end())
      return corrupt("RAFS v5 directory '{}' has two entries with one name", n.name);
  }
  // Prefetch table: inode numbers; unknown ones are hints that no longer apply.
  const auto& sb = img_.sb;
  std::unordered_map<uint64_t, uint32_t> node_of_ino;  // first node with each inode number
  for (uint32_t n = 0; n < node_ino_.size(); ++n) node_of_ino.emplace(node_ino_[n], n);
  for (uint64_t i = 0; i < sb.prefetch_table_entries; ++i) {
    const uint32_t ino = load<uint32_t>(d_ + sb.prefetch_table_offset + i * 4);
    if (ino == 0) break;
    if (auto it = node_of_ino.find(ino); it != node_of_ino.end()) img_.spec.prefetch_nodes.push_back(it->second);
  }
  return ok();
}

Compressor compressor_of(uint64_t flags) {
  if (flags & super_flags::kCompressionLz4) return Compressor::kLz4Block;
  if (flags & super_flags::kCompressionGzip) return Compressor::kGzip;
  if (flags & super_flags::kCompressionZstd) return Compressor::kZstd;
  return Compressor::kNone;
}

Status Parser::layout_blobs() {
  const uint64_t cs = img_.sb.block_size;
  const uint64_t flags = img_.sb.flags;
  // Blobs no file references are left out of the translation (an empty
  // layer's blob has no chunks, and a blob cache needs at least one); the
  // others keep their order, renumbered.
  std::vector<uint32_t> new_index(img_.blobs.size(), UINT32_MAX);
  // (blob, ci) -> virtual uncompressed offset.
  std::vector<std::unordered_map<uint32_t, uint64_t>> voff(img_.blobs.size());
  for (size_t b = 0; b < img_.blobs.size(); ++b) {
    if (seen_[b].empty()) continue;
    const RafsV5BlobSummary& s = img_.blobs[b];
    const uint32_t nb = uint32_t(img_.blob_chunks.size());
    new_index[b] = nb;
    auto& recs = img_.blob_chunks.emplace_back();
    for (auto& [ci, r] : seen_[b]) recs.push_back(r);
    std::sort(recs.begin(), recs.end(), [](const ChunkRecord& x, const ChunkRecord& y) { return x.ci_index < y.ci_index; });
    auto& recorded = img_.recorded_uncompressed_offsets.emplace_back();
    uint64_t pos = 0, stored = 0;
    for (ChunkRecord& r : recs) {
      recorded.push_back(r.uncompressed_offset);
      r.blob_index = nb;
      r.uncompressed_offset = pos;
      voff[b][r.ci_index] = pos;
      pos += align_up(r.uncompressed_size, kBlockSize);
      stored = std::max<uint64_t>(stored, r.compressed_offset + r.compressed_size);
    }
    if (pos > kMaxVirtualBlobSize) return corrupt("RAFS v5 blob {}: chunks need more than 2^44 bytes", b);
    BlobInfo bi;
    bi.blob_id = s.blob_id;
    bi.chunk_size = uint32_t(cs);
    // Without an extended blob table the count is what the files reference.
    bi.chunk_count = s.has_ext_entry ? s.chunk_count : recs.back().ci_index + 1;
    bi.compressor = compressor_of(flags);
    bi.digester = (flags & super_flags::kHashSha256) ? Digester::kSha256 : Digester::kBlake3;
    bi.features = 0;  // a v5 bootstrap records no blob meta: the chunks come from it
    bi.compressed_size = s.has_ext_entry && s.compressed_size ? s.compressed_size : stored;
    bi.uncompressed_size = pos;
    img_.spec.blobs.push_back(std::move(bi));
  }
  for (auto& n : img_.spec.nodes)
    for (auto& c : n.chunks) {
      c.uncompressed_offset = voff[c.blob_index].at(c.ci_index);
      c.blob_index = new_index[c.blob_index];
    }
  return ok();
}

Result<RafsV5Image> Parser::run() {
  NYDUS_TRY(superblock());
  NYDUS_TRY(blob_tables());
  NYDUS_TRY(tree());
  NYDUS_TRY(layout_blobs());
  auto& spec = img_.spec;
  spec.chunk_size = img_.sb.block_size;
  spec.compressor = compressor_of(img_.sb.flags);
  spec.digester = (img_.sb.flags & super_flags::kHashSha256) ? Digester::kSha256 : Digester::kBlake3;
  spec.explicit_uid_gid = true;  // keep the recorded owners
  return std::move(img_);
}

}  // namespace

bool is_rafs_v5(std::span<const uint8_t> bytes) {
  return bytes.size() >= 4 && load<uint32_t>(bytes.data()) == kRafsV5Magic;
}

Result<RafsV5Image> parse_rafs_v5(std::span<const uint8_t> bytes) { return Parser(bytes).run(); }

}  // namespace nydus::format
