// Read-only RAFS v6 bootstrap reader. Every byte of the image is untrusted:
// all offsets are computed with overflow checks and tested against the
// mapping before any load, and nothing is allocated in proportion to a size
// field unless that size has already been bounded by the file size.
#include "format/bootstrap.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <unordered_set>

#include "format/digest.h"

namespace nydus::format {

namespace {

constexpr uint64_t kMinBootstrap = 2048;  // a 512-byte-block (TARFS) image is never smaller
constexpr uint32_t kPathMax = 4096;       // nydusd refuses longer symlink targets
constexpr size_t kMaxWalkDepth = 4096;    // bounds walk() on hostile images
constexpr uint64_t kMaxWalkEntries = 1ull << 26;
constexpr uint64_t kMaxBlobUncompressed = 1ull << 44;
constexpr uint64_t kMaxBlobCompressed = 1ull << 40;

bool add_ovf(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

// Text up to the first NUL of a fixed-size on-disk field.
std::string_view fixed_str(const uint8_t* p, size_t n) {
  const void* z = std::memchr(p, 0, n);
  size_t len = z ? size_t(static_cast<const uint8_t*>(z) - p) : n;
  return {reinterpret_cast<const char*>(p), len};
}

// Blob ids become file names in blob directories, so reject anything that
// could escape one (slashes, "..", control bytes) besides malformed ids.
bool valid_blob_id(std::string_view id) {
  if (id.empty() || id == "." || id == "..") return false;
  for (unsigned char c : id) {
    if (c <= 0x20 || c >= 0x7f || c == '/') return false;
  }
  return true;
}

const char* xattr_prefix(uint8_t index) {
  switch (index) {
    case xattr_index::kUser: return "user.";
    case xattr_index::kPosixAclAccess: return "system.posix_acl_access";
    case xattr_index::kPosixAclDefault: return "system.posix_acl_default";
    case xattr_index::kTrusted: return "trusted.";
    case xattr_index::kLustre: return "lustre.";
    case xattr_index::kSecurity: return "security.";
    default: return nullptr;
  }
}

}  // namespace

// ---- InodeView ---------------------------------------------------------------

bool InodeView::is_dir() const { return (mode & S_IFMT) == S_IFDIR; }
bool InodeView::is_reg() const { return (mode & S_IFMT) == S_IFREG; }
bool InodeView::is_symlink() const { return (mode & S_IFMT) == S_IFLNK; }
bool InodeView::is_device() const {
  return (mode & S_IFMT) == S_IFCHR || (mode & S_IFMT) == S_IFBLK;
}

// ---- opening -------------------------------------------------------------------

Bootstrap::~Bootstrap() {
  if (mapped_ && data_) munmap(const_cast<uint8_t*>(data_), size_);
}

void Bootstrap::release_resident_pages() const {
  // A private read-only file mapping is never written, so dropping its PTEs
  // loses nothing: a later access maps the page cache's page again.
  if (mapped_ && data_) ::madvise(const_cast<uint8_t*>(data_), size_, MADV_DONTNEED);
}

Result<std::shared_ptr<Bootstrap>> Bootstrap::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_error("open bootstrap " + path.string());
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    auto e = sys_error("stat bootstrap " + path.string());
    ::close(fd);
    return e;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return errorf(Errc::kInvalidArgument, "bootstrap {}: not a regular file", path.string());
  }
  // Check before mmap: a 0-byte mapping is an error and tiny files are never valid.
  if (st.st_size < off_t(kMinBootstrap)) {
    ::close(fd);
    return corrupt("bootstrap {}: {} bytes, smaller than {} bytes", path.string(), kMinBootstrap,
                   st.st_size);
  }
  void* p = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) return sys_error("mmap bootstrap " + path.string(), err);

  std::shared_ptr<Bootstrap> b(new Bootstrap());
  b->data_ = static_cast<const uint8_t*>(p);
  b->size_ = uint64_t(st.st_size);
  b->mapped_ = true;
  if (auto st2 = b->validate(); !st2) {
    return std::unexpected(std::move(st2).error().context("bootstrap " + path.string()));
  }
  // Upstream RafsSuper::load_from_file (set_blob_id_from_meta_path): a ZRAN
  // bootstrap that was inlined in its meta blob cannot record that blob's
  // digest; the file it is loaded from is named by it.
  constexpr uint32_t kInlinedRef = blob_features::kSeparate | blob_features::kInlinedFsMeta;
  for (BlobInfo& bi : b->blobs_)
    if ((bi.features & kInlinedRef) == kInlinedRef && bi.blob_meta_digest == Digest{})
      if (auto d = digest_from_hex(path.filename().string()); d) bi.blob_meta_digest = *d;
  return b;
}

Result<std::shared_ptr<Bootstrap>> Bootstrap::from_bytes(std::vector<uint8_t> bytes) {
  std::shared_ptr<Bootstrap> b(new Bootstrap());
  b->owned_ = std::move(bytes);
  b->data_ = b->owned_.data();
  b->size_ = b->owned_.size();
  NYDUS_TRY(b->validate());
  return b;
}

// ---- validation -----------------------------------------------------------------

