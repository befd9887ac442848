// Read-only view of a RAFS v6 bootstrap (the EROFS metadata image). A RAFS
// v5 file is parsed (bootstrap_v5.h) and re-written as v6 in memory first, so
// everything below sees v6. The file
// is mmap'd; every accessor bounds-checks offsets, sizes, nids and names
// against the mapping and returns kCorrupt on anything malformed. Nothing is
// copied per inode: InodeView is a small decoded struct.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"
#include "format/bootstrap_v5.h"
#include "format/layout.h"

namespace nydus::format {

struct InodeView {
  uint64_t nid = 0;
  uint64_t offset = 0;       // absolute offset of the inode in the bootstrap
  bool extended = false;
  DataLayout layout = DataLayout::kFlatPlain;
  uint32_t inode_size = 0;   // 32 or 64
  uint32_t xattr_size = 0;   // bytes of inline xattrs incl. the 12-byte header, 0 if none
  uint32_t mode = 0;         // full st_mode
  uint64_t size = 0;
  uint32_t u = 0;            // raw i_u
  uint32_t ino = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t mtime = 0;
  uint32_t mtime_nsec = 0;
  uint32_t nlink = 0;

  bool is_dir() const;
  bool is_reg() const;
  bool is_symlink() const;
  bool is_device() const;  // chr/blk
  uint32_t rdev() const { return u; }  // raw new-encoding dev_t of chr/blk/fifo/sock
};

struct DirEntryView {
  std::string_view name;   // points into the mapping
  uint64_t nid = 0;
  FileType type = FileType::kUnknown;
};

struct XattrView {
  std::string name;        // full name, prefix restored ("user.foo")
  std::span<const uint8_t> value;  // points into the mapping
};

// One 8-byte chunk index of a regular file, decoded.
struct ChunkRef {
  uint32_t blob_index = 0;
  uint32_t ci_index = 0;
  uint32_t blkaddr = 0;
};

class Bootstrap {
 public:
  // Map and validate the superblocks and tables (not the whole tree: see walk()).
  static Result<std::shared_ptr<Bootstrap>> open(const std::filesystem::path& path);
  // Same, over bytes owned by the caller for the object's lifetime.
  static Result<std::shared_ptr<Bootstrap>> from_bytes(std::vector<uint8_t> bytes);
  ~Bootstrap();

  // The RAFS v6 image: for a v5 file, the v6 image written in memory from it.
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  // 5 when the file was RAFS v5 (read through its v6 translation), else 6.
  uint32_t rafs_version() const { return v5_sb_ ? 5 : 6; }
  // The v5 superblock, blob table and file size of a v5 file; null for v6.
  const RafsV5SuperBlock* v5_super_block() const { return v5_sb_ ? &*v5_sb_ : nullptr; }
  const std::vector<RafsV5BlobSummary>& v5_blobs() const { return v5_blobs_; }
  uint64_t source_size() const { return v5_sb_ ? v5_size_ : size_; }
  const SuperBlock& super_block() const { return sb_; }
  const ExtSuperBlock& ext_super_block() const { return ext_; }
  uint64_t flags() const { return ext_.flags; }
  uint32_t chunk_size() const { return ext_.chunk_size; }
  Compressor compressor() const;
  Digester digester() const;
  uint64_t root_nid() const { return sb_.root_nid; }
  uint64_t meta_offset() const { return uint64_t(sb_.meta_blkaddr) << sb_.blkszbits; }
  // EROFS block size: 4096, or 512 in TARFS mode (chunks address a tar stream).
  uint64_t block_size() const { return uint64_t(1) << sb_.blkszbits; }
  bool tarfs() const { return ext_.flags & super_flags::kTarfsMode; }

  // Blob table entries (validated), in device order.
  const std::vector<BlobInfo>& blobs() const { return blobs_; }
  // Prefetch table nids (0-terminated list cut at the terminator).
  const std::vector<uint32_t>& prefetch_nids() const { return prefetch_; }
  // Chunk-info table records (validated sizes; 80 bytes each), decoded.
  Result<std::vector<ChunkRecord>> chunk_table() const;

  Result<InodeView> inode(uint64_t nid) const;
  // Directory entries in on-disk order (sorted), "." and ".." included.
  // `fn` returns false to stop early.
  Status for_each_dirent(const InodeView& dir,
                         const std::function<bool(const DirEntryView&)>& fn) const;
  // Binary search by name; nullopt if absent.
  Result<std::optional<DirEntryView>> lookup(const InodeView& dir, std::string_view name) const;
  Result<std::string> read_link(const InodeView& inode) const;
  Result<std::vector<XattrView>> xattrs(const InodeView& inode) const;
  Result<std::vector<ChunkRef>> chunks(const InodeView& inode) const;
  // Read the inline/plain data of a directory or symlink ([off, off+len) of its data).
  Result<std::span<const uint8_t>> data_range(const InodeView& inode, uint64_t off, uint64_t len) const;

  // Unmap the pages of a mapped bootstrap file that are resident in this
  // process (MADV_DONTNEED). They stay in the page cache, shared and
  // reclaimable as any file's, and fault back in on the next access; the
  // daemon's RSS then holds only what was touched since. A no-op for bytes
  // held in memory (a v5 image's translation, from_bytes).
  void release_resident_pages() const;

  // Resolve an absolute path ("/a/b") to a nid, without following symlinks.
  Result<uint64_t> resolve(std::string_view path) const;

  // Visit the whole tree depth first (each directory's children in dirent
  // order), giving the path ("/" for root) of every entry. Detects directory
  // loops (a directory reached twice) and bounds depth; hardlinked files may
  // appear under several paths.
  Status walk(const std::function<Status(const std::string& path, const InodeView&)>& fn) const;

 private:
  Bootstrap() = default;
  Status validate();
  // Replace the v5 bytes by the v6 image written from them, then validate that.
  Status adopt_v5();
  Status adopt_stargz_chunks();
  Status resolve_gzip_member_slices(size_t blob, std::vector<ChunkRecord>& chunks) const;

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> owned_;
  SuperBlock sb_{};
  ExtSuperBlock ext_{};
  std::vector<BlobInfo> blobs_;
  std::vector<uint32_t> prefetch_;
  std::optional<RafsV5SuperBlock> v5_sb_;
  std::vector<RafsV5BlobSummary> v5_blobs_;
  uint64_t v5_size_ = 0;
};

}  // namespace nydus::format
