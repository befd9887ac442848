#include "format/bootstrap_writer.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <bit>
#include <deque>
#include <map>

namespace nydus::format {

namespace {

// Block size of the image being written: 4096, or 512 in TARFS mode. Set
// once at the top of write_bootstrap(); the helpers below all lay out in it.
thread_local uint64_t blk = kBlockSize;
constexpr uint32_t kExtInodeSize = sizeof(InodeExtended);

bool is_dir(const TreeNode& n) { return S_ISDIR(n.mode); }
bool is_reg(const TreeNode& n) { return S_ISREG(n.mode); }
bool is_lnk(const TreeNode& n) { return S_ISLNK(n.mode); }

// ---- xattrs ---------------------------------------------------------------

struct XattrPrefix {
  std::string_view prefix;
  uint8_t index;
  bool whole_name;  // the prefix is the whole name (ACLs)
};
constexpr std::array<XattrPrefix, 5> kXattrPrefixes{{
    {"user.", xattr_index::kUser, false},
    {"system.posix_acl_access", xattr_index::kPosixAclAccess, true},
    {"system.posix_acl_default", xattr_index::kPosixAclDefault, true},
    {"trusted.", xattr_index::kTrusted, false},
    {"security.", xattr_index::kSecurity, false},
}};

Result<std::vector<uint8_t>> encode_xattrs(const std::vector<XattrPair>& in) {
  if (in.empty()) return std::vector<uint8_t>{};
  // Sorted by name so the same tree always gives the same bytes.
  std::vector<const XattrPair*> xs;
  for (auto& x : in) xs.push_back(&x);
  std::sort(xs.begin(), xs.end(), [](auto* a, auto* b) { return a->name < b->name; });
  std::vector<uint8_t> out(sizeof(XattrIbodyHeader), 0);
  for (auto* x : xs) {
    const XattrPrefix* p = nullptr;
    for (auto& c : kXattrPrefixes) {
      if (c.whole_name ? x->name == c.prefix : x->name.starts_with(c.prefix) && x->name.size() > c.prefix.size()) {
        p = &c;
        break;
      }
    }
    if (!p) return errorf(Errc::kUnsupported, "xattr '{}' has a prefix RAFS cannot store", x->name);
    std::string_view suffix = std::string_view(x->name).substr(p->prefix.size());
    if (suffix.size() > 255 || x->name.size() > 255)
      return errorf(Errc::kInvalidArgument, "xattr name '{}' longer than 255 bytes", x->name);
    if (x->value.size() > 65535)
      return errorf(Errc::kInvalidArgument, "xattr '{}' value longer than 65535 bytes", x->name);
    XattrEntry e{uint8_t(suffix.size()), p->index, uint16_t(x->value.size())};
    const uint8_t* eb = reinterpret_cast<const uint8_t*>(&e);
    out.insert(out.end(), eb, eb + sizeof(e));
    out.insert(out.end(), suffix.begin(), suffix.end());
    out.insert(out.end(), x->value.begin(), x->value.end());
    out.resize(align_up(out.size(), 4), 0);
  }
  // i_xattr_icount is a u16 counting 4-byte slots.
  if ((out.size() - 12) / 4 + 1 > 0xFFFF)
    return make_error(Errc::kInvalidArgument, "xattrs of one inode exceed 256 KiB");
  return out;
}

// ---- directories ------------------------------------------------------------

struct DirEntryOut {
  std::string_view name;
  uint32_t node;  // node index (resolved to a nid at serialisation)
  FileType type;
};

// Size of a directory's data: entries never straddle a block.
uint64_t dir_data_size(const std::vector<DirEntryOut>& ents) {
  uint64_t d = 0;
  for (auto& e : ents) {
    uint64_t len = e.name.size() + sizeof(Dirent);
    if (d % blk + len > blk) d = align_up(d, blk);
    d += len;
  }
  return d;
}

void encode_dir(const std::vector<DirEntryOut>& ents, const std::vector<uint64_t>& nids,
                uint64_t size, std::vector<uint8_t>& out) {
  out.assign(size, 0);
  size_t i = 0;
  uint64_t block = 0;
  while (i < ents.size()) {
    // Count the entries that fit in this block.
    size_t n = 0;
    uint64_t used = 0;
    while (i + n < ents.size() && used + sizeof(Dirent) + ents[i + n].name.size() <= blk) {
      used += sizeof(Dirent) + ents[i + n].name.size();
      n++;
    }
    uint8_t* b = out.data() + block;
    uint64_t nameoff = sizeof(Dirent) * n;
    for (size_t k = 0; k < n; k++) {
      const auto& e = ents[i + k];
      Dirent de{nids[e.node], uint16_t(nameoff), uint8_t(e.type), 0};
      std::memcpy(b + sizeof(Dirent) * k, &de, sizeof(de));
      std::memcpy(b + nameoff, e.name.data(), e.name.size());
      nameoff += e.name.size();
    }
    i += n;
    block += blk;
  }
}

// ---- placement (upstream's allocator, rafs-v6-format.md §3.9) ------------------

class Allocator {
 public:
  uint64_t offset = kBlockSize;  // virtual; the first 4096 bytes after M stay empty (upstream, even with 512-byte blocks)