namespace {

bool in_range(uint64_t file_size, uint64_t off, uint64_t len) {
  return off <= file_size && len <= file_size - off;
}

Status check_blob_entry(const BlobTableEntry& e, uint32_t i, uint32_t sb_chunk_size, uint64_t bsize) {
  if (e.blob_index != i) return corrupt("blob table entry {}: blob_index {} != {}", i, e.blob_index, i);
  if (e.chunk_size != sb_chunk_size)
    return corrupt("blob {}: chunk_size {:#x} differs from superblock chunk size {:#x}", i,
                   e.chunk_size, sb_chunk_size);
  if (e.compression_algo > uint32_t(Compressor::kZstd))
    return corrupt("blob {}: unknown compression algorithm {}", i, e.compression_algo);
  if (e.digest_algo > uint32_t(Digester::kSha256))
    return corrupt("blob {}: unknown digest algorithm {}", i, e.digest_algo);
  if (e.ci_compressor > uint32_t(Compressor::kZstd))
    return corrupt("blob {}: unknown chunk-info compressor {}", i, e.ci_compressor);
  if (e.cipher_algo > 1) return corrupt("blob {}: unknown cipher algorithm {}", i, e.cipher_algo);
  if (e.features & blob_features::kIncompatUnknownMask)
    return corrupt("blob {}: unknown incompatible features {:#x}", i,
                   e.features & blob_features::kIncompatUnknownMask);
  if (e.features & blob_features::kV5NoExtBlobTable)
    return corrupt("blob {}: internal feature bit 0x80000000 set on disk", i);
  if (e.chunk_count > kMaxChunksPerBlob)
    return corrupt("blob {}: chunk_count {} exceeds 2^24", i, e.chunk_count);
  if (e.uncompressed_size % bsize != 0 || e.uncompressed_size > kMaxBlobUncompressed)
    return corrupt("blob {}: uncompressed_size {} not a {} multiple <= 2^44", i, e.uncompressed_size, bsize);
  if (e.compressed_size > kMaxBlobCompressed)
    return corrupt("blob {}: compressed_size {} exceeds 2^40", i, e.compressed_size);
  uint64_t ci_end;
  if (add_ovf(e.ci_offset, e.ci_compressed_size, &ci_end))
    return corrupt("blob {}: ci_offset + ci_compressed_size overflows", i);
  if (e.ci_compressed_size > e.ci_uncompressed_size && !(e.cipher_algo != 0 && e.ci_compressed_size == 18))
    return corrupt("blob {}: ci_compressed_size {} > ci_uncompressed_size {}", i,
                   e.ci_compressed_size, e.ci_uncompressed_size);
  // The ci array size follows from the entry format (nydusd's check); images
  // without blob meta (ci size 0) predate it and are tolerated.
  if (e.ci_uncompressed_size != 0) {
    const bool v2 = e.features & blob_features::kChunkInfoV2;
    const bool extra = e.features & (blob_features::kBatch | blob_features::kZran |
                                     blob_features::kEncrypted);
    const uint64_t n = e.chunk_count;
    if (extra && !v2)
      return corrupt("blob {}: BATCH/ZRAN/ENCRYPTED require CHUNK_INFO_V2", i);
    if (v2 && extra) {
      if (e.ci_uncompressed_size < 24 * n)
        return corrupt("blob {}: ci_uncompressed_size {} < 24 * {} chunks", i,
                       e.ci_uncompressed_size, n);
    } else if (v2) {
      if (e.ci_uncompressed_size != 24 * n)
        return corrupt("blob {}: ci_uncompressed_size {} != 24 * {} chunks", i,
                       e.ci_uncompressed_size, n);
    } else if (!(e.features & blob_features::kIsChunkdictGenerated)) {
      if (e.ci_uncompressed_size != 16 * n)
        return corrupt("blob {}: ci_uncompressed_size {} != 16 * {} chunks", i,
                       e.ci_uncompressed_size, n);
    }
  }
  return ok();
}

}  // namespace

