#include "storage/zran_fetch.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/file_util.h"
#include "common/io.h"
#include "format/compress.h"
#include "format/digest.h"
#include "format/gzip_random.h"

namespace nydus::storage {

namespace fs = std::filesystem;
using format::BlobInfo;

namespace {

// A legitimate context spans ≤ 64 MiB of output; even stored (incompressible)
// deflate needs little more input than that.
constexpr uint64_t kMaxZranFetch = 2ull * format::kZranMaxContextOutput;

Status backend_read(Backend& backend, const std::string& id, uint64_t off, std::span<uint8_t> out,
                    uint64_t* bytes_fetched) {
  const auto started = std::chrono::steady_clock::now();
  Status rs = backend.read(id, off, out);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  backend.io_stats().record(out.size(), uint64_t(ms.count()), !rs);
  if (rs && bytes_fetched) *bytes_fetched += out.size();
  return rs;
}

format::ZranLimits limits_of(const BlobInfo& b) { return {b.compressed_size, b.uncompressed_size}; }

Status read_exact(const fs::path& p, std::span<uint8_t> out) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_error("opening " + p.string());
  Status s = read_full_at(fd, 0, out, "reading ZRAN blob meta cache");
  ::close(fd);
  return s;
}

}  // namespace

Result<std::shared_ptr<const format::ZranMeta>> load_zran_meta(const BlobInfo& blob, Backend& backend,
                                                                 const fs::path& work_dir, uint64_t* bytes_fetched) {
  if (blob.ci_compressed_size > blob.ci_uncompressed_size ||
      blob.ci_uncompressed_size > uint64_t(blob.chunk_count) *
                                      (sizeof(format::ChunkInfoV2) + sizeof(format::ZranInflateContextOnDisk) +
                                       format::kZranWindowSize))
    return corrupt("ZRAN blob {}: ci sizes {}/{} for {} chunks", blob.blob_id, blob.ci_compressed_size,
                   blob.ci_uncompressed_size, blob.chunk_count);
  const fs::path cache_path = work_dir / (blob.blob_id + ".blob.meta");
  const uint64_t cache_size = format::align_up(blob.ci_uncompressed_size, format::kBlockSize) + format::kBlobMetaHeaderSize;
  {
    std::error_code ec;
    if (fs::file_size(cache_path, ec) == cache_size && !ec) {
      std::vector<uint8_t> file(cache_size);
      if (read_exact(cache_path, file)) {
        const auto h = format::load<format::BlobMetaHeader>(file.data() + file.size() - format::kBlobMetaHeaderSize);
        if (format::zran_header_matches(h, blob)) {
          auto m = format::parse_zran_blob_meta_cache(file, limits_of(blob));
          if (m) return std::make_shared<const format::ZranMeta>(std::move(*m));
        }
      }
      // An invalid cache file is not trusted: refetch and replace it.
    }
  }

  if (blob.blob_meta_digest == format::Digest{})
    return errorf(Errc::kInvalidArgument,
                  "ZRAN blob {} names no meta blob: its bootstrap was inlined in the meta blob, so load it from a "
                  "file named by the meta blob's sha256, or merge it with --blob-digests",
                  blob.blob_id);
  const std::string meta_id = format::to_hex(blob.blob_meta_digest);
  std::vector<uint8_t> raw(blob.ci_compressed_size + format::kBlobMetaHeaderSize);
  NYDUS_TRY(backend_read(backend, meta_id, blob.ci_offset, raw, bytes_fetched));
  // The meta blob is content addressed: when we read all of it, check it.
  if (blob.ci_offset == 0 && blob.blob_meta_size == raw.size() && format::sha256(raw) != blob.blob_meta_digest)
    return corrupt("ZRAN meta blob {} does not match its digest", meta_id);
  NYDUS_ASSIGN_OR_RETURN(auto decoded, format::decode_zran_meta_blob(raw, blob, meta_id));
  std::vector<uint8_t> cache(cache_size, 0);
  std::memcpy(cache.data(), decoded.ci.data(), decoded.ci.size());
  std::memcpy(cache.data() + cache.size() - format::kBlobMetaHeaderSize, &decoded.header, sizeof(decoded.header));
  NYDUS_TRY(write_file_atomic(cache_path, cache));
  return std::make_shared<const format::ZranMeta>(std::move(decoded.meta));
}

