#include "format/blob_writer.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

#include "format/blob_meta_internal.h"
#include "format/compress.h"
#include "format/tar_header.h"
#include "common/io.h"

namespace nydus::format {

namespace {

constexpr size_t kWriteBufferSize = 1 << 20;

// V1 ci entries hold the compressed offset in 40 bits and the uncompressed
// offset in bits 12..43; anything beyond cannot be described.
constexpr uint64_t kMaxCompressedOffset = 1ull << 40;
constexpr uint64_t kMaxUncompressedOffset = 1ull << 44;

std::span<const uint8_t> bytes_of(const auto& pod) {
  return {reinterpret_cast<const uint8_t*>(&pod), sizeof(pod)};
}

TocEntry make_toc_entry(std::string_view name, uint32_t flags, const Digest& digest, uint64_t off,
                        uint64_t csize, uint64_t usize) {
  TocEntry e;
  std::memset(&e, 0, sizeof(e));  // reserved fields are zero (old builders leaked junk there)
  e.flags = flags;
  std::memcpy(e.name, name.data(), std::min(name.size(), sizeof(e.name)));
  std::memcpy(e.digest, digest.data(), 32);
  e.compressed_offset = off;
  e.compressed_size = csize;
  e.uncompressed_size = usize;
  return e;
}

enum class Stage { kChunks, kMetaDone, kBootstrapDone, kClosed };

// SHA-256 of everything written, whose running state can be snapshotted: the
// image.blob ToC digest is the hash of the file prefix ending with its tar
// header, so one pass over the chunk data yields it and the blob id.
class FileHash {
 public:
  FileHash() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
      EVP_MD_CTX_free(ctx_);
      ctx_ = nullptr;
    }
  }
  ~FileHash() { EVP_MD_CTX_free(ctx_); }
  FileHash(const FileHash&) = delete;
  FileHash& operator=(const FileHash&) = delete;
  bool valid() const { return ctx_ != nullptr; }
  void update(std::span<const uint8_t> d) { EVP_DigestUpdate(ctx_, d.data(), d.size()); }
  Result<Digest> snapshot() const {
    EVP_MD_CTX* c = EVP_MD_CTX_new();
    Digest out;
    unsigned n = 0;
    const bool good = c && EVP_MD_CTX_copy_ex(c, ctx_) == 1 && EVP_DigestFinal_ex(c, out.data(), &n) == 1;
    EVP_MD_CTX_free(c);
    if (!good) return make_error(Errc::kInternal, "sha256 snapshot failed");
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace

struct BlobWriter::Impl {
  BlobWriterOptions opts;
  bool tar = false;  // effective: ToC/inline bootstrap need the reverse-tar chain
  std::filesystem::path path;
  int fd = -1;
  std::vector<uint8_t> buf;
  size_t used = 0;
  uint64_t pos = 0;  // bytes handed to write(), i.e. the logical file offset
  FileHash file_hash;
  std::optional<Error> failed;  // sticky: after an I/O error the file is unusable
  Stage stage = Stage::kChunks;

  std::vector<ChunkInfoV1> ci;
  // V2 entries instead (encrypted or batch blobs), and the batch state.
  bool v2 = false;
  std::vector<ChunkInfoV2> ci2;
  std::vector<uint8_t> batch_buf;
  std::vector<BatchContextOnDisk> batches;
  std::vector<Digest> digests;
  uint64_t uncompressed_end = 0;
  std::vector<TocEntry> toc;
  BlobInfo info;

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }

  Status check_usable() const {
    if (failed) return std::unexpected(*failed);
    return ok();
  }

  std::unexpected<Error> fail(Error e) {
    failed = e;
    return std::unexpected(std::move(e));
  }

  Status write_fd(const uint8_t* p, size_t n) {
    if (Status s = write_full(fd, std::span(p, n), "writing blob " + path.string()); !s)
      return fail(std::move(s).error());
    return ok();
  }

  Status flush() {
    if (used == 0) return ok();
    NYDUS_TRY(write_fd(buf.data(), used));
    used = 0;
    return ok();
  }

  Status write(std::span<const uint8_t> d) {
    NYDUS_TRY(check_usable());
    if (d.empty()) return ok();
    file_hash.update(d);
    pos += d.size();
    if (used + d.size() <= buf.size()) {
      std::memcpy(buf.data() + used, d.data(), d.size());
      used += d.size();
      if (used == buf.size()) return flush();
      return ok();
    }
    NYDUS_TRY(flush());
    // Big pieces skip the copy; small ones start a new buffer.
    if (d.size() >= buf.size()) return write_fd(d.data(), d.size());
    std::memcpy(buf.data(), d.data(), d.size());
    used = d.size();
    return ok();
  }

  Status write_tar_header(std::string_view name, uint64_t size) {
    TarHeader h = make_tar_header(name, size);
    return write(h);
  }

  size_t count() const { return v2 ? ci2.size() : ci.size(); }

  // Compress (when it shrinks) and encrypt one stored piece.
  Result<std::vector<uint8_t>> seal(std::span<const uint8_t> plain) const {
    if (!opts.cipher) return std::vector<uint8_t>(plain.begin(), plain.end());
    return xts_encrypt(*opts.cipher, plain);
  }

  Status flush_batch() {
    if (batch_buf.empty()) return ok();
    std::vector<uint8_t> packed;
    std::span<const uint8_t> piece = batch_buf;
    if (opts.compressor != Compressor::kNone) {
      NYDUS_ASSIGN_OR_RETURN(bool shrank, compress(opts.compressor, batch_buf, packed));
      if (shrank) piece = packed;
    }
    NYDUS_ASSIGN_OR_RETURN(auto stored, seal(piece));
    BatchContextOnDisk bc{};
    bc.compressed_size = uint32_t(stored.size());
    bc.uncompressed_batch_size = uint32_t(batch_buf.size());
    NYDUS_TRY(write(stored));
    batches.push_back(bc);
    batch_buf.clear();
    return ok();
  }

  Status write_meta();
  Status write_toc();
};

BlobWriter::BlobWriter() : impl_(std::make_unique<Impl>()) {}
BlobWriter::~BlobWriter() = default;

Result<std::unique_ptr<BlobWriter>> BlobWriter::create(const std::filesystem::path& path,
                                                       const BlobWriterOptions& opts) {
  if (opts.compressor != Compressor::kNone && opts.compressor != Compressor::kLz4Block &&
      opts.compressor != Compressor::kZstd)
    return errorf(Errc::kUnsupported, "blob compressor {} is not supported for data blobs",
                  compressor_name(opts.compressor));
  if (opts.digester != Digester::kBlake3 && opts.digester != Digester::kSha256)
    return errorf(Errc::kInvalidArgument, "unknown digester id {}", uint32_t(opts.digester));
  if (opts.chunk_size < kMinChunkSize || opts.chunk_size > kMaxChunkSize ||
      !std::has_single_bit(opts.chunk_size))
    return errorf(Errc::kInvalidArgument, "chunk size {:#x} must be a power of two in 4K..16M",
                  opts.chunk_size);
  if (opts.blob_index >= kMaxBlobs)
    return errorf(Errc::kInvalidArgument, "blob index {} exceeds {}", opts.blob_index, kMaxBlobs - 1);

  std::unique_ptr<BlobWriter> w(new BlobWriter());
  Impl& m = *w->impl_;
  m.opts = opts;
  // Upstream writes the tar chain whenever blob-toc or inline meta is on; the
  // ToC itself is only found through its tar header, so force it.
  m.tar = opts.tar_headers || opts.toc || opts.inline_bootstrap;
  m.path = path;
  if (!m.file_hash.valid()) return make_error(Errc::kInternal, "cannot set up sha256");
  m.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (m.fd < 0) return sys_error(fmt::format("creating blob {}", path.string()));
  m.buf.resize(kWriteBufferSize);

  BlobInfo& b = m.info;
  b.compressor = opts.compressor;
  b.digester = opts.digester;
  b.chunk_size = opts.chunk_size;
  b.features = blob_features::kAligned | blob_features::kCapTarToc;
  if (m.tar) b.features |= blob_features::kHasTarHeader;
  if (opts.toc) b.features |= blob_features::kHasToc | blob_features::kInlinedChunkDigest;
  if (opts.inline_bootstrap) b.features |= blob_features::kInlinedFsMeta;
  if (opts.batch_size != 0) {
    if (opts.batch_size < kMinChunkSize || opts.batch_size > opts.chunk_size || !std::has_single_bit(opts.batch_size))
      return errorf(Errc::kInvalidArgument, "batch size {:#x} must be a power of two in 4K..chunk size", opts.batch_size);
    b.features |= blob_features::kBatch | blob_features::kChunkInfoV2;
  }
  if (opts.cipher) {
    b.features |= blob_features::kEncrypted | blob_features::kChunkInfoV2;
    set_blob_xts_key(b, *opts.cipher);
  }
  m.v2 = opts.batch_size != 0 || opts.cipher.has_value();
  return w;
}

Result<ChunkRecord> BlobWriter::add_chunk(std::span<const uint8_t> stored, bool compressed,
                                          uint32_t uncompressed_size, const Digest& digest,
                                          uint32_t crc32) {
  Impl& m = *impl_;
  NYDUS_TRY(m.check_usable());
  if (m.stage != Stage::kChunks)
    return make_error(Errc::kInvalidArgument, "add_chunk after finish_meta");
  if (uncompressed_size == 0 || uncompressed_size > m.opts.chunk_size)
    return errorf(Errc::kInvalidArgument, "chunk size {} outside 1..{}", uncompressed_size,
                  m.opts.chunk_size);
  if (stored.empty() || stored.size() > kMaxChunkSize)
    return errorf(Errc::kInvalidArgument, "stored chunk size {} outside 1..{}", stored.size(),
                  kMaxChunkSize);
  if (!compressed && stored.size() != uncompressed_size)
    return errorf(Errc::kInvalidArgument, "raw chunk has {} bytes but claims {}", stored.size(),
                  uncompressed_size);
  // V1 ci entries say "compressed" exactly when the sizes differ.
  if (compressed && (m.opts.compressor == Compressor::kNone || stored.size() == uncompressed_size))
    return make_error(Errc::kInvalidArgument,
                      "compressed chunk must use the blob compressor and differ in size from its data");
  if (m.count() >= kMaxChunksPerBlob)
    return errorf(Errc::kInvalidArgument, "blob already holds {} chunks", kMaxChunksPerBlob);
  // A chunk that does not go into a batch ends the open one (upstream's
  // "interrupt and dump buffered batch chunks").
  NYDUS_TRY(m.flush_batch());
  std::vector<uint8_t> sealed;
  if (m.opts.cipher) {
    NYDUS_ASSIGN_OR_RETURN(sealed, m.seal(stored));
    stored = sealed;
  }
  const uint64_t coff = m.pos;
  const uint64_t uoff = m.uncompressed_end;
  const uint64_t uend = uoff + align_up(uncompressed_size, kBlockSize);
  if (coff + stored.size() > kMaxCompressedOffset || uend > kMaxUncompressedOffset)
    return make_error(Errc::kInvalidArgument, "blob too large for ci entries");

  NYDUS_TRY(m.write(stored));

  if (m.v2) {
    ChunkInfoV2 e{};
    uint8_t flags = ci_v2_flags::kHasCrc32;
    if (compressed) flags |= ci_v2_flags::kCompressed;
    if (m.opts.cipher) flags |= ci_v2_flags::kEncrypted;
    e.comp_info = (coff & 0xFF'FFFF'FFFFull) | uint64_t(stored.size()) << 40;
    e.uncomp_info = ((uoff >> 12) & 0xFFFF'FFFFull) | (uint64_t(uncompressed_size - 1) & 0xFF'FFFF) << 32 |
                    uint64_t(flags) << 56;
    e.data = crc32;
    m.ci2.push_back(e);
  } else {
    DecodedChunkInfo d;
    d.compressed_offset = coff;
    d.compressed_size = uint32_t(stored.size());
    d.uncompressed_offset = uoff;
    d.uncompressed_size = uncompressed_size;
    d.compressed = compressed;
    m.ci.push_back(encode_ci_v1(d));
  }
  m.digests.push_back(digest);
  m.uncompressed_end = uend;

  ChunkRecord r;
  r.digest = digest;
  r.blob_index = m.opts.blob_index;
  r.ci_index = uint32_t(m.count() - 1);
  r.encrypted = m.opts.cipher.has_value();
  r.compressed_offset = coff;
  r.compressed_size = uint32_t(stored.size());
  r.uncompressed_offset = uoff;
  r.uncompressed_size = uncompressed_size;
  r.compressed = compressed;
  r.crc32 = crc32;
  r.has_crc32 = true;  // current upstream computes CRC-32C for every chunk
  return r;
}

Result<ChunkRecord> BlobWriter::add_batch_chunk(std::span<const uint8_t> raw, const Digest& digest, uint32_t crc32) {
  Impl& m = *impl_;
  NYDUS_TRY(m.check_usable());
  if (m.stage != Stage::kChunks) return make_error(Errc::kInvalidArgument, "add_batch_chunk after finish_meta");
  if (m.opts.batch_size == 0) return make_error(Errc::kInvalidArgument, "add_batch_chunk without a batch size");
  if (raw.empty() || raw.size() >= m.opts.batch_size / 2)
    return errorf(Errc::kInvalidArgument, "batch chunk of {} bytes (batch size {:#x})", raw.size(), m.opts.batch_size);
  if (m.count() >= kMaxChunksPerBlob)
    return errorf(Errc::kInvalidArgument, "blob already holds {} chunks", kMaxChunksPerBlob);
  if (m.batch_buf.size() + raw.size() >= m.opts.batch_size) NYDUS_TRY(m.flush_batch());
  const uint64_t coff = m.pos;  // nothing else is written while a batch is open
  const uint64_t uoff = m.uncompressed_end;
  const uint64_t uend = uoff + align_up(raw.size(), kBlockSize);
  if (coff + m.opts.batch_size + 18 > kMaxCompressedOffset || uend > kMaxUncompressedOffset)
    return make_error(Errc::kInvalidArgument, "blob too large for ci entries");
  uint8_t flags = ci_v2_flags::kBatch | ci_v2_flags::kCompressed;  // upstream marks every batch chunk compressed
  if (m.opts.cipher) flags |= ci_v2_flags::kEncrypted;
  ChunkInfoV2 e{};
  e.comp_info = coff & 0xFF'FFFF'FFFFull;  // size 0: the batch context has it
  e.uncomp_info = ((uoff >> 12) & 0xFFFF'FFFFull) | (uint64_t(raw.size() - 1) & 0xFF'FFFF) << 32 |
                  uint64_t(flags) << 56;
  e.data = uint64_t(m.batches.size()) << 32 | uint64_t(m.batch_buf.size());
  m.ci2.push_back(e);
  m.batch_buf.insert(m.batch_buf.end(), raw.begin(), raw.end());
  m.digests.push_back(digest);
  m.uncompressed_end = uend;

  ChunkRecord r;
  r.digest = digest;
  r.blob_index = m.opts.blob_index;
  r.ci_index = uint32_t(m.count() - 1);
  r.uncompressed_offset = uoff;
  r.uncompressed_size = uint32_t(raw.size());
  r.encrypted = m.opts.cipher.has_value();
  r.crc32 = crc32;
  r.has_crc32 = true;
  return r;
}

uint32_t BlobWriter::chunk_count() const { return uint32_t(impl_->count()); }

Status BlobWriter::Impl::write_meta() {
  NYDUS_TRY(flush_batch());
  BlobInfo& b = info;
  const uint64_t data_size = pos;
  b.chunk_count = uint32_t(count());
  b.uncompressed_size = uncompressed_end;

  if (tar) {
    NYDUS_TRY(write_tar_header(kTarNameBlob, data_size));
    if (opts.toc) {
      // sha256(chunk data || its tar header) = hash of the file so far.
      NYDUS_ASSIGN_OR_RETURN(Digest d, file_hash.snapshot());
      toc.push_back(make_toc_entry(kTarNameBlob, toc_flags::kNone, d, 0, data_size, b.uncompressed_size));
    }
  }

  // No chunks, no blob meta (upstream skips it when the uncompressed size is 0);
  // a RAFS v5 blob never has one.
  if (count() == 0 || !opts.blob_meta) return ok();

  // V2: the entries, then the batch contexts (both part of the ci buffer).
  std::vector<uint8_t> ci_v2_buf;
  if (v2) {
    ci_v2_buf.resize(ci2.size() * sizeof(ChunkInfoV2) + batches.size() * sizeof(BatchContextOnDisk));
    std::memcpy(ci_v2_buf.data(), ci2.data(), ci2.size() * sizeof(ChunkInfoV2));
    if (!batches.empty())
      std::memcpy(ci_v2_buf.data() + ci2.size() * sizeof(ChunkInfoV2), batches.data(),
                  batches.size() * sizeof(BatchContextOnDisk));
  }
  std::span<const uint8_t> ci_raw =
      v2 ? std::span<const uint8_t>(ci_v2_buf)
         : std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(ci.data()), ci.size() * sizeof(ChunkInfoV1));
  std::vector<uint8_t> packed;
  std::span<const uint8_t> ci_stored = ci_raw;
  b.ci_compressor = Compressor::kNone;
  if (opts.compressor != Compressor::kNone) {
    NYDUS_ASSIGN_OR_RETURN(bool shrank, compress(opts.compressor, ci_raw, packed));
    if (shrank) {
      ci_stored = packed;
      b.ci_compressor = opts.compressor;
    }
  }
  std::vector<uint8_t> sealed_ci;
  if (opts.cipher) {
    NYDUS_ASSIGN_OR_RETURN(sealed_ci, seal(ci_stored));
    ci_stored = sealed_ci;
  }
  b.ci_offset = pos;
  b.ci_compressed_size = ci_stored.size();
  b.ci_uncompressed_size = ci_raw.size();
  const BlobMetaHeader header = blob_internal::make_blob_meta_header(b);
  NYDUS_TRY(write(ci_stored));
  if (opts.cipher) {
    NYDUS_ASSIGN_OR_RETURN(auto sealed_header, seal(bytes_of(header)));
    NYDUS_TRY(write(sealed_header));
  } else {
    NYDUS_TRY(write(bytes_of(header)));
  }
  if (tar) NYDUS_TRY(write_tar_header(kTarNameBlobMeta, b.ci_compressed_size + kBlobMetaHeaderSize));