  void append_available(uint64_t off) {
    if (off % blk == 0) return;
    queues_[(blk - off % blk) / 32].push_back(align_down(off, blk));
  }
  // 0 = nothing suitable (0 is never a valid virtual offset).
  uint64_t allocate_available(uint64_t size) {
    if (size >= blk) return 0;
    uint64_t lo = (size + 31) / 32;
    for (uint64_t q = lo; q < blk / 32; q++) {
      if (queues_[q].empty()) continue;
      uint64_t b = queues_[q].front();
      queues_[q].pop_front();
      uint64_t start = b + blk - 32 * q;
      append_available(start + 32 * lo);
      return start;
    }
    return 0;
  }
  void align(uint64_t a) { offset = align_up(offset, a); }
  uint64_t take(uint64_t size) {
    uint64_t off = offset;
    offset += size;
    return off;
  }

 private:
  std::array<std::deque<uint64_t>, kBlockSize / 32> queues_;  // the first blk / 32 used
};

struct Placed {
  uint64_t off = 0;       // virtual offset of the inode
  uint64_t data_off = 0;  // virtual offset of the first full data block (dirs/symlinks)
  DataLayout layout = DataLayout::kFlatPlain;
  uint32_t inode_size = 0;  // 64 + xattr bytes
  uint64_t data_size = 0;   // dir/symlink data size
  uint32_t ino = 0;
  uint32_t nlink = 1;
  bool placed = false;
};

}  // namespace

std::vector<uint32_t> placement_order(const std::vector<TreeNode>& nodes) {
  std::vector<uint32_t> order;
  if (nodes.empty()) return order;
  // Directories are visited depth first; each directory's non-directory
  // children come right after it, then its subdirectories one by one.
  std::vector<uint32_t> stack{0};
  while (!stack.empty()) {
    uint32_t d = stack.back();
    stack.pop_back();
    order.push_back(d);
    std::vector<uint32_t> kids = nodes[d].children;
    std::sort(kids.begin(), kids.end(), [&](uint32_t a, uint32_t b) { return nodes[a].name < nodes[b].name; });
    std::vector<uint32_t> subdirs;
    for (uint32_t c : kids) {
      if (is_dir(nodes[c])) subdirs.push_back(c);
      else order.push_back(c);
    }
    for (auto it = subdirs.rbegin(); it != subdirs.rend(); ++it) stack.push_back(*it);
  }
  return order;
}

Result<BootstrapResult> write_bootstrap(const BootstrapSpec& spec) {
  blk = spec.tarfs ? (1u << kTarfsBlockBits) : kBlockSize;
  const auto& nodes = spec.nodes;
  if (nodes.empty() || !is_dir(nodes[0])) return make_error(Errc::kInvalidArgument, "tree has no root directory");
  if (spec.blobs.size() > kMaxBlobs) return errorf(Errc::kInvalidArgument, "{} blobs, at most {}", spec.blobs.size(), kMaxBlobs);
  if (!std::has_single_bit(spec.chunk_size) || spec.chunk_size < kMinChunkSize || spec.chunk_size > kMaxChunkSize)
    return errorf(Errc::kInvalidArgument, "chunk size {:#x} is not a power of two in 4 KiB..16 MiB", spec.chunk_size);

  const size_t n = nodes.size();
  // Sorted children and the parent of every directory.
  std::vector<std::vector<uint32_t>> kids(n);
  std::vector<uint32_t> parent(n, 0);
  for (size_t i = 0; i < n; i++) {
    kids[i] = nodes[i].children;
    std::sort(kids[i].begin(), kids[i].end(), [&](uint32_t a, uint32_t b) { return nodes[a].name < nodes[b].name; });
    for (size_t k = 0; k < kids[i].size(); k++) {
      uint32_t c = kids[i][k];
      if (c == 0 || c >= n) return errorf(Errc::kInvalidArgument, "bad child index {}", c);
      if (k > 0 && nodes[kids[i][k - 1]].name == nodes[c].name)
        return errorf(Errc::kInvalidArgument, "duplicate name '{}'", nodes[c].name);
      parent[c] = uint32_t(i);
    }
  }

  // Hardlink groups: the group's leader is the node named by hardlink_of.
  std::vector<uint32_t> leader(n);
  std::vector<uint32_t> group_size(n, 0);
  for (size_t i = 0; i < n; i++) {
    int64_t h = nodes[i].hardlink_of;
    // Any non-directory may be hardlinked: the kernel just sees one nid under
    // several names (upstream only shares regular files).
    leader[i] = (h >= 0 && size_t(h) < n && !is_dir(nodes[i]) && !is_dir(nodes[size_t(h)])) ? uint32_t(h) : uint32_t(i);
    group_size[leader[i]]++;
  }

  // Per-node encoded pieces.
  std::vector<std::vector<uint8_t>> xattrs(n);
  std::vector<std::vector<DirEntryOut>> dirents(n);
  std::vector<Placed> pl(n);
  bool has_xattr = false;
  for (size_t i = 0; i < n; i++) {
    if (leader[i] != i) continue;
    NYDUS_ASSIGN_OR_RETURN(xattrs[i], encode_xattrs(nodes[i].xattrs));
    has_xattr |= !xattrs[i].empty();
    pl[i].inode_size = kExtInodeSize + uint32_t(xattrs[i].size());
    if (is_dir(nodes[i])) {
      auto& ents = dirents[i];
      ents.push_back({".", uint32_t(i), FileType::kDirectory});
      ents.push_back({"..", parent[i], FileType::kDirectory});
      for (uint32_t c : kids[i]) {
        if (nodes[c].name.empty() || nodes[c].name.size() > 255 || nodes[c].name.find('/') != std::string::npos)
          return errorf(Errc::kInvalidArgument, "bad file name '{}'", nodes[c].name);
        ents.push_back({nodes[c].name, c, file_type_from_mode(nodes[c].mode)});
      }
      std::sort(ents.begin(), ents.end(), [](auto& a, auto& b) { return a.name < b.name; });
      pl[i].data_size = dir_data_size(ents);
    } else if (is_lnk(nodes[i])) {
      if (nodes[i].symlink_target.empty() || nodes[i].symlink_target.size() > 4095)
        return errorf(Errc::kInvalidArgument, "symlink '{}' target length {} not in 1..4095", nodes[i].name,
                      nodes[i].symlink_target.size());
      pl[i].data_size = nodes[i].symlink_target.size();
    }
  }

  // ---- placement walk -------------------------------------------------------
  Allocator a;
  uint32_t next_ino = 0;
  auto place_with_tail = [&](uint32_t i) {
    Placed& p = pl[i];
    const uint64_t d = p.data_size, tail = d % blk;
    if (tail != 0 && p.inode_size + tail <= blk) {
      p.layout = DataLayout::kFlatInline;
      uint64_t off = a.allocate_available(p.inode_size + tail);
      if (off == 0) {
        if (blk - a.offset % blk < p.inode_size + tail) {
          a.append_available(a.offset);
          a.align(blk);
        }
        off = a.take(p.inode_size + tail);
      }
      p.off = off;
      if (d != tail) {
        a.append_available(a.offset);
        a.align(blk);
      }
      p.data_off = a.take(d - tail);
    } else {
      p.layout = DataLayout::kFlatPlain;
      uint64_t off = a.allocate_available(p.inode_size);
      p.off = off ? off : a.take(p.inode_size);
      a.append_available(a.offset);
      a.align(blk);
      p.data_off = a.take(d);
      a.align(blk);
    }
  };

  std::vector<uint32_t> stack{0};
  pl[0].ino = ++next_ino;
  while (!stack.empty()) {
    uint32_t d = stack.back();
    stack.pop_back();
    place_with_tail(d);
    a.align(32);
    pl[d].placed = true;
    uint32_t subdirs = 0;
    std::vector<uint32_t> sub;
    for (uint32_t c : kids[d]) {
      uint32_t l = leader[c];
      // Every entry consumes an inode number; a hardlink alias met after its
      // group was placed shares that inode. The first member met in walk
      // order carries the group's inode (all members have the same data).
      ++next_ino;
      if (pl[l].placed) continue;
      pl[l].ino = next_ino;
      const TreeNode& nd = nodes[l];
      Placed& p = pl[l];
      if (is_dir(nd)) {
        subdirs++;
        sub.push_back(c);
        continue;
      }
      if (is_reg(nd)) {
        uint64_t total = align_up(p.inode_size, 8) + 8 * nd.chunks.size();
        uint64_t off = a.allocate_available(total);
        p.off = off ? off : a.take(total);
        p.layout = DataLayout::kChunkBased;
        p.nlink = group_size[l];
      } else if (is_lnk(nd)) {
        place_with_tail(l);
        p.nlink = group_size[l];
      } else {
        p.off = a.take(p.inode_size);
        p.layout = DataLayout::kFlatPlain;
        p.nlink = group_size[l];
      }
      p.placed = true;
      a.align(32);
    }
    pl[d].nlink = 2 + subdirs;
    for (auto it = sub.rbegin(); it != sub.rend(); ++it) stack.push_back(*it);
  }
  for (size_t i = 0; i < n; i++)
    if (!pl[leader[i]].placed) return errorf(Errc::kInvalidArgument, "node {} ('{}') is not reachable from the root", i, nodes[i].name);

  std::vector<uint64_t> nids(n);
  for (size_t i = 0; i < n; i++) nids[i] = pl[leader[i]].off / 32;
  if (nids[0] != kRootNid) return make_error(Errc::kInternal, "root nid is not 128");
  if (a.offset / 32 > UINT32_MAX) return make_error(Errc::kInvalidArgument, "metadata larger than 128 GiB");

  // ---- fixed areas before the metadata --------------------------------------
  const uint64_t nblobs = spec.blobs.size();
  const uint64_t blob_table_off = align_up(kDeviceTableOffset + 128 * nblobs, blk);
  const uint64_t prefetch_off = blob_table_off + 256 * nblobs;
  std::vector<uint32_t> prefetch;
  if (nblobs > 0)
    for (uint32_t i : spec.prefetch_nodes)
      if (i < n) prefetch.push_back(uint32_t(nids[i]));
  const uint64_t meta_off = nblobs == 0 ? 0 : align_up(prefetch_off + 4 * prefetch.size(), blk);
  const uint64_t meta_end = meta_off + align_up(a.offset, blk);

  // Chunk-info table: one record per distinct (digest, blob), sorted; the
  // last file (in walk order) referencing a chunk gives its file_offset.
  std::map<std::pair<Digest, uint32_t>, std::pair<ChunkRecord, uint64_t>> chunk_table;
  for (uint32_t i : placement_order(nodes)) {
    if (!is_reg(nodes[i]) || leader[i] != i) continue;
    uint64_t fo = 0;
    for (auto& c : nodes[i].chunks) {
      if (c.blob_index >= nblobs) return errorf(Errc::kInvalidArgument, "chunk refers to blob {} of {}", c.blob_index, nblobs);
      chunk_table[{c.digest, c.blob_index + 1}] = {c, fo};
      fo += spec.chunk_size;
    }
  }
  const uint64_t chunk_table_off = meta_end;
  const uint64_t chunk_table_size = 80 * chunk_table.size();
  const uint64_t total_size = align_up(chunk_table_off + chunk_table_size, blk);

  std::vector<uint8_t> out(total_size, 0);
  auto put = [&](uint64_t off, const void* p, size_t len) { std::memcpy(out.data() + off, p, len); };

  // ---- inodes and their data ---------------------------------------------------
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < n; i++) {
    if (leader[i] != i) continue;
    const TreeNode& nd = nodes[i];
    const Placed& p = pl[i];
    InodeExtended ino{};
    ino.format = uint16_t(kInodeVersionExtended | uint16_t(p.layout) << kInodeLayoutShift);
    ino.xattr_icount = xattrs[i].empty() ? 0 : uint16_t((xattrs[i].size() - 12) / 4 + 1);
    ino.mode = uint16_t(nd.mode);
    ino.ino = p.ino;
    ino.uid = spec.explicit_uid_gid ? nd.uid : 0;
    ino.gid = spec.explicit_uid_gid ? nd.gid : 0;
    ino.mtime = nd.mtime;
    ino.mtime_nsec = nd.mtime_nsec;
    ino.nlink = p.nlink;
    const uint64_t abs = meta_off + p.off;
    if (is_reg(nd)) {
      ino.size = nd.size;
      const uint64_t expect = (nd.size + spec.chunk_size - 1) / spec.chunk_size;
      if (nd.chunks.size() != expect)
        return errorf(Errc::kInvalidArgument, "file '{}': {} chunks for {} bytes", nd.name, nd.chunks.size(), nd.size);
      // One contiguous run in one blob lets the kernel map the file as a
      // single extent: announce a chunk size covering the whole file.
      uint64_t erofs_chunk = spec.chunk_size;
      if (nd.size > spec.chunk_size) {
        bool contiguous = true;
        for (size_t k = 1; k < nd.chunks.size() && contiguous; k++)
          contiguous = nd.chunks[k].blob_index == nd.chunks[0].blob_index &&
                       nd.chunks[k].uncompressed_offset == nd.chunks[k - 1].uncompressed_offset + spec.chunk_size;
        if (contiguous) erofs_chunk = std::bit_ceil(nd.size);
      }
      ino.u = kChunkFormatIndexes | uint32_t(std::countr_zero(erofs_chunk) - std::countr_zero(blk));
      uint64_t idx = align_up(abs + p.inode_size, 8);
      for (auto& c : nd.chunks) {
        if (c.uncompressed_offset % blk) return errorf(Errc::kInvalidArgument, "chunk not {}-byte aligned", blk);
        if (c.ci_index >= kMaxChunksPerBlob) return make_error(Errc::kInvalidArgument, "ci index beyond 2^24");
        ChunkIndex ci = make_chunk_index(c.blob_index, c.ci_index, uint32_t(c.uncompressed_offset / blk));
        put(idx, &ci, sizeof(ci));
        idx += sizeof(ci);
      }
    } else if (is_dir(nd) || is_lnk(nd)) {
      ino.size = p.data_size;
      ino.u = uint32_t((meta_off + p.data_off) / blk);
      if (is_dir(nd)) {
        encode_dir(dirents[i], nids, p.data_size, buf);
      } else {
        buf.assign(nd.symlink_target.begin(), nd.symlink_target.end());
      }
      const uint64_t tail = p.layout == DataLayout::kFlatInline ? p.data_size % blk : 0;
      const uint64_t full = p.data_size - tail;
      if (full) put(meta_off + p.data_off, buf.data(), full);
      if (tail) put(abs + p.inode_size, buf.data() + full, tail);
    } else {
      ino.u = nd.rdev;
    }
    put(abs, &ino, sizeof(ino));
    if (!xattrs[i].empty()) put(abs + sizeof(ino), xattrs[i].data(), xattrs[i].size());
  }

