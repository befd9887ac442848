// RAFS v6 on-disk structures (EROFS-compatible), exactly as upstream Nydus
// writes them. The byte-level spec with sources is rafs-v6-format.md beside
// this file. All integers are little-endian; the structs are
// only ever read through memcpy (see load<T>) so alignment never matters.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

static_assert(std::endian::native == std::endian::little,
              "RAFS is little-endian; this code reads it in place");

namespace nydus::format {

// ---- constants -------------------------------------------------------------

inline constexpr uint32_t kBlockSize = 4096;
inline constexpr uint32_t kBlockBits = 12;
inline constexpr uint32_t kTarfsBlockBits = 9;  // TARFS mode: 512-byte blocks, as a tar stream
inline constexpr uint64_t kSuperBlockOffset = 1024;
inline constexpr uint64_t kExtSuperBlockOffset = 1152;
inline constexpr uint64_t kDeviceTableOffset = 1408;  // 11 * 128
inline constexpr uint16_t kDevtSlotOff = 11;
inline constexpr uint32_t kInodeSlotBits = 5;  // nid * 32
inline constexpr uint64_t kRootNid = 128;

inline constexpr uint32_t kErofsMagic = 0xE0F5E1E2;
inline constexpr uint32_t kFeatureCompatRafsV6 = 0x40000000;
inline constexpr uint32_t kFeatureIncompatChunkedFile = 0x4;
inline constexpr uint32_t kFeatureIncompatDeviceTable = 0x8;
inline constexpr uint32_t kRafsV6Incompat = kFeatureIncompatChunkedFile | kFeatureIncompatDeviceTable;

inline constexpr uint32_t kRafsV5Magic = 0x52414653;  // "SFAR" on disk

inline constexpr uint32_t kMinChunkSize = 0x1000;
inline constexpr uint32_t kMaxChunkSize = 0x1000000;
inline constexpr uint32_t kDefaultChunkSize = 0x100000;
inline constexpr uint32_t kMaxBlobs = 254;
inline constexpr uint32_t kMaxChunksPerBlob = 1u << 24;

// RafsSuperFlags (ext superblock s_flags).
namespace super_flags {
inline constexpr uint64_t kCompressionNone = 0x1;
inline constexpr uint64_t kCompressionLz4 = 0x2;
inline constexpr uint64_t kHashBlake3 = 0x4;
inline constexpr uint64_t kHashSha256 = 0x8;
inline constexpr uint64_t kExplicitUidGid = 0x10;
inline constexpr uint64_t kHasXattr = 0x20;
inline constexpr uint64_t kCompressionGzip = 0x40;
inline constexpr uint64_t kCompressionZstd = 0x80;
inline constexpr uint64_t kInlinedChunkDigest = 0x100;
inline constexpr uint64_t kTarfsMode = 0x200;
inline constexpr uint64_t kEncryptionNone = 0x0100'0000;
inline constexpr uint64_t kEncryptionAes128Xts = 0x0200'0000;
inline constexpr uint64_t kCompressionMask = kCompressionNone | kCompressionLz4 | kCompressionGzip | kCompressionZstd;
inline constexpr uint64_t kHashMask = kHashBlake3 | kHashSha256;
inline constexpr uint64_t kKnownMask = 0x3FF | kEncryptionNone | kEncryptionAes128Xts;
}  // namespace super_flags

// BlobFeatures (blob table `features` and blob meta header `s_features`).
namespace blob_features {
inline constexpr uint32_t kAligned = 0x1;
inline constexpr uint32_t kInlinedFsMeta = 0x2;
inline constexpr uint32_t kChunkInfoV2 = 0x4;
inline constexpr uint32_t kZran = 0x8;
inline constexpr uint32_t kSeparate = 0x10;
inline constexpr uint32_t kInlinedChunkDigest = 0x20;
inline constexpr uint32_t kTarfs = 0x40;
inline constexpr uint32_t kBatch = 0x80;
inline constexpr uint32_t kEncrypted = 0x100;
inline constexpr uint32_t kIsChunkdictGenerated = 0x200;
inline constexpr uint32_t kIsSeparatedWithPrefetchFiles = 0x400;
inline constexpr uint32_t kExternal = 0x800;
inline constexpr uint32_t kHasTarHeader = 0x1000'0000;
inline constexpr uint32_t kHasToc = 0x2000'0000;
inline constexpr uint32_t kCapTarToc = 0x4000'0000;
inline constexpr uint32_t kV5NoExtBlobTable = 0x8000'0000;  // never on disk
// Low 16 bits outside 0x0FFF are unknown incompatible features.
inline constexpr uint32_t kIncompatUnknownMask = 0x0000'F000;
}  // namespace blob_features

// Compressor ids (blob table compression_algo / ci_compressor / header).
enum class Compressor : uint32_t { kNone = 0, kLz4Block = 1, kGzip = 2, kZstd = 3 };
// Digest ids (blob table digest_algo).
enum class Digester : uint32_t { kBlake3 = 0, kSha256 = 1 };

// ToC entry flags (compressor of that entry).
namespace toc_flags {
inline constexpr uint32_t kNone = 0x1;
inline constexpr uint32_t kZstd = 0x2;
inline constexpr uint32_t kLz4Block = 0x4;
inline constexpr uint32_t kMask = 0xF;
}  // namespace toc_flags

// Bootstrap chunk-info (RafsV5ChunkInfo) flags.
namespace chunk_flags {
inline constexpr uint32_t kCompressed = 0x1;
inline constexpr uint32_t kHole = 0x2;
inline constexpr uint32_t kEncrypted = 0x4;
inline constexpr uint32_t kBatch = 0x8;
inline constexpr uint32_t kHasCrc32 = 0x10;
}  // namespace chunk_flags

// EROFS inode i_format: bit 0 version, bits 1..3 data layout.
inline constexpr uint16_t kInodeVersionExtended = 0x1;
enum class DataLayout : uint16_t { kFlatPlain = 0, kFlatInline = 2, kChunkBased = 4 };
inline constexpr uint16_t kInodeLayoutShift = 1;
inline constexpr uint16_t kInodeLayoutMask = 0x7;

// i_u of a CHUNK_BASED inode.
inline constexpr uint16_t kChunkFormatIndexes = 0x0020;
inline constexpr uint16_t kChunkFormatBlkbitsMask = 0x001F;
inline constexpr uint16_t kChunkFormat48Bit = 0x0040;  // never written

// EROFS dirent file types.
enum class FileType : uint8_t {
  kUnknown = 0, kRegular = 1, kDirectory = 2, kCharDev = 3,
  kBlockDev = 4, kFifo = 5, kSocket = 6, kSymlink = 7,
};

// Xattr name prefix indexes.
namespace xattr_index {
inline constexpr uint8_t kUser = 1;
inline constexpr uint8_t kPosixAclAccess = 2;
inline constexpr uint8_t kPosixAclDefault = 3;
inline constexpr uint8_t kTrusted = 4;
inline constexpr uint8_t kLustre = 5;
inline constexpr uint8_t kSecurity = 6;
}  // namespace xattr_index

inline constexpr uint32_t kBlobMetaMagic = 0xB10BB10B;
inline constexpr uint32_t kBlobMetaHeaderSize = 4096;
inline constexpr uint32_t kTarHeaderSize = 512;
inline constexpr uint32_t kTocEntrySize = 128;

// Reverse-tar section names inside a data blob.
inline constexpr const char* kTarNameBlob = "image.blob";
inline constexpr const char* kTarNameBlobMeta = "blob.meta";
inline constexpr const char* kTarNameBlobMetaHeader = "blob.meta.header";
inline constexpr const char* kTarNameBlobDigest = "blob.digest";
inline constexpr const char* kTarNameBootstrap = "image.boot";
inline constexpr const char* kTarNameToc = "rafs.blob.toc";

// Placeholder blob id in a bootstrap inlined in its own blob (real id unknown
// when the bootstrap is serialised).
inline constexpr char kInlinedBlobIdPlaceholder = 'x';

// ---- structures ------------------------------------------------------------

#pragma pack(push, 1)

// EROFS superblock at abs 1024 (128 bytes).
struct SuperBlock {
  uint32_t magic;
  uint32_t checksum;
  uint32_t feature_compat;
  uint8_t blkszbits;
  uint8_t extslots;
  uint16_t root_nid;
  uint64_t inos;
  uint64_t build_time;
  uint32_t build_time_nsec;
  uint32_t blocks;
  uint32_t meta_blkaddr;
  uint32_t xattr_blkaddr;
  uint8_t uuid[16];
  uint8_t volume_name[16];
  uint32_t feature_incompat;
  uint16_t u1;  // available_compr_algs / lz4_max_distance
  uint16_t extra_devices;
  uint16_t devt_slotoff;
  uint8_t reserved[38];
};
static_assert(sizeof(SuperBlock) == 128);

// RAFS v6 extended superblock at abs 1152 (256 bytes).
struct ExtSuperBlock {
  uint64_t flags;
  uint64_t blob_table_offset;
  uint32_t blob_table_size;
  uint32_t chunk_size;
  uint64_t chunk_table_offset;
  uint64_t chunk_table_size;
  uint64_t prefetch_table_offset;
  uint32_t prefetch_table_size;
  uint32_t padding;
  uint8_t reserved[200];
};
static_assert(sizeof(ExtSuperBlock) == 256);

// EROFS device slot (128 bytes) at abs 1408 + 128*i.
struct DeviceSlot {
  uint8_t blob_id[64];
  uint32_t blocks;
  uint32_t mapped_blkaddr;
  uint8_t reserved[56];
};
static_assert(sizeof(DeviceSlot) == 128);

// Blob table entry (256 bytes).
struct BlobTableEntry {
  uint8_t blob_id[64];
  uint32_t blob_index;
  uint32_t chunk_size;
  uint32_t chunk_count;
  uint32_t compression_algo;
  uint32_t digest_algo;
  uint32_t features;
  uint64_t compressed_size;
  uint64_t uncompressed_size;
  uint32_t blob_toc_size;
  uint32_t ci_compressor;
  uint64_t ci_offset;
  uint64_t ci_compressed_size;
  uint64_t ci_uncompressed_size;
  uint8_t blob_toc_digest[32];
  uint8_t blob_meta_digest[32];
  uint64_t blob_meta_size;
  uint64_t cipher_iv;
  uint32_t cipher_algo;
  uint8_t reserved[36];
};
static_assert(sizeof(BlobTableEntry) == 256);

struct InodeCompact {
  uint16_t format;
  uint16_t xattr_icount;
  uint16_t mode;
  uint16_t nlink;
  uint32_t size;
  uint32_t reserved;
  uint32_t u;
  uint32_t ino;
  uint16_t uid;
  uint16_t gid;
  uint32_t reserved2;
};
static_assert(sizeof(InodeCompact) == 32);

struct InodeExtended {
  uint16_t format;
  uint16_t xattr_icount;
  uint16_t mode;
  uint16_t reserved;
  uint64_t size;
  uint32_t u;
  uint32_t ino;
  uint32_t uid;
  uint32_t gid;
  uint64_t mtime;
  uint32_t mtime_nsec;
  uint32_t nlink;
  uint8_t reserved2[16];
};
static_assert(sizeof(InodeExtended) == 64);

struct Dirent {
  uint64_t nid;
  uint16_t nameoff;
  uint8_t file_type;
  uint8_t reserved;
};
static_assert(sizeof(Dirent) == 12);

struct XattrIbodyHeader {
  uint32_t name_filter;
  uint8_t shared_count;
  uint8_t reserved[7];
};
static_assert(sizeof(XattrIbodyHeader) == 12);

struct XattrEntry {
  uint8_t name_len;
  uint8_t name_index;
  uint16_t value_size;
  // followed by name suffix, value, pad to 4
};
static_assert(sizeof(XattrEntry) == 4);

// 8-byte chunk index of a CHUNK_BASED inode (nydus meaning of the fields).
struct ChunkIndex {
  uint16_t ci_index_lo;  // bits 0..15 of the ci index
  uint16_t device_id;    // bits 0..7 blob index + 1; bits 8..15 ci index bits 16..23
  uint32_t blkaddr;      // uncompressed offset / block size
};
static_assert(sizeof(ChunkIndex) == 8);

// Bootstrap chunk-info table record (RafsV5ChunkInfo, 80 bytes).
struct ChunkInfoRecord {
  uint8_t block_id[32];
  uint32_t blob_index;
  uint32_t flags;
  uint32_t compressed_size;
  uint32_t uncompressed_size;
  uint64_t compressed_offset;
  uint64_t uncompressed_offset;
  uint64_t file_offset;
  uint32_t index;
  uint32_t crc32;
};
static_assert(sizeof(ChunkInfoRecord) == 80);

// Blob compression context header (4096 bytes) following the ci array.
struct BlobMetaHeader {
  uint32_t magic;
  uint32_t features;
  uint32_t ci_compressor;
  uint32_t ci_entries;
  uint64_t ci_offset;
  uint64_t ci_compressed_size;
  uint64_t ci_uncompressed_size;
  uint64_t ci_zran_offset;
  uint64_t ci_zran_size;
  uint32_t ci_zran_count;
  uint8_t reserved[4032];
  uint32_t magic2;
};
static_assert(sizeof(BlobMetaHeader) == 4096);

// Batch inflate context (40 bytes), after the V2 entries of a BATCH blob's
// ci buffer (upstream storage/src/meta/batch.rs).
struct BatchContextOnDisk {
  uint32_t compressed_size;          // stored size of the batch (after compression/encryption)
  uint32_t uncompressed_batch_size;  // the batch's decoded size
  uint64_t reserved[4];
};
static_assert(sizeof(BatchContextOnDisk) == 40);
inline constexpr uint32_t kBatchContextSize = sizeof(BatchContextOnDisk);

// ci entry V1 (16 bytes).
struct ChunkInfoV1 {
  uint64_t uncomp_info;
  uint64_t comp_info;
};
static_assert(sizeof(ChunkInfoV1) == 16);

// ci entry V2 (24 bytes).
struct ChunkInfoV2 {
  uint64_t uncomp_info;
  uint64_t comp_info;
  uint64_t data;
};
static_assert(sizeof(ChunkInfoV2) == 24);

struct TocEntry {
  uint32_t flags;
  uint32_t reserved;
  uint8_t name[16];
  uint8_t digest[32];
  uint64_t compressed_offset;
  uint64_t compressed_size;
  uint64_t uncompressed_size;
  uint8_t reserved2[48];
};
static_assert(sizeof(TocEntry) == 128);

#pragma pack(pop)

// ---- ci entry V1/V2 bit packing ---------------------------------------------

struct DecodedChunkInfo {
  uint64_t compressed_offset = 0;
  uint32_t compressed_size = 0;
  uint64_t uncompressed_offset = 0;
  uint32_t uncompressed_size = 0;
  bool compressed = false;
  uint8_t v2_flags = 0;  // V2 only
  uint64_t v2_data = 0;  // V2 only
  // Resolved by parse_blob_meta for V2 batch / encrypted entries.
  bool encrypted = false;
  bool batch = false;
  uint32_t batch_size = 0;       // the batch's uncompressed size
  uint32_t offset_in_batch = 0;
};

// V1: sizes are stored minus one, split in 20 low + 4 high bits.
inline ChunkInfoV1 encode_ci_v1(const DecodedChunkInfo& c) {
  const uint64_t u = uint64_t(c.uncompressed_size) - 1;
  const uint64_t cs = uint64_t(c.compressed_size) - 1;
  ChunkInfoV1 e;
  e.uncomp_info = ((u >> 20) & 0xF) << 8 | (c.uncompressed_offset & 0x0000'0FFF'FFFF'F000ull) |
                  (u & 0xFFFFF) << 44;
  e.comp_info = (c.compressed_offset & 0xFF'FFFF'FFFFull) | ((cs >> 20) & 0xF) << 40 | (cs & 0xFFFFF) << 44;
  return e;
}

inline DecodedChunkInfo decode_ci_v1(const ChunkInfoV1& e) {
  DecodedChunkInfo c;
  c.uncompressed_offset = e.uncomp_info & 0x0000'0FFF'FFFF'F000ull;
  c.uncompressed_size = uint32_t(((e.uncomp_info >> 8) & 0xF) << 20 | (e.uncomp_info >> 44)) + 1;
  c.compressed_offset = e.comp_info & 0xFF'FFFF'FFFFull;
  c.compressed_size = uint32_t(((e.comp_info >> 40) & 0xF) << 20 | (e.comp_info >> 44)) + 1;
  c.compressed = c.compressed_size != c.uncompressed_size;
  return c;
}

namespace ci_v2_flags {
inline constexpr uint8_t kCompressed = 0x01;
inline constexpr uint8_t kZran = 0x02;
inline constexpr uint8_t kBatch = 0x04;
inline constexpr uint8_t kEncrypted = 0x08;
inline constexpr uint8_t kHasCrc32 = 0x10;
inline constexpr uint8_t kKnownMask = 0x1F;
}  // namespace ci_v2_flags

inline DecodedChunkInfo decode_ci_v2(const ChunkInfoV2& e) {
  DecodedChunkInfo c;
  c.uncompressed_offset = (e.uncomp_info & 0xFFFF'FFFFull) << 12;
  c.uncompressed_size = uint32_t((e.uncomp_info >> 32) & 0xFF'FFFF) + 1;
  c.v2_flags = uint8_t(e.uncomp_info >> 56);
  c.compressed_offset = e.comp_info & 0xFF'FFFF'FFFFull;
  c.compressed_size = uint32_t(e.comp_info >> 40);
  c.compressed = (c.v2_flags & ci_v2_flags::kCompressed) != 0;
  c.v2_data = e.data;
  return c;
}

// ---- chunk index helpers -----------------------------------------------------

inline ChunkIndex make_chunk_index(uint32_t blob_index, uint32_t ci_index, uint32_t blkaddr) {
  ChunkIndex x;
  x.ci_index_lo = uint16_t(ci_index & 0xFFFF);
  x.device_id = uint16_t(((blob_index + 1) & 0xFF) | ((ci_index >> 16) & 0xFF) << 8);
  x.blkaddr = blkaddr;
  return x;
}
inline uint32_t chunk_index_blob(const ChunkIndex& x) { return uint32_t(x.device_id & 0xFF) - 1; }
inline uint32_t chunk_index_ci(const ChunkIndex& x) {
  return uint32_t(x.ci_index_lo) | uint32_t(x.device_id >> 8) << 16;
}

// ---- misc helpers ------------------------------------------------------------

// Read a POD from possibly unaligned bytes. Caller bounds-checks.
template <class T>
inline T load(const uint8_t* p) {
  static_assert(std::is_trivially_copyable_v<T>);
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

constexpr uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
constexpr uint64_t align_down(uint64_t x, uint64_t a) { return x / a * a; }

// st_mode -> EROFS dirent type.
FileType file_type_from_mode(uint32_t mode);

// Linux "new" 32-bit dev_t encoding used in i_u of device inodes.
constexpr uint32_t encode_rdev(uint32_t major, uint32_t minor) {
  return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}
constexpr uint32_t rdev_major(uint32_t rdev) { return (rdev & 0xfff00) >> 8; }
constexpr uint32_t rdev_minor(uint32_t rdev) { return (rdev & 0xff) | ((rdev >> 12) & 0xfff00); }

}  // namespace nydus::format
