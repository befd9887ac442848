#include "format/image_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "common/io.h"
#include "format/compress.h"
#include "format/digest.h"
#include "format/gzip_random.h"
#include "format/zran_meta.h"

namespace nydus::format {

Result<std::unique_ptr<ImageReader>> ImageReader::open(const std::filesystem::path& bootstrap,
                                                       const BlobLocation& loc) {
  NYDUS_ASSIGN_OR_RETURN(auto boot, Bootstrap::open(bootstrap));
  return open(std::move(boot), loc);
}

Result<std::unique_ptr<ImageReader>> ImageReader::open(std::shared_ptr<Bootstrap> boot, const BlobLocation& loc) {
  std::unique_ptr<ImageReader> r(new ImageReader());
  r->boot_ = std::move(boot);
  r->loc_ = loc;
  return r;
}

Result<std::filesystem::path> ImageReader::blob_path(uint32_t index) const {
  const auto& blobs = boot_->blobs();
  if (index >= blobs.size()) return corrupt("blob index {} beyond the blob table ({} blobs)", index, blobs.size());
  if (!loc_.blob_file.empty()) {
    if (blobs.size() > 1)
      return errorf(Errc::kInvalidArgument, "image has {} blobs; give a blob directory instead of one blob file",
                    blobs.size());
    return loc_.blob_file;
  }
  if (loc_.blob_dir.empty()) return make_error(Errc::kInvalidArgument, "no blob directory or blob file given");
  const std::string& id = blobs[index].blob_id;
  // Ids come from an untrusted image: never let one walk out of the directory.
  if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..")
    return corrupt("blob {} has an unusable id '{}'", index, id);
  return loc_.blob_dir / id;
}

Result<const BlobFile*> ImageReader::blob(uint32_t index) {
  if (auto it = blobs_.find(index); it != blobs_.end()) return it->second.get();
  NYDUS_ASSIGN_OR_RETURN(auto path, blob_path(index));
  NYDUS_ASSIGN_OR_RETURN(BlobFile f, BlobFile::open(path, boot_->blobs()[index]));
  auto p = std::make_unique<BlobFile>(std::move(f));
  const BlobFile* raw = p.get();
  blobs_[index] = std::move(p);
  return raw;
}

// Blob `index`'s chunks from its decoded ci entries, with the digests for
// verification taken from the bootstrap's chunk table.
Result<std::vector<ChunkRecord>> ImageReader::records_from_ci(uint32_t index,
                                                             std::span<const DecodedChunkInfo> cis) {
  std::vector<ChunkRecord> recs(cis.size());
  for (size_t i = 0; i < cis.size(); i++) {
    const auto& c = cis[i];
    auto& r = recs[i];
    r.blob_index = index;
    r.ci_index = uint32_t(i);
    r.compressed_offset = c.compressed_offset;
    r.compressed_size = c.compressed_size;
    r.uncompressed_offset = c.uncompressed_offset;
    r.uncompressed_size = c.uncompressed_size;
    r.compressed = c.compressed;
    r.encrypted = c.encrypted;
    r.batch = c.batch;
    r.batch_size = c.batch_size;
    r.offset_in_batch = c.offset_in_batch;
  }
  if (!table_) {
    NYDUS_ASSIGN_OR_RETURN(auto t, boot_->chunk_table());
    table_ = std::move(t);
  }
  for (const auto& t : *table_)
    if (t.blob_index == index && t.ci_index < recs.size()) recs[t.ci_index].digest = t.digest;
  return recs;
}

Result<const std::vector<ChunkRecord>*> ImageReader::blob_chunks(uint32_t index) {
  if (auto it = chunks_.find(index); it != chunks_.end()) return &it->second;
  const auto& blobs = boot_->blobs();
  if (index >= blobs.size()) return corrupt("blob index {} beyond the blob table", index);
  const BlobInfo& bi = blobs[index];
  std::vector<ChunkRecord> recs;
  if (bi.features & blob_features::kZran) {
    NYDUS_ASSIGN_OR_RETURN(const ZranMeta* zm, zran_meta(index));
    std::vector<DecodedChunkInfo> cis;
    cis.reserve(zm->chunks.size());
    for (const auto& z : zm->chunks) cis.push_back(z.ci);
    NYDUS_ASSIGN_OR_RETURN(recs, records_from_ci(index, cis));
    auto [it, _] = chunks_.emplace(index, std::move(recs));
    return &it->second;
  }
  // A blob file that ends before its meta is just the chunk data (the
  // converter's "image.blob" entry, handed to `unpack --blob`): then the
  // bootstrap's chunk table says where chunks are, as upstream reads it.
  const BlobFile* with_meta = nullptr;
  if (bi.ci_compressed_size > 0 && has_blobs() && !bi.bootstrap_chunks) {
    NYDUS_ASSIGN_OR_RETURN(const BlobFile* f, blob(index));
    if (f->file_size() >= bi.ci_offset + bi.ci_compressed_size + 4096) with_meta = f;
  }
  if (with_meta) {
    NYDUS_ASSIGN_OR_RETURN(BlobMeta meta, with_meta->read_meta());
    NYDUS_ASSIGN_OR_RETURN(recs, records_from_ci(index, meta.chunks));
  } else if (bi.bootstrap_chunks) {
    // RAFS v5: the bootstrap's own chunk list, by ci index (gaps unusable).
    recs.resize(bi.chunk_count);
    for (auto& r : recs) r.uncompressed_size = 0;
    for (const auto& r : *bi.bootstrap_chunks) {
      if (r.ci_index >= recs.size()) return corrupt("blob {}: chunk {} beyond {} chunks", index, r.ci_index, recs.size());
      recs[r.ci_index] = r;
    }
  } else {
    if (!table_) {
      NYDUS_ASSIGN_OR_RETURN(auto t, boot_->chunk_table());
      table_ = std::move(t);
    }
    uint32_t n = bi.chunk_count;
    recs.resize(n);
    std::vector<bool> seen(n, false);
    for (const auto& t : *table_) {
      if (t.blob_index != index) continue;
      if (t.ci_index >= n) return corrupt("chunk table entry for blob {} has ci index {} of {}", index, t.ci_index, n);
      recs[t.ci_index] = t;
      seen[t.ci_index] = true;
    }
    // Chunks only referenced through dedup may be absent: mark them unusable.
    for (uint32_t i = 0; i < n; i++)
      if (!seen[i]) recs[i].uncompressed_size = 0;
  }
  auto [it, _] = chunks_.emplace(index, std::move(recs));
  return &it->second;
}

Result<ChunkRecord> ImageReader::resolve(const ChunkRef& ref) {
  NYDUS_ASSIGN_OR_RETURN(const auto* recs, blob_chunks(ref.blob_index));
  if (ref.ci_index >= recs->size())
    return corrupt("chunk index {} beyond blob {}'s {} chunks", ref.ci_index, ref.blob_index, recs->size());
  const ChunkRecord& r = (*recs)[ref.ci_index];
  if (r.uncompressed_size == 0) return corrupt("chunk {} of blob {} is unknown", ref.ci_index, ref.blob_index);
  if (r.uncompressed_offset != uint64_t(ref.blkaddr) << boot_->super_block().blkszbits)
    return corrupt("chunk {} of blob {}: block address {} disagrees with its offset {:#x}", ref.ci_index,
                   ref.blob_index, ref.blkaddr, r.uncompressed_offset);
  return r;
}

Status ImageReader::read_file(const InodeView& inode, bool verify,
                              const std::function<Status(uint64_t, std::span<const uint8_t>)>& fn) {
  NYDUS_ASSIGN_OR_RETURN(auto refs, boot_->chunks(inode));
  const uint64_t cs = boot_->chunk_size();
  std::vector<uint8_t> buf;
  uint64_t off = 0;
  for (const auto& ref : refs) {
    const uint64_t want = std::min<uint64_t>(cs, inode.size - off);
    NYDUS_ASSIGN_OR_RETURN(ChunkRecord r, resolve(ref));
    if (r.uncompressed_size != want)
      return corrupt("inode {}: chunk at {} holds {} bytes, expected {}", inode.nid, off, r.uncompressed_size, want);
    buf.resize(want);
    Status st = read_chunk(ref.blob_index, r, buf, verify);
    if (!st) return std::unexpected(std::move(st).error().context(fmt::format("inode {} offset {}", inode.nid, off)));
    NYDUS_TRY(fn(off, buf));
    off += want;
  }
  return ok();
}

}  // namespace nydus::format

