#include "format/blob_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "format/blob_cipher.h"
#include "format/blob_meta_internal.h"
#include "format/chunk_decode.h"
#include "format/compress.h"
#include "format/tar_header.h"
#include "common/io.h"

namespace nydus::format {

namespace {

// Upper bounds on what an untrusted blob can make us allocate.
constexpr uint64_t kMaxTocSize = 1 << 20;                // a ToC has ≤ 5 entries in practice
constexpr uint64_t kMaxInlinedBootstrap = 1ull << 30;    // 1 GiB
// 2^24 V2 entries plus a 40-byte batch context for each.
constexpr uint64_t kMaxCiBuffer = uint64_t(kMaxChunksPerBlob) * (24 + 40);

// a + b <= limit without overflow.
bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

}  // namespace

// ---- ToC ---------------------------------------------------------------------

Result<std::vector<TocEntryInfo>> parse_toc(std::span<const uint8_t> tail) {
  if (tail.size() < kTarHeaderSize)
    return corrupt("blob tail of {} bytes cannot hold a ToC tar header", tail.size());
  auto hdr_bytes = tail.last(kTarHeaderSize);
  NYDUS_ASSIGN_OR_RETURN(ParsedTarHeader hdr, parse_tar_header(hdr_bytes));
  // parse_tar_header also accepts the old NUL typeflag; the ToC never uses it.
  if (hdr.name != kTarNameToc || hdr_bytes[156] != '0')
    return corrupt("last tar header is '{}', not a ToC", hdr.name);
  if (hdr.size % kTocEntrySize != 0) return corrupt("ToC size {} is not a multiple of 128", hdr.size);
  if (hdr.size > tail.size() - kTarHeaderSize)
    return corrupt("ToC size {} exceeds the {} bytes before its header", hdr.size,
                   tail.size() - kTarHeaderSize);

  const uint8_t* base = tail.data() + (tail.size() - kTarHeaderSize - hdr.size);
  const size_t n = size_t(hdr.size / kTocEntrySize);
  std::vector<TocEntryInfo> out;
  out.reserve(n);
  for (size_t i = 0; i < n; i++) {
    const auto e = load<TocEntry>(base + i * kTocEntrySize);
    const size_t len = strnlen(reinterpret_cast<const char*>(e.name), sizeof(e.name));
    if (len == 0) return corrupt("ToC entry {} has an empty name", i);
    for (size_t j = len; j < sizeof(e.name); j++)
      if (e.name[j] != 0) return corrupt("ToC entry {} name is not NUL padded", i);
    if (!blob_internal::compressor_for_toc_flags(e.flags))
      return corrupt("ToC entry {} has unknown flags {:#x}", i, e.flags);
    // Reserved bytes are deliberately ignored: old builders left junk there.
    TocEntryInfo t;
    t.name.assign(reinterpret_cast<const char*>(e.name), len);
    t.flags = e.flags;
    std::memcpy(t.digest.data(), e.digest, 32);
    t.compressed_offset = e.compressed_offset;
    t.compressed_size = e.compressed_size;
    t.uncompressed_size = e.uncompressed_size;
    out.push_back(std::move(t));
  }
  return out;
}

// ---- blob meta ---------------------------------------------------------------

// The ci buffer (decrypted, decompressed) and the decrypted header of a
// blob meta as it sits in the blob: [ci_compressed_size bytes][4096 header].
Result<DecodedMetaBytes> decode_meta_bytes(std::span<const uint8_t> meta_bytes, const BlobInfo& blob) {
  if (meta_bytes.size() != blob.ci_compressed_size + kBlobMetaHeaderSize)
    return corrupt("blob meta is {} bytes, expected {}", meta_bytes.size(),
                   blob.ci_compressed_size + kBlobMetaHeaderSize);
  if (blob.ci_uncompressed_size > kMaxCiBuffer)
    return corrupt("ci buffer of {} bytes is too large", blob.ci_uncompressed_size);
  NYDUS_ASSIGN_OR_RETURN(std::optional<XtsKey> key, blob_xts_key(blob));
  auto stored_ci = meta_bytes.first(blob.ci_compressed_size);
  auto stored_hdr = meta_bytes.subspan(blob.ci_compressed_size);
  DecodedMetaBytes out;
  std::vector<uint8_t> plain_ci;
  if (key) {
    // Both parts are encrypted separately with the blob's key (upstream's
    // read_metadata); a wrong key shows up as a bad header magic below.
    NYDUS_ASSIGN_OR_RETURN(auto hdr, xts_decrypt(*key, stored_hdr));
    if (hdr.size() != kBlobMetaHeaderSize) return corrupt("encrypted blob meta header decrypts to {} bytes", hdr.size());
    out.header = load<BlobMetaHeader>(hdr.data());
    if (!stored_ci.empty()) {
      NYDUS_ASSIGN_OR_RETURN(plain_ci, xts_decrypt(*key, stored_ci));
    }
    stored_ci = plain_ci;
  } else {
    out.header = load<BlobMetaHeader>(stored_hdr.data());
  }
  if (out.header.magic != kBlobMetaMagic || out.header.magic2 != kBlobMetaMagic)
    return corrupt("blob meta header magic {:#x}/{:#x}, expected {:#x}{}", out.header.magic, out.header.magic2,
                   kBlobMetaMagic, key ? " (wrong encryption key?)" : "");
  const Compressor cc = blob.ci_compressor;
  if (cc == Compressor::kNone && stored_ci.size() != blob.ci_uncompressed_size)
    return corrupt("uncompressed ci array has stored size {} != {}", stored_ci.size(), blob.ci_uncompressed_size);
  if (cc != Compressor::kNone && cc != Compressor::kLz4Block && cc != Compressor::kZstd)
    return errorf(Errc::kUnsupported, "ci compressor {} not supported", uint32_t(cc));
  out.ci.resize(blob.ci_uncompressed_size);
  NYDUS_TRY(decompress(cc, stored_ci, out.ci));
  return out;
}

Result<BlobMeta> parse_blob_meta(std::span<const uint8_t> meta_bytes, const BlobInfo& blob) {
  constexpr uint32_t kUnsupportedLayouts = blob_features::kZran;
  if (blob.chunk_count > kMaxChunksPerBlob)
    return corrupt("blob has {} chunks, more than {}", blob.chunk_count, kMaxChunksPerBlob);
  if (blob.features & kUnsupportedLayouts)
    return errorf(Errc::kUnsupported, "blob features {:#x} (ZRAN) are not supported here", blob.features);
  if (blob.chunk_count == 0 && blob.ci_compressed_size == 0 && blob.ci_uncompressed_size == 0 &&
      meta_bytes.empty())
    return BlobMeta{blob.features, {}};  // no chunks: upstream writes no blob meta

  const bool v2 = blob.features & blob_features::kChunkInfoV2;
  const bool batched = blob.features & blob_features::kBatch;
  const bool encrypted = blob.cipher_algo != 0;
  if ((batched || (blob.features & blob_features::kEncrypted)) && !v2)
    return corrupt("BATCH/ENCRYPTED blob without CHUNK_INFO_V2");
  const uint64_t entry_size = v2 ? sizeof(ChunkInfoV2) : sizeof(ChunkInfoV1);
  const uint64_t entries_len = entry_size * blob.chunk_count;
  // All size checks happen before any allocation; chunk_count ≤ 2^24 bounds
  // the ci buffer to 384 MiB (+ one 40-byte batch context per chunk at most),
  // and a present data area (ci_offset > 0) holds at least one byte per chunk,
  // bounding it further by the file.
  if (batched ? (blob.ci_uncompressed_size < entries_len ||
                 blob.ci_uncompressed_size - entries_len > uint64_t(kBatchContextSize) * blob.chunk_count ||
                 (blob.ci_uncompressed_size - entries_len) % kBatchContextSize != 0)
              : blob.ci_uncompressed_size != entries_len)
    return corrupt("ci buffer is {} bytes, expected {}{} for {} {} entries", blob.ci_uncompressed_size, entries_len,
                   batched ? " + 40 per batch" : "", blob.chunk_count, v2 ? "V2" : "V1");
  // An encrypted ci buffer shorter than 16 bytes is stored padded to 18.
  if (blob.ci_compressed_size > blob.ci_uncompressed_size && !(encrypted && blob.ci_compressed_size == 18))
    return corrupt("compressed ci ({}) larger than uncompressed ({})", blob.ci_compressed_size,
                   blob.ci_uncompressed_size);
  if (blob.ci_offset > 0 && blob.chunk_count > blob.ci_offset)
    return corrupt("{} chunks cannot fit in {} bytes of chunk data", blob.chunk_count, blob.ci_offset);
  if (!fits(blob.ci_offset, blob.ci_compressed_size, uint64_t(1) << 62))
    return corrupt("ci offset {} + size {} overflows", blob.ci_offset, blob.ci_compressed_size);

  NYDUS_ASSIGN_OR_RETURN(DecodedMetaBytes plain, decode_meta_bytes(meta_bytes, blob));
  const BlobMetaHeader& h = plain.header;
  if (h.ci_entries != blob.chunk_count)
    return corrupt("blob meta has {} entries, blob table says {}", h.ci_entries, blob.chunk_count);
  if (h.ci_compressor != uint32_t(blob.ci_compressor) || h.ci_offset != blob.ci_offset ||
      h.ci_compressed_size != blob.ci_compressed_size ||
      h.ci_uncompressed_size != blob.ci_uncompressed_size)
    return corrupt("blob meta header (compressor {}, offset {:#x}, sizes {}/{}) disagrees with the blob "
                   "table ({}, {:#x}, {}/{})",
                   h.ci_compressor, h.ci_offset, h.ci_compressed_size, h.ci_uncompressed_size,
                   uint32_t(blob.ci_compressor), blob.ci_offset, blob.ci_compressed_size,
                   blob.ci_uncompressed_size);
  // Table and header may differ in informational bits (a merge clears
  // INLINED_FS_META in the table) but not in how the ci array is laid out.
  constexpr uint32_t kLayoutBits = blob_features::kChunkInfoV2 | blob_features::kZran | blob_features::kBatch |
                                   blob_features::kEncrypted;
  if ((h.features & kLayoutBits) != (blob.features & kLayoutBits))
    return corrupt("blob meta features {:#x} disagree with blob table {:#x}", h.features, blob.features);

  // The batch contexts follow the ci entries (upstream's BatchContextGenerator;
  // the header's ZRAN fields locate them).
  std::vector<BatchContextOnDisk> batches;
  if (batched) {
    const uint64_t n = (blob.ci_uncompressed_size - entries_len) / kBatchContextSize;
    if (h.ci_zran_offset != entries_len || h.ci_zran_count != n || h.ci_zran_size != n * kBatchContextSize)
      return corrupt("batch table at {:#x} ({} contexts, {} bytes) does not follow the {} ci entries", h.ci_zran_offset,
                     h.ci_zran_count, h.ci_zran_size, blob.chunk_count);
    batches.resize(n);
    for (uint64_t k = 0; k < n; k++) {
      batches[k] = load<BatchContextOnDisk>(plain.ci.data() + entries_len + k * kBatchContextSize);
      const auto& b = batches[k];
      if (b.compressed_size == 0 || b.compressed_size > kMaxChunkSize || b.uncompressed_batch_size == 0 ||
          b.uncompressed_batch_size > kMaxChunkSize)
        return corrupt("batch {}: sizes {}/{} outside 1..16M", k, b.compressed_size, b.uncompressed_batch_size);
    }
  }

  BlobMeta out;
  out.features = h.features;
  out.chunks.reserve(blob.chunk_count);
  for (uint32_t i = 0; i < blob.chunk_count; i++) {
    DecodedChunkInfo c;
    if (v2) {
      c = decode_ci_v2(load<ChunkInfoV2>(plain.ci.data() + i * entry_size));
      if (c.v2_flags & ~ci_v2_flags::kKnownMask)
        return corrupt("ci entry {} has unknown flags {:#x}", i, c.v2_flags);
      if (c.v2_flags & ci_v2_flags::kZran) return errorf(Errc::kUnsupported, "ci entry {} is ZRAN", i);
      c.encrypted = c.v2_flags & ci_v2_flags::kEncrypted;
      if (c.v2_flags & ci_v2_flags::kBatch) {
        if (!batched) return corrupt("ci entry {} is a batch chunk in a blob without BATCH", i);
        const uint64_t bi = c.v2_data >> 32;
        if (bi >= batches.size()) return corrupt("ci entry {}: batch index {} of {}", i, bi, batches.size());
        c.batch = true;
        c.compressed_size = batches[bi].compressed_size;  // the whole batch is read
        c.batch_size = batches[bi].uncompressed_batch_size;
        c.offset_in_batch = uint32_t(c.v2_data);
        if (!fits(c.offset_in_batch, c.uncompressed_size, c.batch_size))
          return corrupt("ci entry {}: {:#x}+{} beyond its batch of {} bytes", i, c.offset_in_batch,
                         c.uncompressed_size, c.batch_size);
      }
    } else {
      c = decode_ci_v1(load<ChunkInfoV1>(plain.ci.data() + i * entry_size));
    }
    if (c.uncompressed_size == 0 || c.uncompressed_size > kMaxChunkSize)
      return corrupt("ci entry {}: uncompressed size {} outside 1..16M", i, c.uncompressed_size);
    if (c.compressed_size == 0 || c.compressed_size > kMaxChunkSize)
      return corrupt("ci entry {}: compressed size {} outside 1..16M", i, c.compressed_size);
    // Encryption changes the stored size of a raw chunk (short ones are padded).
    if (!c.compressed && !c.encrypted && c.compressed_size != c.uncompressed_size)
      return corrupt("ci entry {}: raw chunk with sizes {}/{}", i, c.compressed_size, c.uncompressed_size);
    if (c.compressed && !c.batch && blob.compressor == Compressor::kNone)
      return corrupt("ci entry {} is compressed in an uncompressed blob", i);
    if (c.uncompressed_offset % kBlockSize != 0)
      return corrupt("ci entry {}: uncompressed offset {:#x} not 4K aligned", i, c.uncompressed_offset);
    if (!fits(c.uncompressed_offset, c.uncompressed_size, blob.uncompressed_size))
      return corrupt("ci entry {}: uncompressed range {:#x}+{} beyond blob size {:#x}", i,
                     c.uncompressed_offset, c.uncompressed_size, blob.uncompressed_size);
    if (blob.ci_offset > 0 && !fits(c.compressed_offset, c.compressed_size, blob.ci_offset))
      return corrupt("ci entry {}: compressed range {:#x}+{} beyond chunk data end {:#x}", i,
                     c.compressed_offset, c.compressed_size, blob.ci_offset);
    out.chunks.push_back(c);
  }
  return out;
}

std::vector<uint8_t> encode_blob_meta_cache(std::span<const uint8_t> ci_buffer, const BlobInfo& blob) {
  std::vector<uint8_t> out(align_up(ci_buffer.size(), kBlockSize) + kBlobMetaHeaderSize, 0);
  if (!ci_buffer.empty()) std::memcpy(out.data(), ci_buffer.data(), ci_buffer.size());
  const BlobMetaHeader h = blob_internal::make_blob_meta_header(blob);
  std::memcpy(out.data() + out.size() - kBlobMetaHeaderSize, &h, sizeof(h));
  return out;
}

// ---- BlobFile ----------------------------------------------------------------

Result<BlobFile> BlobFile::open(const std::filesystem::path& path, const BlobInfo& blob) {
  BlobFile f;
  f.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd_ < 0) return sys_error(fmt::format("opening blob {}", path.string()));
  struct stat st;
  if (::fstat(f.fd_, &st) != 0) return sys_error(fmt::format("stat blob {}", path.string()));
  if (!S_ISREG(st.st_mode))
    return errorf(Errc::kInvalidArgument, "blob {} is not a regular file", path.string());
  f.file_size_ = uint64_t(st.st_size);
  f.info_ = blob;
  return f;
}