  // ---- chunk table -------------------------------------------------------------
  {
    uint64_t off = chunk_table_off;
    for (auto& [key, val] : chunk_table) {
      const ChunkInfoRecord r = chunk_info_record(val.first, val.second);
      put(off, &r, sizeof(r));
      off += sizeof(r);
    }
  }

  // ---- blob/device tables, prefetch table ------------------------------------------
  uint64_t blocks = 0;
  uint64_t pos = total_size;
  bool all_inlined_digest = true;
  for (size_t b = 0; b < nblobs; b++) {
    const BlobInfo& bi = spec.blobs[b];
    if (bi.blob_id.size() > 64) return errorf(Errc::kInvalidArgument, "blob id '{}' longer than 64", bi.blob_id);
    if (bi.uncompressed_size % blk) return errorf(Errc::kInvalidArgument, "blob uncompressed size not {}-byte aligned", blk);
    all_inlined_digest &= (bi.features & blob_features::kInlinedChunkDigest) != 0;
    const uint64_t bblocks = bi.uncompressed_size / blk;
    blocks += bblocks;
    DeviceSlot slot{};
    std::memcpy(slot.blob_id, bi.blob_id.data(), bi.blob_id.size());
    slot.blocks = uint32_t(bblocks);
    const uint64_t mapped = align_up(pos, 0x80000) / blk;
    slot.mapped_blkaddr = uint32_t(mapped);
    pos = (mapped + bblocks) * blk;
    put(kDeviceTableOffset + 128 * b, &slot, sizeof(slot));

    BlobTableEntry e{};
    std::memcpy(e.blob_id, bi.blob_id.data(), bi.blob_id.size());
    e.blob_index = uint32_t(b);
    e.chunk_size = spec.chunk_size;
    e.chunk_count = bi.chunk_count;
    e.compression_algo = uint32_t(bi.compressor);
    e.digest_algo = uint32_t(bi.digester);
    e.features = bi.features;
    e.compressed_size = bi.compressed_size;
    e.uncompressed_size = bi.uncompressed_size;
    e.blob_toc_size = bi.toc_size;
    e.ci_compressor = uint32_t(bi.ci_compressor);
    e.ci_offset = bi.ci_offset;
    e.ci_compressed_size = bi.ci_compressed_size;
    e.ci_uncompressed_size = bi.ci_uncompressed_size;
    std::memcpy(e.blob_toc_digest, bi.toc_digest.data(), 32);
    std::memcpy(e.blob_meta_digest, bi.blob_meta_digest.data(), 32);
    e.blob_meta_size = bi.blob_meta_size;
    e.cipher_iv = bi.cipher_iv_tail;
    e.cipher_algo = bi.cipher_algo;
    put(blob_table_off + 256 * b, &e, sizeof(e));
  }
  if (!prefetch.empty()) put(prefetch_off, prefetch.data(), 4 * prefetch.size());