Status Bootstrap::validate() {
  if (size_ < kMinBootstrap) return corrupt("bootstrap is {} bytes, smaller than {} bytes", size_, kMinBootstrap);
  if (load<uint32_t>(data_) == kRafsV5Magic) {
    if (v5_sb_) return corrupt("RAFS v5 translation produced a v5 image");  // never recurse twice
    return adopt_v5();
  }
  sb_ = load<SuperBlock>(data_ + kSuperBlockOffset);
  ext_ = load<ExtSuperBlock>(data_ + kExtSuperBlockOffset);

  if (sb_.magic != kErofsMagic)
    return corrupt("superblock: bad magic {:#010x} at offset 1024 (expected EROFS {:#010x})",
                   sb_.magic, kErofsMagic);
  // Compat bit first: a plain EROFS image (often with a checksum) should be
  // reported as "not RAFS" rather than as a bad checksum.
  if (!(sb_.feature_compat & kFeatureCompatRafsV6))
    return errorf(Errc::kUnsupported,
                  "not a RAFS v6 image: EROFS superblock lacks the RAFS v6 compat bit 0x40000000 "
                  "(plain EROFS image?)");
  if (sb_.checksum != 0) return corrupt("superblock: checksum {:#x} must be 0", sb_.checksum);
  // 512-byte blocks only in TARFS mode, where chunks address the tar stream.
  if (sb_.blkszbits != kBlockBits && sb_.blkszbits != kTarfsBlockBits)
    return corrupt("superblock: blkszbits {} (expected 12, or 9 for TARFS)", sb_.blkszbits);
  const uint64_t bsize = block_size();
  if (size_ % bsize != 0) return corrupt("bootstrap size {} is not a multiple of {}", size_, bsize);
  if (sb_.extslots != 0) return corrupt("superblock: extslots {} must be 0", sb_.extslots);
  if (sb_.feature_incompat != kRafsV6Incompat) {
    if (sb_.feature_incompat & ~kRafsV6Incompat)
      return errorf(Errc::kUnsupported, "superblock: unsupported incompat features {:#x} (RAFS v6 uses {:#x})",
                    sb_.feature_incompat, kRafsV6Incompat);
    return corrupt("superblock: incompat features {:#x} (RAFS v6 requires {:#x})",
                   sb_.feature_incompat, kRafsV6Incompat);
  }
  if (sb_.u1 != 0) return corrupt("superblock: available_compr_algs {:#x} must be 0", sb_.u1);
  if (sb_.reserved[0] != 0) return corrupt("superblock: dirblkbits {} must be 0", sb_.reserved[0]);
  if (uint64_t(sb_.devt_slotoff) * 128 != kDeviceTableOffset)
    return corrupt("superblock: devt_slotoff {} (device table must start at 1408)", sb_.devt_slotoff);
  if (sb_.inos == 0) return corrupt("superblock: inode count is 0");
  if (sb_.xattr_blkaddr != 0)
    return corrupt("superblock: xattr_blkaddr {} must be 0 (no shared xattrs in RAFS)", sb_.xattr_blkaddr);
  const uint32_t nblobs = sb_.extra_devices;
  if (nblobs > kMaxBlobs) return corrupt("superblock: {} devices exceeds the limit {}", nblobs, kMaxBlobs);
  if (!in_range(size_, kDeviceTableOffset, uint64_t(nblobs) * sizeof(DeviceSlot)))
    return corrupt("device table ({} slots) exceeds image", nblobs);
  if (meta_offset() > size_)
    return corrupt("superblock: meta_blkaddr {} beyond image end", sb_.meta_blkaddr);

  // Extended superblock flags: nydusd rejects unknown bits and needs exactly
  // one compressor and one digester.
  const uint64_t f = ext_.flags;
  if (f & ~super_flags::kKnownMask)
    return corrupt("ext superblock: unknown flags {:#x}", f & ~super_flags::kKnownMask);
  if (std::popcount(f & super_flags::kCompressionMask) != 1)
    return corrupt("ext superblock: flags {:#x} must name exactly one compressor", f);
  if (std::popcount(f & super_flags::kHashMask) != 1)
    return corrupt("ext superblock: flags {:#x} must name exactly one digester", f);
  if ((f & super_flags::kEncryptionNone) && (f & super_flags::kEncryptionAes128Xts))
    return corrupt("ext superblock: flags {:#x} name two ciphers", f);
  // 512-byte blocks exist for TARFS mode (chunks at tar offsets) and only there.
  if (bool(f & super_flags::kTarfsMode) != (sb_.blkszbits == kTarfsBlockBits))
    return corrupt("ext superblock: TARFS mode flag {:#x} disagrees with {}-byte blocks", f & super_flags::kTarfsMode,
                   block_size());
  const uint32_t cs = ext_.chunk_size;
  if (!std::has_single_bit(cs) || cs < kMinChunkSize || cs > kMaxChunkSize)
    return corrupt("ext superblock: chunk size {:#x} is not a power of two in [4K, 16M]", cs);

  // Blob table + device slots.
  if (!in_range(size_, ext_.blob_table_offset, ext_.blob_table_size))
    return corrupt("blob table [{:#x}, +{}) exceeds image of {} bytes", ext_.blob_table_offset,
                   ext_.blob_table_size, size_);
  if (uint64_t(ext_.blob_table_size) != uint64_t(nblobs) * sizeof(BlobTableEntry))
    return corrupt("blob table size {} != 256 * {} devices", ext_.blob_table_size, nblobs);
  blobs_.clear();
  blobs_.reserve(nblobs);
  for (uint32_t i = 0; i < nblobs; ++i) {
    const auto e = load<BlobTableEntry>(data_ + ext_.blob_table_offset + uint64_t(i) * sizeof(BlobTableEntry));
    const auto slot = load<DeviceSlot>(data_ + kDeviceTableOffset + uint64_t(i) * sizeof(DeviceSlot));
    NYDUS_TRY(check_blob_entry(e, i, cs, block_size()));
    std::string_view id = fixed_str(e.blob_id, sizeof(e.blob_id));
    if (!valid_blob_id(id)) return corrupt("blob {}: invalid blob id", i);
    if (fixed_str(slot.blob_id, sizeof(slot.blob_id)) != id)
      return corrupt("blob {}: device slot tag differs from blob id {}", i, id);
    for (const auto& prev : blobs_) {
      if (prev.blob_id == id) return corrupt("blob {}: duplicate blob id {}", i, id);
    }
    BlobInfo b;
    b.blob_id = std::string(id);
    b.chunk_size = e.chunk_size;
    b.chunk_count = e.chunk_count;
    b.compressor = Compressor(e.compression_algo);
    b.digester = Digester(e.digest_algo);
    b.features = e.features;
    b.compressed_size = e.compressed_size;
    b.uncompressed_size = e.uncompressed_size;
    b.ci_compressor = Compressor(e.ci_compressor);
    b.ci_offset = e.ci_offset;
    b.ci_compressed_size = e.ci_compressed_size;
    b.ci_uncompressed_size = e.ci_uncompressed_size;
    b.toc_size = e.blob_toc_size;
    std::memcpy(b.toc_digest.data(), e.blob_toc_digest, b.toc_digest.size());
    std::memcpy(b.blob_meta_digest.data(), e.blob_meta_digest, b.blob_meta_digest.size());
    b.blob_meta_size = e.blob_meta_size;
    b.cipher_algo = e.cipher_algo;
    b.cipher_iv_tail = e.cipher_iv;
    b.mapped_blkaddr = slot.mapped_blkaddr;
    blobs_.push_back(std::move(b));
  }

  // Prefetch table: nids, 0-terminated; each nid is checked when used.
  if (!in_range(size_, ext_.prefetch_table_offset, ext_.prefetch_table_size))
    return corrupt("prefetch table [{:#x}, +{}) exceeds image", ext_.prefetch_table_offset,
                   ext_.prefetch_table_size);
  if (ext_.prefetch_table_size % 4 != 0)
    return corrupt("prefetch table size {} is not a multiple of 4", ext_.prefetch_table_size);
  prefetch_.clear();
  for (uint64_t o = 0; o < ext_.prefetch_table_size; o += 4) {
    uint32_t nid = load<uint32_t>(data_ + ext_.prefetch_table_offset + o);
    if (nid == 0) break;
    prefetch_.push_back(nid);
  }

  // Chunk table bounds (records are decoded on demand).
  if (!in_range(size_, ext_.chunk_table_offset, ext_.chunk_table_size))
    return corrupt("chunk table [{:#x}, +{}) exceeds image", ext_.chunk_table_offset,
                   ext_.chunk_table_size);
  if (ext_.chunk_table_size % sizeof(ChunkInfoRecord) != 0)
    return corrupt("chunk table size {} is not a multiple of 80", ext_.chunk_table_size);
  NYDUS_TRY(adopt_stargz_chunks());

  // The root must at least be a readable directory.
  auto root = inode(sb_.root_nid);
  if (!root) return std::unexpected(std::move(root).error().context("root inode"));
  if (!root->is_dir()) return corrupt("root inode {} is not a directory", sb_.root_nid);
  return ok();
}