BlobFile::BlobFile(BlobFile&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), file_size_(o.file_size_), info_(std::move(o.info_)) {}

BlobFile& BlobFile::operator=(BlobFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    file_size_ = o.file_size_;
    info_ = std::move(o.info_);
  }
  return *this;
}

BlobFile::~BlobFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status BlobFile::pread_exact(uint64_t off, std::span<uint8_t> out) const {
  if (!fits(off, out.size(), file_size_))
    return corrupt("read {:#x}+{} beyond blob end {:#x}", off, out.size(), file_size_);
  return read_full_at(fd_, off, out, "reading blob (shrank?)");
}

Result<BlobMeta> BlobFile::read_meta() const {
  if (info_.chunk_count == 0 && info_.ci_compressed_size == 0 && info_.ci_uncompressed_size == 0)
    return BlobMeta{info_.features, {}};
  // Bound the read by the file before allocating anything.
  if (info_.ci_compressed_size > file_size_ ||
      !fits(info_.ci_offset, info_.ci_compressed_size + kBlobMetaHeaderSize, file_size_))
    return corrupt("blob meta {:#x}+{} beyond blob end {:#x}", info_.ci_offset,
                   info_.ci_compressed_size + kBlobMetaHeaderSize, file_size_);
  std::vector<uint8_t> buf(info_.ci_compressed_size + kBlobMetaHeaderSize);
  NYDUS_TRY(pread_exact(info_.ci_offset, buf));
  return parse_blob_meta(buf, info_);
}