namespace nydus::format {

Status ImageReader::read_chunk(uint32_t index, const ChunkRecord& r, std::span<uint8_t> out, bool verify) {
  if (index >= boot_->blobs().size()) return corrupt("blob index {} beyond the blob table", index);
  if (boot_->blobs()[index].features & blob_features::kZran) return read_zran_chunk(index, r, out, verify);
  NYDUS_ASSIGN_OR_RETURN(const BlobFile* f, blob(index));
  return f->read_chunk(r, out, verify);
}

Result<const ZranMeta*> ImageReader::zran_meta(uint32_t index) {
  if (auto it = zran_.find(index); it != zran_.end()) return it->second.get();
  const BlobInfo& bi = boot_->blobs().at(index);
  if (loc_.blob_dir.empty())
    return errorf(Errc::kInvalidArgument, "ZRAN blob {} needs a blob directory (its gzip layer and meta blob)",
                  bi.blob_id);
  if (bi.blob_meta_digest == Digest{})
    return errorf(Errc::kInvalidArgument, "ZRAN blob {} names no meta blob (inlined: load the bootstrap from a file "
                  "named by the meta blob's sha256)", bi.blob_id);
  // Bounds before allocating: a ci entry, a context and a window per chunk at most.
  if (bi.ci_compressed_size > bi.ci_uncompressed_size + 1024 ||
      bi.ci_uncompressed_size > uint64_t(bi.chunk_count) * (sizeof(ChunkInfoV2) + sizeof(ZranInflateContextOnDisk) +
                                                              kZranWindowSize))
    return corrupt("ZRAN blob {}: ci sizes {}/{} for {} chunks", bi.blob_id, bi.ci_compressed_size,
                   bi.ci_uncompressed_size, bi.chunk_count);
  const auto path = loc_.blob_dir / to_hex(bi.blob_meta_digest);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_error("opening ZRAN meta blob " + path.string());
  std::vector<uint8_t> raw(bi.ci_compressed_size + kBlobMetaHeaderSize);
  Status rs = read_full_at(fd, bi.ci_offset, raw, "reading ZRAN meta blob");
  ::close(fd);
  NYDUS_TRY(rs);
  NYDUS_ASSIGN_OR_RETURN(auto decoded, decode_zran_meta_blob(raw, bi, path.string()));
  auto p = std::make_shared<const ZranMeta>(std::move(decoded.meta));
  const ZranMeta* raw_p = p.get();
  zran_[index] = std::move(p);
  return raw_p;
}

Status ImageReader::read_zran_chunk(uint32_t index, const ChunkRecord& r, std::span<uint8_t> out, bool verify) {
  NYDUS_ASSIGN_OR_RETURN(const ZranMeta* m, zran_meta(index));
  if (r.ci_index >= m->chunks.size()) return corrupt("ZRAN chunk {} beyond {} chunks", r.ci_index, m->chunks.size());
  const ZranChunk& z = m->chunks[r.ci_index];
  const ZranContext& c = m->contexts[z.zran_index];  // parse_zran_ci bounded the index and spans
  const uint64_t in_end = z.ci.compressed_offset + z.ci.compressed_size;
  if (in_end <= c.in_offset || in_end - c.in_offset > 2ull * kZranMaxContextOutput)
    return corrupt("ZRAN chunk {}: input span [{:#x}, {:#x}) unusable", r.ci_index, c.in_offset, in_end);
  if (out.size() != z.ci.uncompressed_size) return corrupt("ZRAN chunk {}: size mismatch", r.ci_index);
  NYDUS_ASSIGN_OR_RETURN(const BlobFile* f, blob(index));
  std::vector<uint8_t> in(in_end - c.in_offset);
  NYDUS_TRY(f->pread_exact(c.in_offset, in));
  NYDUS_TRY(inflate_from_checkpoint(InflatePoint{c.ctx_bits, c.ctx_byte, m->dict(c)}, in, z.zran_offset, out));
  // Ref images are sha256-digested (upstream forces it for targz-ref).
  if (verify && boot_->digester() != Digester::kSha256)
    return corrupt("ZRAN blob {}: chunk digester is not sha256", boot_->blobs()[index].blob_id);
  if (verify && sha256(out) != r.digest)
    return corrupt("ZRAN chunk {} of blob {}: digest mismatch", r.ci_index, boot_->blobs()[index].blob_id);
  return ok();
}

}  // namespace nydus::format