Status Bootstrap::adopt_v5() {
  NYDUS_ASSIGN_OR_RETURN(RafsV5Image v5, parse_rafs_v5({data_, size_}));
  auto written = write_bootstrap(v5.spec);
  if (!written) return std::unexpected(std::move(written).error().context("RAFS v5 image"));
  v5_size_ = size_;
  v5_sb_ = v5.sb;
  v5_blobs_ = std::move(v5.blobs);
  if (mapped_) munmap(const_cast<uint8_t*>(data_), size_);
  mapped_ = false;
  owned_ = std::move(written->bytes);
  data_ = owned_.data();
  size_ = owned_.size();
  auto st = validate();
  if (!st) return std::unexpected(std::move(st).error().context("v6 image translated from RAFS v5"));
  for (size_t b = 0; b < blobs_.size() && b < v5.blob_chunks.size(); ++b)
    blobs_[b].bootstrap_chunks = std::make_shared<const std::vector<ChunkRecord>>(std::move(v5.blob_chunks[b]));
  return ok();
}

Compressor Bootstrap::compressor() const {
  const uint64_t f = ext_.flags;
  if (f & super_flags::kCompressionLz4) return Compressor::kLz4Block;
  if (f & super_flags::kCompressionGzip) return Compressor::kGzip;
  if (f & super_flags::kCompressionZstd) return Compressor::kZstd;
  return Compressor::kNone;
}

// eStargz TOC images (estargztoc-ref): a gzip blob without CHUNK_INFO_V2
// (upstream's "legacy stargz"), whose data blob is the layer, which holds no
// Nydus meta. Upstream's builder records a ci array in the blob table that
// it never writes anywhere (ours records none), so the bootstrap's chunk
// table is the only record of where chunks are: it stands in for the ci
// array, as for RAFS v5, and the table's ci fields are not used.
//
// Payloads that share a gzip member (an eStargz TOC's innerOffset: layers
// made with a min chunk size) are ours alone: such a chunk is flagged BATCH,
// its record's crc32 slot (no HAS_CRC32) holds the innerOffset, and every
// chunk of the member names the member's span as its stored bytes. It is
// the [innerOffset, +size) slice of the member's inflated head, which is as
// long as the furthest slice of the chunks sharing that span. Upstream looks
// a BATCH chunk up in a blob meta, which these blobs do not have
// (src/format/rafs-v6-format.md, 4.1).
Status Bootstrap::adopt_stargz_chunks() {
  std::vector<size_t> stargz;
  for (size_t b = 0; b < blobs_.size(); ++b)
    // TARFS blobs are the tar itself, which holds no ci array either.
    if (is_legacy_stargz(blobs_[b]) || (blobs_[b].features & blob_features::kTarfs)) stargz.push_back(b);
  if (stargz.empty()) return ok();
  auto table = chunk_table();
  if (!table) return std::unexpected(std::move(table).error().context("eStargz blob chunks"));
  std::vector<std::vector<ChunkRecord>> per(blobs_.size());
  for (auto& r : *table) per[r.blob_index].push_back(r);
  for (size_t b : stargz) {
    std::sort(per[b].begin(), per[b].end(), [](auto& x, auto& y) { return x.ci_index < y.ci_index; });
    for (size_t i = 1; i < per[b].size(); ++i)
      if (per[b][i].ci_index == per[b][i - 1].ci_index)
        return corrupt("blob {}: chunk table lists ci {} twice", b, per[b][i].ci_index);
    NYDUS_TRY(resolve_gzip_member_slices(b, per[b]));
    blobs_[b].bootstrap_chunks = std::make_shared<const std::vector<ChunkRecord>>(std::move(per[b]));
  }
  return ok();
}

Status Bootstrap::resolve_gzip_member_slices(size_t b, std::vector<ChunkRecord>& chunks) const {
  std::map<std::pair<uint64_t, uint32_t>, uint32_t> head;  // member span -> inflated length needed
  for (ChunkRecord& c : chunks) {
    if (!c.batch) continue;
    if (!is_legacy_stargz(blobs_[b]) || c.has_crc32)
      return corrupt("blob {}: ci {} is a batch chunk without a batch table", b, c.ci_index);
    c.offset_in_batch = c.crc32;
    c.crc32 = 0;
    const uint64_t end = uint64_t(c.offset_in_batch) + c.uncompressed_size;
    if (end > kMaxChunkSize)
      return corrupt("blob {}: ci {} at {:#x} in its gzip member ends beyond {:#x}", b, c.ci_index, c.offset_in_batch,
                     kMaxChunkSize);
    uint32_t& len = head[{c.compressed_offset, c.compressed_size}];
    len = std::max(len, uint32_t(end));
  }
  for (ChunkRecord& c : chunks)
    if (c.batch) c.batch_size = head[{c.compressed_offset, c.compressed_size}];
  return ok();
}