  if (opts.toc) {
    toc.push_back(make_toc_entry(kTarNameBlobMeta, blob_internal::toc_flag_for(b.ci_compressor),
                                 sha256(ci_raw), b.ci_offset, b.ci_compressed_size,
                                 b.ci_uncompressed_size));
    toc.push_back(make_toc_entry(kTarNameBlobMetaHeader, toc_flags::kNone, sha256(bytes_of(header)),
                                 b.ci_offset + b.ci_compressed_size, kBlobMetaHeaderSize,
                                 kBlobMetaHeaderSize));
    // Digests are incompressible: stored raw.
    std::span<const uint8_t> dig(digests.front().data(), digests.size() * sizeof(Digest));
    const uint64_t off = pos;
    NYDUS_TRY(write(dig));
    NYDUS_TRY(write_tar_header(kTarNameBlobDigest, dig.size()));
    toc.push_back(make_toc_entry(kTarNameBlobDigest, toc_flags::kNone, sha256(dig), off, dig.size(),
                                 dig.size()));
  }
  return ok();
}

Result<BlobInfo> BlobWriter::finish_meta() {
  Impl& m = *impl_;
  NYDUS_TRY(m.check_usable());
  if (m.stage != Stage::kChunks) return make_error(Errc::kInvalidArgument, "finish_meta called twice");
  static_assert(sizeof(Digest) == 32 && alignof(Digest) == 1, "digest array is written in place");
  NYDUS_TRY(m.write_meta());
  m.stage = Stage::kMetaDone;
  m.info.compressed_size = m.pos;
  return m.info;
}