  // ---- superblocks ------------------------------------------------------------------
  SuperBlock sb{};
  sb.magic = kErofsMagic;
  sb.feature_compat = kFeatureCompatRafsV6;
  sb.blkszbits = uint8_t(std::countr_zero(blk));
  sb.root_nid = uint16_t(kRootNid);
  sb.inos = next_ino;
  sb.blocks = uint32_t(blocks);
  sb.meta_blkaddr = uint32_t(meta_off / blk);
  sb.feature_incompat = kRafsV6Incompat;
  sb.extra_devices = uint16_t(nblobs);
  sb.devt_slotoff = kDevtSlotOff;
  put(kSuperBlockOffset, &sb, sizeof(sb));

  ExtSuperBlock ext{};
  // Upstream names the build's cipher in the superblock (--encrypt).
  const bool encrypted = std::any_of(spec.blobs.begin(), spec.blobs.end(), [](const BlobInfo& bi) { return bi.cipher_algo != 0; });
  uint64_t flags = encrypted ? super_flags::kEncryptionAes128Xts : super_flags::kEncryptionNone;
  switch (spec.compressor) {
    case Compressor::kNone: flags |= super_flags::kCompressionNone; break;
    case Compressor::kLz4Block: flags |= super_flags::kCompressionLz4; break;
    case Compressor::kGzip: flags |= super_flags::kCompressionGzip; break;
    case Compressor::kZstd: flags |= super_flags::kCompressionZstd; break;
  }
  flags |= spec.digester == Digester::kSha256 ? super_flags::kHashSha256 : super_flags::kHashBlake3;
  if (spec.explicit_uid_gid) flags |= super_flags::kExplicitUidGid;
  if (has_xattr) flags |= super_flags::kHasXattr;
  if (all_inlined_digest) flags |= super_flags::kInlinedChunkDigest;
  if (spec.tarfs) flags |= super_flags::kTarfsMode;
  ext.flags = flags;
  ext.blob_table_offset = blob_table_off;
  ext.blob_table_size = uint32_t(256 * nblobs);
  ext.chunk_size = spec.chunk_size;
  ext.chunk_table_offset = chunk_table_off;
  ext.chunk_table_size = chunk_table_size;
  if (!prefetch.empty()) {
    ext.prefetch_table_offset = prefetch_off;
    ext.prefetch_table_size = uint32_t(4 * prefetch.size());
  }
  put(kExtSuperBlockOffset, &ext, sizeof(ext));

  return BootstrapResult{std::move(out), std::move(nids)};
}

}  // namespace nydus::format