Digester Bootstrap::digester() const {
  return (ext_.flags & super_flags::kHashSha256) ? Digester::kSha256 : Digester::kBlake3;
}

Result<std::vector<ChunkRecord>> Bootstrap::chunk_table() const {
  if (!in_range(size_, ext_.chunk_table_offset, ext_.chunk_table_size) ||
      ext_.chunk_table_size % sizeof(ChunkInfoRecord) != 0)
    return corrupt("chunk table [{:#x}, +{}) invalid", ext_.chunk_table_offset, ext_.chunk_table_size);
  const uint64_t n = ext_.chunk_table_size / sizeof(ChunkInfoRecord);
  std::vector<ChunkRecord> out;
  out.reserve(n);  // bounded by the file size checked above
  constexpr uint32_t kKnownFlags = chunk_flags::kCompressed | chunk_flags::kHole |
                                   chunk_flags::kEncrypted | chunk_flags::kBatch |
                                   chunk_flags::kHasCrc32;
  for (uint64_t i = 0; i < n; ++i) {
    const auto r = load<ChunkInfoRecord>(data_ + ext_.chunk_table_offset + i * sizeof(ChunkInfoRecord));
    if (r.blob_index >= blobs_.size())
      return corrupt("chunk table entry {}: blob index {} out of range ({} blobs)", i, r.blob_index,
                     blobs_.size());
    const BlobInfo& b = blobs_[r.blob_index];
    if (r.flags & ~kKnownFlags) return corrupt("chunk table entry {}: unknown flags {:#x}", i, r.flags);
    if (r.index >= b.chunk_count)
      return corrupt("chunk table entry {}: ci index {} >= blob chunk count {}", i, r.index, b.chunk_count);
    if (r.uncompressed_size == 0 || r.uncompressed_size > b.chunk_size)
      return corrupt("chunk table entry {}: uncompressed size {} not in [1, chunk size]", i,
                     r.uncompressed_size);
    uint64_t uend;
    if (r.uncompressed_offset % block_size() != 0 ||
        add_ovf(r.uncompressed_offset, r.uncompressed_size, &uend) || uend > b.uncompressed_size)
      return corrupt("chunk table entry {}: uncompressed range [{:#x}, +{}) outside blob {} layout",
                     i, r.uncompressed_offset, r.uncompressed_size, r.blob_index);
    out.push_back(chunk_record_from(r));
  }
  return out;
}

// ---- inodes -----------------------------------------------------------------------

Result<InodeView> Bootstrap::inode(uint64_t nid) const {
  const uint64_t meta = meta_offset();
  if (meta > size_ || nid > (size_ - meta) >> kInodeSlotBits)
    return corrupt("inode {}: nid beyond image end", nid);
  InodeView v;
  v.nid = nid;
  v.offset = meta + (nid << kInodeSlotBits);
  if (!in_range(size_, v.offset, sizeof(InodeCompact)))
    return corrupt("inode {}: inode exceeds image", nid);
  const uint8_t* p = data_ + v.offset;
  const uint16_t format = load<uint16_t>(p);
  // Kernel rule: bits above the layout must be zero; bit 4 (NLINK_1) unused.
  if (format >> 4) return corrupt("inode {}: i_format {:#x} has unknown bits", nid, format);
  const uint16_t layout = (format >> kInodeLayoutShift) & kInodeLayoutMask;
  if (layout != uint16_t(DataLayout::kFlatPlain) && layout != uint16_t(DataLayout::kFlatInline) &&
      layout != uint16_t(DataLayout::kChunkBased))
    return corrupt("inode {}: unsupported data layout {}", nid, layout);
  v.layout = DataLayout(layout);
  v.extended = format & kInodeVersionExtended;
  v.inode_size = v.extended ? sizeof(InodeExtended) : sizeof(InodeCompact);
  if (v.extended) {
    if (!in_range(size_, v.offset, sizeof(InodeExtended)))
      return corrupt("inode {}: extended inode exceeds image", nid);
    const auto x = load<InodeExtended>(p);
    v.mode = x.mode;
    v.size = x.size;
    v.u = x.u;
    v.ino = x.ino;
    v.uid = x.uid;
    v.gid = x.gid;
    v.mtime = x.mtime;
    v.mtime_nsec = x.mtime_nsec;
    v.nlink = x.nlink;
  } else {
    const auto c = load<InodeCompact>(p);
    v.mode = c.mode;
    v.size = c.size;
    v.u = c.u;
    v.ino = c.ino;
    v.uid = c.uid;
    v.gid = c.gid;
    v.mtime = sb_.build_time;  // compact inodes carry no timestamp of their own
    v.mtime_nsec = sb_.build_time_nsec;
    v.nlink = c.nlink;
  }
  const uint16_t icount = load<uint16_t>(p + 2);
  v.xattr_size = icount ? 12 + (uint32_t(icount) - 1) * 4 : 0;
  if (!in_range(size_, v.offset, uint64_t(v.inode_size) + v.xattr_size))
    return corrupt("inode {}: xattr area exceeds image", nid);
  if (file_type_from_mode(v.mode) == FileType::kUnknown)
    return corrupt("inode {}: invalid file type in mode {:#o}", nid, v.mode);
  if (v.layout == DataLayout::kChunkBased && !v.is_reg())
    return corrupt("inode {}: chunk-based layout on a non-regular file (mode {:#o})", nid, v.mode);
  return v;
}