Status BlobWriter::append_bootstrap(std::span<const uint8_t> bootstrap) {
  Impl& m = *impl_;
  NYDUS_TRY(m.check_usable());
  if (!m.opts.inline_bootstrap)
    return make_error(Errc::kInvalidArgument, "append_bootstrap without inline_bootstrap");
  if (m.stage != Stage::kMetaDone)
    return make_error(Errc::kInvalidArgument, "append_bootstrap must follow finish_meta, once");
  if (bootstrap.empty()) return make_error(Errc::kInvalidArgument, "empty bootstrap");
  // With a ToC the bootstrap is zstd (raw when that does not shrink it);
  // legacy inline meta without a ToC stores it raw.
  std::vector<uint8_t> packed;
  std::span<const uint8_t> stored = bootstrap;
  uint32_t flags = toc_flags::kNone;
  if (m.opts.toc) {
    NYDUS_ASSIGN_OR_RETURN(bool shrank, compress(Compressor::kZstd, bootstrap, packed));
    if (shrank) {
      stored = packed;
      flags = toc_flags::kZstd;
    }
  }
  const uint64_t off = m.pos;
  NYDUS_TRY(m.write(stored));
  if (m.tar) NYDUS_TRY(m.write_tar_header(kTarNameBootstrap, stored.size()));
  if (m.opts.toc)
    m.toc.push_back(make_toc_entry(kTarNameBootstrap, flags, sha256(bootstrap), off, stored.size(),
                                   bootstrap.size()));
  m.stage = Stage::kBootstrapDone;
  return ok();
}