Result<std::vector<TocEntryInfo>> BlobFile::read_toc() const {
  if (file_size_ < kTarHeaderSize) return errorf(Errc::kNotFound, "blob too small for a ToC");
  std::vector<uint8_t> hdr(kTarHeaderSize);
  NYDUS_TRY(pread_exact(file_size_ - kTarHeaderSize, hdr));
  auto parsed = parse_tar_header(hdr);
  if (!parsed || parsed->name != kTarNameToc) {
    // Only a blob that claims a ToC makes a missing one corruption.
    if (info_.toc_size != 0 || (info_.features & blob_features::kHasToc))
      return corrupt("blob claims a ToC but its last 512 bytes are not a ToC header");
    return errorf(Errc::kNotFound, "blob has no ToC");
  }
  if (parsed->size > kMaxTocSize || parsed->size > file_size_ - kTarHeaderSize)
    return corrupt("ToC size {} out of range for a {}-byte blob", parsed->size, file_size_);
  const uint64_t total = parsed->size + kTarHeaderSize;
  if (info_.toc_size != 0 && info_.toc_size != total)
    return corrupt("ToC is {} bytes, blob table says {}", total, info_.toc_size);
  std::vector<uint8_t> tail(total);
  NYDUS_TRY(pread_exact(file_size_ - total, tail));
  if (info_.toc_digest != Digest{} && sha256(tail) != info_.toc_digest)
    return corrupt("ToC digest mismatch");
  return parse_toc(tail);
}