Result<std::span<const uint8_t>> Bootstrap::data_range(const InodeView& ino, uint64_t off,
                                                        uint64_t len) const {
  if (ino.layout == DataLayout::kChunkBased)
    return errorf(Errc::kInvalidArgument, "inode {}: data is in blobs, not in the bootstrap", ino.nid);
  uint64_t end;
  if (add_ovf(off, len, &end) || end > ino.size)
    return errorf(Errc::kInvalidArgument, "inode {}: range [{}, +{}) beyond size {}", ino.nid, off,
                  len, ino.size);
  if (len == 0) return std::span<const uint8_t>{};
  const uint64_t bsize = block_size();
  const uint64_t base = uint64_t(ino.u) << sb_.blkszbits;
  // Bytes stored in whole blocks at i_u; FLAT_INLINE keeps its last block
  // (even a full one, as the kernel reads it) right after the inode.
  uint64_t block_bytes = ino.size;
  if (ino.layout == DataLayout::kFlatInline) block_bytes = (ino.size - 1) / bsize * bsize;
  uint64_t abs;
  if (end <= block_bytes) {
    if (add_ovf(base, off, &abs) || !in_range(size_, abs, len))
      return corrupt("inode {}: data blocks [{:#x}, +{}) exceed image", ino.nid, base, block_bytes);
    return std::span<const uint8_t>(data_ + abs, len);
  }
  if (off < block_bytes)
    return errorf(Errc::kInvalidArgument, "inode {}: range [{}, +{}) spans data blocks and inline tail",
                  ino.nid, off, len);
  const uint64_t tail_len = ino.size - block_bytes;  // <= one block here
  const uint64_t tail_off = ino.offset + ino.inode_size + ino.xattr_size;
  if (tail_off % bsize + tail_len > bsize)
    return corrupt("inode {}: inline tail of {} bytes crosses a block boundary", ino.nid, tail_len);
  if (!in_range(size_, tail_off, tail_len))
    return corrupt("inode {}: inline tail exceeds image", ino.nid);
  return std::span<const uint8_t>(data_ + tail_off + (off - block_bytes), len);
}

// ---- directories --------------------------------------------------------------------

namespace {

// One directory block with its entry count validated.
struct DirBlock {
  std::span<const uint8_t> bytes;
  uint32_t count = 0;
};

}  // namespace

// Parse block `b` of a directory: header checks as the kernel does them.
static Result<DirBlock> dir_block(const Bootstrap& bs, const InodeView& dir, uint64_t b) {
  const uint64_t bsize = bs.block_size();
  const uint64_t off = b * bsize;
  const uint64_t len = std::min<uint64_t>(bsize, dir.size - off);
  NYDUS_ASSIGN_OR_RETURN(auto bytes, bs.data_range(dir, off, len));
  if (len < sizeof(Dirent))
    return corrupt("inode {}: directory block {} too short ({} bytes)", dir.nid, b, len);
  const uint16_t nameoff0 = load<uint16_t>(bytes.data() + 8);
  if (nameoff0 < sizeof(Dirent) || nameoff0 % sizeof(Dirent) != 0 || nameoff0 >= len)
    return corrupt("inode {}: directory block {}: bad first nameoff {}", dir.nid, b, nameoff0);
  return DirBlock{bytes, uint32_t(nameoff0 / sizeof(Dirent))};
}

// Entry i of a parsed block; its name runs to the next nameoff or the block end.
static Result<DirEntryView> dir_entry(const InodeView& dir, uint64_t b, const DirBlock& blk, uint32_t i) {
  const uint8_t* d = blk.bytes.data() + uint64_t(i) * sizeof(Dirent);
  const uint64_t len = blk.bytes.size();
  const uint16_t start = load<uint16_t>(d + 8);
  const uint64_t first = uint64_t(blk.count) * sizeof(Dirent);
  if (start < first || start >= len)
    return corrupt("inode {}: directory block {} entry {}: nameoff {} out of range", dir.nid, b, i, start);
  uint64_t end = len;
  if (i + 1 < blk.count) {
    end = load<uint16_t>(d + sizeof(Dirent) + 8);
    if (end <= start || end > len)
      return corrupt("inode {}: directory block {} entry {}: nameoff {} not increasing", dir.nid, b,
                     i + 1, end);
  }
  std::string_view name(reinterpret_cast<const char*>(blk.bytes.data()) + start, end - start);
  if (auto z = name.find('\0'); z != std::string_view::npos) name = name.substr(0, z);
  if (name.empty() || name.size() > 255)
    return corrupt("inode {}: directory block {} entry {}: name length {}", dir.nid, b, i, name.size());
  if (name.find('/') != std::string_view::npos)
    return corrupt("inode {}: directory block {} entry {}: name contains '/'", dir.nid, b, i);
  const uint8_t type = d[10];
  if (type > uint8_t(FileType::kSymlink))
    return corrupt("inode {}: directory entry '{}': bad file type {}", dir.nid, name, type);
  return DirEntryView{name, load<uint64_t>(d), FileType(type)};
}

Status Bootstrap::for_each_dirent(const InodeView& dir,
                                  const std::function<bool(const DirEntryView&)>& fn) const {
  if (!dir.is_dir()) return errorf(Errc::kInvalidArgument, "inode {}: not a directory", dir.nid);
  const uint64_t bsize = block_size();
  const uint64_t nblocks = dir.size / bsize + (dir.size % bsize != 0);
  // A bogus huge i_size fails at the first block outside the image.
  for (uint64_t b = 0; b < nblocks; ++b) {
    NYDUS_ASSIGN_OR_RETURN(DirBlock blk, dir_block(*this, dir, b));
    for (uint32_t i = 0; i < blk.count; ++i) {
      NYDUS_ASSIGN_OR_RETURN(DirEntryView e, dir_entry(dir, b, blk, i));
      if (!fn(e)) return ok();
    }
  }
  return ok();
}