namespace {

// Where a chunk's bytes sit in the uncompressed layer stream.
uint64_t stream_pos(const format::ZranMeta& m, const format::ZranChunk& z) {
  return m.contexts[z.zran_index].out_offset + z.zran_offset;
}

}  // namespace

size_t zran_run_end(const format::ZranMeta& m, std::span<const uint32_t> cis, size_t i, uint64_t max_bytes) {
  const format::ZranChunk& first = m.chunks[cis[i]];
  const uint64_t base = m.contexts[first.zran_index].out_offset;
  uint64_t lo = stream_pos(m, first), hi = lo + first.ci.uncompressed_size;
  uint64_t in_end = first.ci.compressed_offset + first.ci.compressed_size;
  bool joined = false;  // the run reaches into a later context
  size_t j = i + 1;
  for (; j < cis.size(); j++) {
    const format::ZranChunk& z = m.chunks[cis[j]];
    const uint64_t p = stream_pos(m, z);
    if (z.zran_index != first.zran_index) {
      // Inflating on from the first checkpoint reaches a later context's
      // chunk without its own checkpoint, dictionary or re-fetch of the
      // bytes before it, if those bytes are (nearly) fetched already.
      if (p < base || z.ci.compressed_offset > in_end + kZranJoinGap) break;
      joined = true;
    }
    const uint64_t nlo = std::min(lo, p);
    const uint64_t nhi = std::max(hi, p + z.ci.uncompressed_size);
    if (nhi - nlo > (joined ? std::min(max_bytes, kZranMaxJoinedOutput) : max_bytes)) break;
    lo = nlo;
    hi = nhi;
    in_end = std::max(in_end, z.ci.compressed_offset + z.ci.compressed_size);
  }
  return j;
}

Status read_zran_run(const format::ZranMeta& m, const BlobInfo& blob, Backend& backend,
                     std::span<const uint32_t> cis, const ZranChunkFn& fn, uint64_t* bytes_fetched) {
  if (cis.empty()) return ok();
  const format::ZranChunk& first = m.chunks.at(cis[0]);
  const format::ZranContext& ctx = m.contexts.at(first.zran_index);
  // parse_zran_ci bounded every chunk inside its context and every context
  // inside the layer; the run only widens to the union of its chunks, all
  // at or after the first one's checkpoint in the stream (zran_run_end).
  uint64_t lo = UINT64_MAX, hi = 0, in_end = 0;
  for (uint32_t ci : cis) {
    const format::ZranChunk& z = m.chunks.at(ci);
    const uint64_t p = stream_pos(m, z);
    if (p < ctx.out_offset) return make_error(Errc::kInternal, "ZRAN run reaches back before its checkpoint");
    lo = std::min(lo, p);
    hi = std::max(hi, p + z.ci.uncompressed_size);
    in_end = std::max(in_end, z.ci.compressed_offset + z.ci.compressed_size);
  }
  if (in_end < ctx.in_offset || hi - lo > format::kZranMaxContextOutput)
    return corrupt("ZRAN blob {}: a run from context {} spans {} bytes", blob.blob_id, first.zran_index, hi - lo);
  const uint64_t in_len = in_end - ctx.in_offset;
  if (in_len > kMaxZranFetch)
    return corrupt("ZRAN blob {}: context at {:#x} needs {} compressed bytes", blob.blob_id, ctx.in_offset, in_len);
  std::vector<uint8_t> in(in_len);
  if (Status rs = backend_read(backend, blob.blob_id, ctx.in_offset, in, bytes_fetched); !rs)
    return std::unexpected(std::move(rs).error().context(
        fmt::format("fetching gzip layer {} {:#x}+{}", blob.blob_id, ctx.in_offset, in_len)));
  std::vector<uint8_t> out(hi - lo);
  const format::InflatePoint at{ctx.ctx_bits, ctx.ctx_byte, m.dict(ctx)};
  if (Status is = format::inflate_from_checkpoint(at, in, lo - ctx.out_offset, out); !is)
    return std::unexpected(std::move(is).error().context(
        fmt::format("ZRAN blob {} context {}", blob.blob_id, first.zran_index)));
  for (uint32_t ci : cis) {
    const format::ZranChunk& z = m.chunks[ci];
    NYDUS_TRY(fn(ci, std::span<const uint8_t>(out).subspan(stream_pos(m, z) - lo, z.ci.uncompressed_size)));
  }
  return ok();
}

}  // namespace nydus::storage