Status BlobFile::read_chunk(const ChunkRecord& c, std::span<uint8_t> out, bool verify) const {
  if (out.size() != c.uncompressed_size)
    return errorf(Errc::kInvalidArgument, "output buffer is {} bytes for a {}-byte chunk", out.size(),
                  c.uncompressed_size);
  if (c.compressed_size > kMaxChunkSize || !fits(c.compressed_offset, c.compressed_size, file_size_))
    return corrupt("chunk {:#x}+{} beyond blob end {:#x}", c.compressed_offset, c.compressed_size, file_size_);
  // A raw chunk is read straight into `out` and decoded in place; a
  // compressed one goes through one reusable buffer per thread (hot path).
  std::span<uint8_t> stored = out;
  if (c.compressed || c.encrypted || c.batch) {
    thread_local std::vector<uint8_t> scratch;
    if (scratch.size() < c.compressed_size) scratch.resize(c.compressed_size);
    stored = std::span<uint8_t>(scratch.data(), c.compressed_size);
  } else if (c.compressed_size != c.uncompressed_size) {
    return corrupt("raw chunk with sizes {}/{}", c.compressed_size, c.uncompressed_size);
  }
  NYDUS_TRY(pread_exact(c.compressed_offset, stored));
  NYDUS_TRY(decode_chunk(info_, c, stored, out));
  if (verify) NYDUS_TRY(verify_chunk(info_.digester, c, out, c.digest));
  return ok();
}