Status BlobWriter::Impl::write_toc() {
  std::span<const uint8_t> entries(reinterpret_cast<const uint8_t*>(toc.data()),
                                   toc.size() * sizeof(TocEntry));
  TarHeader h = make_tar_header(kTarNameToc, entries.size());
  Sha256Stream toc_hash;
  toc_hash.update(entries);
  toc_hash.update(h);
  NYDUS_TRY(write(entries));
  NYDUS_TRY(write(h));
  info.toc_size = uint32_t(entries.size() + kTarHeaderSize);
  info.toc_digest = toc_hash.finish();
  return ok();
}

Result<BlobInfo> BlobWriter::close() {
  Impl& m = *impl_;
  NYDUS_TRY(m.check_usable());
  if (m.stage == Stage::kClosed) return make_error(Errc::kInvalidArgument, "blob writer already closed");
  if (m.stage == Stage::kChunks) NYDUS_TRY(finish_meta());
  if (m.opts.inline_bootstrap && m.stage != Stage::kBootstrapDone)
    return make_error(Errc::kInvalidArgument, "inline_bootstrap set but no bootstrap appended");
  if (m.opts.toc) NYDUS_TRY(m.write_toc());
  NYDUS_TRY(m.flush());
  NYDUS_ASSIGN_OR_RETURN(Digest id, m.file_hash.snapshot());
  // A FIFO or character device (the converter's --blob) cannot be synced: EINVAL.
  if (::fsync(m.fd) != 0 && errno != EINVAL)
    return m.fail(sys_error(fmt::format("fsync {}", m.path.string())).error());
  const int fd = m.fd;
  m.fd = -1;
  if (::close(fd) != 0) return m.fail(sys_error(fmt::format("closing {}", m.path.string())).error());
  m.stage = Stage::kClosed;
  m.info.compressed_size = m.pos;
  m.info.blob_id = to_hex(id);
  return m.info;
}

}  // namespace nydus::format