Result<std::optional<DirEntryView>> Bootstrap::lookup(const InodeView& dir, std::string_view name) const {
  if (!dir.is_dir()) return errorf(Errc::kInvalidArgument, "inode {}: not a directory", dir.nid);
  if (name.empty() || name.size() > 255 || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos)
    return std::optional<DirEntryView>{};
  const uint64_t bsize = block_size();
  const uint64_t nblocks = dir.size / bsize + (dir.size % bsize != 0);
  // Names are sorted across the whole directory: find the last block whose
  // first name is <= name, then binary search inside it.
  uint64_t lo = 0, hi = nblocks;  // candidate block in [lo, hi)
  while (hi - lo > 1) {
    const uint64_t mid = lo + (hi - lo) / 2;
    NYDUS_ASSIGN_OR_RETURN(DirBlock blk, dir_block(*this, dir, mid));
    NYDUS_ASSIGN_OR_RETURN(DirEntryView first, dir_entry(dir, mid, blk, 0));
    if (first.name <= name) lo = mid; else hi = mid;
  }
  if (nblocks == 0) return std::optional<DirEntryView>{};
  NYDUS_ASSIGN_OR_RETURN(DirBlock blk, dir_block(*this, dir, lo));
  uint32_t l = 0, h = blk.count;
  while (l < h) {
    const uint32_t m = l + (h - l) / 2;
    NYDUS_ASSIGN_OR_RETURN(DirEntryView e, dir_entry(dir, lo, blk, m));
    if (e.name == name) return std::optional<DirEntryView>(e);
    if (e.name < name) l = m + 1; else h = m;
  }
  return std::optional<DirEntryView>{};
}

Result<std::string> Bootstrap::read_link(const InodeView& ino) const {
  if (!ino.is_symlink()) return errorf(Errc::kInvalidArgument, "inode {}: not a symlink", ino.nid);
  if (ino.size > kPathMax)
    return corrupt("inode {}: symlink size {} exceeds {}", ino.nid, ino.size, kPathMax);
  NYDUS_ASSIGN_OR_RETURN(auto bytes, data_range(ino, 0, ino.size));
  std::string target(bytes.begin(), bytes.end());
  if (target.find('\0') != std::string::npos)
    return corrupt("inode {}: symlink target contains a NUL byte", ino.nid);
  return target;
}

// ---- xattrs ----------------------------------------------------------------------

Result<std::vector<XattrView>> Bootstrap::xattrs(const InodeView& ino) const {
  std::vector<XattrView> out;
  if (ino.xattr_size == 0) return out;
  const uint64_t area = ino.offset + ino.inode_size;
  if (ino.xattr_size < sizeof(XattrIbodyHeader) || !in_range(size_, ino.offset, uint64_t(ino.inode_size) + ino.xattr_size))
    return corrupt("inode {}: xattr area exceeds image", ino.nid);
  const auto hdr = load<XattrIbodyHeader>(data_ + area);
  if (hdr.shared_count != 0)
    return corrupt("inode {}: {} shared xattrs, but RAFS has no shared xattr area", ino.nid,
                   hdr.shared_count);
  const uint8_t* p = data_ + area;
  uint64_t pos = sizeof(XattrIbodyHeader);
  while (pos < ino.xattr_size) {
    if (ino.xattr_size - pos < sizeof(XattrEntry))
      return corrupt("inode {}: xattr entry header at {} exceeds xattr area", ino.nid, pos);
    const auto e = load<XattrEntry>(p + pos);
    const uint64_t body = uint64_t(e.name_len) + e.value_size;
    if (ino.xattr_size - pos - sizeof(XattrEntry) < body)
      return corrupt("inode {}: xattr entry at {} exceeds xattr area", ino.nid, pos);
    const char* prefix = xattr_prefix(e.name_index);
    if (!prefix) return corrupt("inode {}: xattr entry at {}: unknown name index {}", ino.nid, pos, e.name_index);
    const bool acl = e.name_index == xattr_index::kPosixAclAccess ||
                     e.name_index == xattr_index::kPosixAclDefault;
    if (acl ? e.name_len != 0 : e.name_len == 0)
      return corrupt("inode {}: xattr entry at {}: name length {} invalid for prefix {}", ino.nid, pos,
                     e.name_len, prefix);
    const uint8_t* name = p + pos + sizeof(XattrEntry);
    XattrView x;
    x.name = std::string(prefix) + std::string(reinterpret_cast<const char*>(name), e.name_len);
    x.value = std::span<const uint8_t>(name + e.name_len, e.value_size);
    out.push_back(std::move(x));
    pos = align_up(pos + sizeof(XattrEntry) + body, 4);
  }
  return out;
}

// ---- chunks ------------------------------------------------------------------------