Result<std::vector<uint8_t>> BlobFile::read_inlined_bootstrap() const {
  NYDUS_ASSIGN_OR_RETURN(auto toc, read_toc());
  auto it = std::find_if(toc.begin(), toc.end(),
                         [](const TocEntryInfo& e) { return e.name == kTarNameBootstrap; });
  if (it == toc.end()) return errorf(Errc::kNotFound, "blob has no inlined bootstrap");
  const TocEntryInfo& e = *it;
  if (e.uncompressed_size == 0 || e.uncompressed_size > kMaxInlinedBootstrap ||
      e.compressed_size > kMaxInlinedBootstrap)
    return corrupt("inlined bootstrap sizes {}/{} out of range", e.compressed_size, e.uncompressed_size);
  if (!fits(e.compressed_offset, e.compressed_size, file_size_))
    return corrupt("inlined bootstrap {:#x}+{} beyond blob end {:#x}", e.compressed_offset,
                   e.compressed_size, file_size_);
  const Compressor c = *blob_internal::compressor_for_toc_flags(e.flags);  // parse_toc checked it
  if (c == Compressor::kLz4Block)
    return errorf(Errc::kUnsupported, "lz4 inlined bootstrap (upstream reads only none/zstd)");
  if (c == Compressor::kNone && e.compressed_size != e.uncompressed_size)
    return corrupt("raw inlined bootstrap with sizes {}/{}", e.compressed_size, e.uncompressed_size);

  std::vector<uint8_t> out(e.uncompressed_size);
  if (c == Compressor::kNone) {
    NYDUS_TRY(pread_exact(e.compressed_offset, out));
  } else {
    std::vector<uint8_t> in(e.compressed_size);
    NYDUS_TRY(pread_exact(e.compressed_offset, in));
    NYDUS_TRY(decompress(c, in, out));
  }
  if (sha256(out) != e.digest) return corrupt("inlined bootstrap digest mismatch");
  return out;
}

}  // namespace nydus::format