Result<std::vector<ChunkRef>> Bootstrap::chunks(const InodeView& ino) const {
  if (!ino.is_reg()) return errorf(Errc::kInvalidArgument, "inode {}: not a regular file", ino.nid);
  std::vector<ChunkRef> out;
  if (ino.layout != DataLayout::kChunkBased) {
    if (ino.size == 0) return out;
    return errorf(Errc::kUnsupported, "inode {}: regular file data stored in the bootstrap (layout {})",
                  ino.nid, uint16_t(ino.layout));
  }
  const uint32_t fmt = ino.u;
  if (fmt & ~uint32_t(kChunkFormatIndexes | kChunkFormatBlkbitsMask))
    return corrupt("inode {}: chunk format {:#x} has unsupported bits", ino.nid, fmt);
  if (!(fmt & kChunkFormatIndexes))
    return errorf(Errc::kUnsupported, "inode {}: chunk format {:#x} without 8-byte indexes", ino.nid, fmt);
  if (sb_.blkszbits + (fmt & kChunkFormatBlkbitsMask) > 63)
    return corrupt("inode {}: chunk format {:#x}: chunk bits too large", ino.nid, fmt);
  // nydusd indexes chunks with the RAFS chunk size, not the i_u chunk bits.
  const uint64_t cs = ext_.chunk_size;
  const uint64_t count = ino.size / cs + (ino.size % cs != 0);  // no overflow near 2^64
  const uint64_t start = align_up(ino.offset + ino.inode_size + ino.xattr_size, 8);
  if (count > size_ / sizeof(ChunkIndex) || !in_range(size_, start, count * sizeof(ChunkIndex)))
    return corrupt("inode {}: {} chunk indexes at {:#x} exceed image (size {})", ino.nid, count, start,
                   ino.size);
  out.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const auto x = load<ChunkIndex>(data_ + start + i * sizeof(ChunkIndex));
    if ((x.device_id & 0xFF) == 0)
      return corrupt("inode {}: chunk {} points at device 0 (the bootstrap)", ino.nid, i);
    const uint32_t blob = chunk_index_blob(x);
    if (blob >= blobs_.size())
      return corrupt("inode {}: chunk {}: blob index {} out of range ({} blobs)", ino.nid, i, blob,
                     blobs_.size());
    const uint32_t ci = chunk_index_ci(x);
    if (ci >= blobs_[blob].chunk_count)
      return corrupt("inode {}: chunk {}: ci index {} >= blob {} chunk count {}", ino.nid, i, ci, blob,
                     blobs_[blob].chunk_count);
    if (x.blkaddr == 0xFFFFFFFFu)
      return corrupt("inode {}: chunk {} is a hole (EROFS_NULL_ADDR), never written by nydus", ino.nid, i);
    out.push_back(ChunkRef{blob, ci, x.blkaddr});
  }
  return out;
}

// ---- paths and tree walk ---------------------------------------------------------------

Result<uint64_t> Bootstrap::resolve(std::string_view path) const {
  if (path.empty() || path.front() != '/')
    return errorf(Errc::kInvalidArgument, "path '{}' is not absolute", path);
  uint64_t nid = sb_.root_nid;
  size_t pos = 0;
  size_t steps = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view comp = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (comp.empty()) continue;
    if (++steps > kMaxWalkDepth) return errorf(Errc::kInvalidArgument, "path '{}' too deep", path);
    NYDUS_ASSIGN_OR_RETURN(InodeView dir, inode(nid));
    if (!dir.is_dir()) return errorf(Errc::kNotFound, "{}: a path component is not a directory", path);
    NYDUS_ASSIGN_OR_RETURN(auto e, lookup(dir, comp));
    if (!e) return errorf(Errc::kNotFound, "{}: '{}' not found", path, comp);
    nid = e->nid;
  }
  return nid;
}

Status Bootstrap::walk(const std::function<Status(const std::string& path, const InodeView&)>& fn) const {
  NYDUS_ASSIGN_OR_RETURN(InodeView root, inode(sb_.root_nid));
  if (!root.is_dir()) return corrupt("root inode {} is not a directory", root.nid);
  NYDUS_TRY(fn("/", root));

  // Explicit stack (no recursion) and one shared path buffer so neither the
  // call stack nor memory grows with hostile depth × name length products.
  struct Frame {
    std::vector<DirEntryView> children;
    size_t next = 0;
    size_t path_len = 0;  // length of this directory's path in `path`
  };
  std::unordered_set<uint64_t> visited_dirs{root.nid};
  uint64_t visited = 1;
  std::string path;  // "" stands for the root
  std::vector<Frame> stack;

  auto push_dir = [&](const InodeView& dir) -> Status {
    Frame f;
    f.path_len = path.size();
    auto st = for_each_dirent(dir, [&](const DirEntryView& e) {
      if (e.name != "." && e.name != "..") f.children.push_back(e);
      return true;
    });
    if (!st) return std::unexpected(std::move(st).error().context(path.empty() ? "/" : path));
    stack.push_back(std::move(f));
    return ok();
  };
  NYDUS_TRY(push_dir(root));

  while (!stack.empty()) {
    Frame& top = stack.back();
    if (top.next == top.children.size()) {
      stack.pop_back();
      continue;
    }
    const DirEntryView e = top.children[top.next++];
    path.resize(top.path_len);
    path += '/';
    path += e.name;
    if (++visited > kMaxWalkEntries) return corrupt("tree has more than {} entries", kMaxWalkEntries);
    auto child = inode(e.nid);
    if (!child) return std::unexpected(std::move(child).error().context(path));
    if (e.type != FileType::kUnknown && e.type != file_type_from_mode(child->mode))
      return corrupt("{}: directory entry type {} does not match inode {} mode {:#o}", path,
                     uint8_t(e.type), e.nid, child->mode);
    NYDUS_TRY(fn(path, *child));
    if (child->is_dir()) {
      if (!visited_dirs.insert(child->nid).second)
        return corrupt("{}: directory loop (directory nid {} reached twice)", path, child->nid);
      if (stack.size() >= kMaxWalkDepth)
        return corrupt("{}: directory tree deeper than {}", path, kMaxWalkDepth);
      NYDUS_TRY(push_dir(*child));  // invalidates `top`
    }
  }
  return ok();
}

}  // namespace nydus::format
