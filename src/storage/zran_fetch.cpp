#include "storage/zran_fetch.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>

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

// The tables cache file: the 4096-byte header, the ci array and the context
// table (format::zran_tables_size bytes), then for a framed ci buffer the
// window index (ci_zran_count + 1 u64 offsets).
fs::path tables_path(const fs::path& work_dir, const BlobInfo& blob) {
  return work_dir / (blob.blob_id + ".zran.tables");
}

bool framed(const BlobInfo& blob) { return blob.ci_compressor == format::Compressor::kZstd; }

std::shared_ptr<const format::ZranMeta> from_tables_cache(const BlobInfo& blob, const fs::path& path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec || size <= format::kBlobMetaHeaderSize ||
      size > format::kBlobMetaHeaderSize + 2 * format::zran_frames_head_bound(blob.chunk_count))
    return nullptr;
  std::vector<uint8_t> file(size);
  if (!read_exact(path, file)) return nullptr;
  const auto h = format::load<format::BlobMetaHeader>(file.data());
  if (!format::zran_header_matches(h, blob) || h.ci_zran_count > h.ci_entries) return nullptr;
  const uint64_t tables = format::zran_tables_size(h);
  const uint64_t index = framed(blob) ? 8 * (uint64_t(h.ci_zran_count) + 1) : 0;
  if (tables > size || size != format::kBlobMetaHeaderSize + tables + index) return nullptr;
  const auto body = std::span<const uint8_t>(file).subspan(format::kBlobMetaHeaderSize);
  auto m = format::parse_zran_tables(body.first(tables), h, limits_of(blob));
  if (!m) return nullptr;
  if (index) {
    m->window_frames.resize(h.ci_zran_count + 1);
    std::memcpy(m->window_frames.data(), body.data() + tables, index);
    if (!format::zran_window_frames_valid(m->window_frames, h, m->window_frames.front())) return nullptr;
  }
  return std::make_shared<const format::ZranMeta>(std::move(*m));
}

Status write_tables_cache(const fs::path& path, const format::BlobMetaHeader& h, std::span<const uint8_t> tables,
                          const std::vector<uint64_t>& window_frames) {
  std::vector<uint8_t> file(format::kBlobMetaHeaderSize, 0);
  std::memcpy(file.data(), &h, sizeof(h));
  file.insert(file.end(), tables.begin(), tables.end());
  const auto* w = reinterpret_cast<const uint8_t*>(window_frames.data());
  file.insert(file.end(), w, w + 8 * window_frames.size());
  return write_file_atomic(path, file);
}

// Whole: the ci buffer and header as fetched (`raw`), checked, cached in
// upstream's layout.
Result<std::shared_ptr<const format::ZranMeta>> from_whole(const BlobInfo& blob, std::span<const uint8_t> raw,
                                                            const fs::path& cache_path, uint64_t cache_size) {
  const std::string meta_id = format::to_hex(blob.blob_meta_digest);
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

}  // namespace

ZranDicts::ZranDicts(const format::ZranMeta& m, const BlobInfo& blob)
    : m_(m),
      meta_id_(format::to_hex(blob.blob_meta_digest)),
      ci_offset_(blob.ci_offset),
      have_(m.contexts.size()),
      busy_(m.contexts.size(), 0) {}

bool ZranDicts::loaded(uint32_t ctx) const {
  std::lock_guard lk(mu_);
  return ctx < have_.size() && have_[ctx];
}

Result<ZranDicts::Window> ZranDicts::get(Backend& backend, uint32_t ctx, uint64_t* bytes_fetched) {
  if (ctx >= have_.size()) return make_error(Errc::kInternal, "ZRAN context beyond the table");
  {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return !busy_[ctx]; });
    if (have_[ctx]) return have_[ctx];
    busy_[ctx] = 1;
  }
  // The tables' parser bounded the window inside the dictionary table, and
  // the frame index inside the stored buffer.
  const format::ZranContext& c = m_.contexts[ctx];
  auto w = std::make_shared<std::vector<uint8_t>>(c.dict_size);
  Status rs = ok();
  if (c.dict_size && !m_.window_frames.empty()) {
    const uint64_t at = m_.window_frames[ctx], len = m_.window_frames[ctx + 1] - at;
    const uint64_t base = m_.window_frames.front();
    std::vector<uint8_t> fetched;
    std::span<const uint8_t> frame;
    if (!len) {
      rs = corrupt("ZRAN window {}: no frame for {} bytes", ctx, c.dict_size);
    } else if (at - base + len <= m_.stored_windows.size()) {  // fetched with the head
      frame = std::span<const uint8_t>(m_.stored_windows).subspan(at - base, len);
    } else {
      fetched.resize(len);
      rs = backend_read(backend, meta_id_, ci_offset_ + at, fetched, bytes_fetched);
      frame = fetched;
    }
    if (rs) rs = format::decompress(format::Compressor::kZstd, frame, *w);
  } else if (c.dict_size) {
    rs = backend_read(backend, meta_id_, ci_offset_ + m_.dict_table_offset + c.dict_offset, *w, bytes_fetched);
  }
  {
    std::lock_guard lk(mu_);
    busy_[ctx] = 0;
    if (rs) {
      have_[ctx] = w;
      resident_.push_back(ctx);
      if (resident_.size() > kResident) {
        have_[resident_.front()].reset();  // a reader holding it keeps its copy
        resident_.pop_front();
      }
    }
  }
  cv_.notify_all();
  if (!rs)
    return std::unexpected(std::move(rs).error().context(fmt::format("fetching ZRAN window {} of {}", ctx, meta_id_)));
  return Window(std::move(w));
}

Result<std::shared_ptr<const format::ZranMeta>> load_zran_meta(const BlobInfo& blob, Backend& backend,
                                                                 const fs::path& work_dir, uint64_t* bytes_fetched) {
  if (blob.ci_compressed_size > blob.ci_uncompressed_size + format::zran_frames_head_bound(blob.chunk_count) ||
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
  if (auto m = from_tables_cache(blob, tables_path(work_dir, blob))) return m;

  if (blob.blob_meta_digest == format::Digest{})
    return errorf(Errc::kInvalidArgument,
                  "ZRAN blob {} names no meta blob: its bootstrap was inlined in the meta blob, so load it from a "
                  "file named by the meta blob's sha256, or merge it with --blob-digests",
                  blob.blob_id);
  const std::string meta_id = format::to_hex(blob.blob_meta_digest);
  const bool raw_ci = blob.ci_compressor == format::Compressor::kNone;
  if (!raw_ci && !framed(blob)) {  // fetched and decoded whole
    std::vector<uint8_t> raw(blob.ci_compressed_size + format::kBlobMetaHeaderSize);
    NYDUS_TRY(backend_read(backend, meta_id, blob.ci_offset, raw, bytes_fetched));
    return from_whole(blob, raw, cache_path, cache_size);
  }

  // The header and the head of the ci buffer, side by side. Raw: the tables
  // are in the head whatever the header says (at most one context per
  // chunk). Framed: the index says how long the head is; most heads (zstd
  // packs a ci array ~4x) fit this guess, else the rest follows.
  // A small framed buffer (sparse windows: a few hundred bytes each) comes
  // whole with its header in one request; its windows are then decoded from
  // memory on first use, one by one as from the backend.
  const bool whole = !raw_ci && blob.ci_compressed_size <= kZranWholeMeta;
  const uint64_t head_len =
      whole  ? blob.ci_compressed_size
      : raw_ci ? std::min<uint64_t>(blob.ci_compressed_size,
                                    uint64_t(blob.chunk_count) * (sizeof(format::ChunkInfoV2) +
                                                                  sizeof(format::ZranInflateContextOnDisk)))
               : std::min<uint64_t>(blob.ci_compressed_size, 8192 + uint64_t(blob.chunk_count) * 12);
  std::vector<uint8_t> head(head_len), hbytes(format::kBlobMetaHeaderSize);
  if (whole) {  // the header follows the ci buffer: one range for both
    head.resize(head_len + hbytes.size());
    NYDUS_TRY(backend_read(backend, meta_id, blob.ci_offset, head, bytes_fetched));
    std::memcpy(hbytes.data(), head.data() + head_len, hbytes.size());
    head.resize(head_len);
  } else {
    uint64_t header_fetched = 0;
    Status hs = ok();
    std::thread header_fetch([&] {
      hs = backend_read(backend, meta_id, blob.ci_offset + blob.ci_compressed_size, hbytes, &header_fetched);
    });
    Status ts = backend_read(backend, meta_id, blob.ci_offset, head, bytes_fetched);
    header_fetch.join();
    if (bytes_fetched) *bytes_fetched += header_fetched;
    NYDUS_TRY(std::move(hs));
    NYDUS_TRY(std::move(ts));
  }
  const auto h = format::load<format::BlobMetaHeader>(hbytes.data());
  if (!format::zran_header_matches(h, blob))
    return corrupt("ZRAN meta blob {}: header does not match the blob table", meta_id);
  if (raw_ci) {
    NYDUS_ASSIGN_OR_RETURN(auto m, format::parse_zran_tables(head, h, limits_of(blob)));
    NYDUS_TRY(write_tables_cache(tables_path(work_dir, blob), h,
                                 std::span<const uint8_t>(head).first(format::zran_tables_size(h)), {}));
    return std::make_shared<const format::ZranMeta>(std::move(m));
  }
  if (auto want = format::zran_frames_head_size(head); want && *want > head.size()) {
    if (*want > std::min<uint64_t>(blob.ci_compressed_size, format::zran_frames_head_bound(blob.chunk_count)))
      return corrupt("ZRAN meta blob {}: a framed head of {} bytes", meta_id, *want);
    const size_t had = head.size();
    head.resize(*want);
    NYDUS_TRY(backend_read(backend, meta_id, blob.ci_offset + had, std::span<uint8_t>(head).subspan(had),
                           bytes_fetched));
  }
  NYDUS_ASSIGN_OR_RETURN(auto fh, format::parse_zran_frames_head(head, h));
  if (!fh) {
    // One zstd frame (upstream's builder): the rest of it, then decoded whole.
    std::vector<uint8_t> raw(blob.ci_compressed_size + format::kBlobMetaHeaderSize);
    std::memcpy(raw.data(), head.data(), head.size());
    if (head.size() < blob.ci_compressed_size)
      NYDUS_TRY(backend_read(backend, meta_id, blob.ci_offset + head.size(),
                             std::span<uint8_t>(raw).subspan(head.size(), blob.ci_compressed_size - head.size()),
                             bytes_fetched));
    std::memcpy(raw.data() + blob.ci_compressed_size, hbytes.data(), hbytes.size());
    return from_whole(blob, raw, cache_path, cache_size);
  }
  NYDUS_ASSIGN_OR_RETURN(auto m, format::parse_zran_tables(fh->tables, h, limits_of(blob)));
  m.window_frames = std::move(fh->window_frames);
  NYDUS_TRY(write_tables_cache(tables_path(work_dir, blob), h, fh->tables, m.window_frames));
  if (whole) m.stored_windows.assign(head.begin() + int64_t(m.window_frames.front()), head.end());
  return std::make_shared<const format::ZranMeta>(std::move(m));
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

namespace {

struct Span {
  uint64_t lo = UINT64_MAX, hi = 0, in_end = 0;  // stream output [lo, hi), layer input up to in_end
  void add(const format::ZranMeta& m, const format::ZranChunk& z) {
    const uint64_t p = stream_pos(m, z);
    lo = std::min(lo, p);
    hi = std::max(hi, p + z.ci.uncompressed_size);
    in_end = std::max(in_end, z.ci.compressed_offset + z.ci.compressed_size);
  }
};

// Produce [span.lo, span.hi) from the cursor (whose position 0 is the stream
// offset `base`) and hand each of `cis` its bytes.
Status produce(format::InflateCursor& cur, const format::ZranMeta& m, uint64_t base, const Span& span,
               std::span<const uint32_t> cis, const ZranChunkFn& fn) {
  std::vector<uint8_t> out(span.hi - span.lo);
  NYDUS_TRY(cur.take(span.lo - base, out));
  for (uint32_t ci : cis) {
    const format::ZranChunk& z = m.chunks[ci];
    NYDUS_TRY(fn(ci, std::span<const uint8_t>(out).subspan(stream_pos(m, z) - span.lo, z.ci.uncompressed_size)));
  }
  return ok();
}

}  // namespace

Result<std::optional<ZranTail>> read_zran_run(const format::ZranMeta& m, const BlobInfo& blob, Backend& backend,
                                              ZranDicts* dicts, std::span<const uint32_t> cis, size_t head,
                                              const ZranChunkFn& fn, uint64_t* bytes_fetched) {
  if (cis.empty()) return std::nullopt;
  head = std::clamp<size_t>(head, 1, cis.size());
  const uint32_t zi = m.chunks.at(cis[0]).zran_index;
  const format::ZranContext& ctx = m.contexts.at(zi);
  // parse_zran_ci bounded every chunk inside its context and every context
  // inside the layer; the run only widens to the union of its chunks, all
  // at or after the first one's checkpoint in the stream (zran_run_end).
  Span all, first, rest;
  for (size_t i = 0; i < cis.size(); i++) {
    const format::ZranChunk& z = m.chunks.at(cis[i]);
    if (stream_pos(m, z) < ctx.out_offset) return make_error(Errc::kInternal, "ZRAN run reaches back before its checkpoint");
    all.add(m, z);
    (i < head ? first : rest).add(m, z);
  }
  if (all.in_end < ctx.in_offset || all.hi - all.lo > format::kZranMaxContextOutput)
    return corrupt("ZRAN blob {}: a run from context {} spans {} bytes", blob.blob_id, zi, all.hi - all.lo);
  if (all.in_end - ctx.in_offset > kMaxZranFetch)
    return corrupt("ZRAN blob {}: context at {:#x} needs {} compressed bytes", blob.blob_id, ctx.in_offset,
                   all.in_end - ctx.in_offset);
  // The rest goes on from where the head's fetch ends only if it lies
  // wholly after the head in the stream and in the layer (always, for a
  // sane meta); else it is one fetch as before.
  const bool split = head < cis.size() && rest.lo >= first.hi && rest.in_end > first.in_end;
  const uint64_t in_end = split ? first.in_end : all.in_end;

  // A window not fetched yet comes beside the layer's bytes: one round trip.
  std::optional<Result<ZranDicts::Window>> window;
  uint64_t window_fetched = 0;
  std::thread window_fetch;
  if (m.lazy_dicts) {
    if (!dicts) return make_error(Errc::kInternal, "ZRAN meta without windows and no way to fetch them");
    if (dicts->loaded(zi)) window.emplace(dicts->get(backend, zi, nullptr));
    else window_fetch = std::thread([&] { window.emplace(dicts->get(backend, zi, &window_fetched)); });
  }
  std::vector<uint8_t> in(in_end - ctx.in_offset);
  Status rs = backend_read(backend, blob.blob_id, ctx.in_offset, in, bytes_fetched);
  if (window_fetch.joinable()) window_fetch.join();
  if (bytes_fetched) *bytes_fetched += window_fetched;
  if (!rs)
    return std::unexpected(std::move(rs).error().context(
        fmt::format("fetching gzip layer {} {:#x}+{}", blob.blob_id, ctx.in_offset, in.size())));
  std::span<const uint8_t> dict;
  if (window) {
    if (!*window) return std::unexpected(std::move(*window).error());
    dict = ***window;
  } else {
    dict = m.dict(ctx);
  }
  auto context_error = [&](Error e) {
    return std::unexpected(std::move(e).context(fmt::format("ZRAN blob {} context {}", blob.blob_id, zi)));
  };
  auto cur = format::InflateCursor::start({ctx.ctx_bits, ctx.ctx_byte, dict});
  if (!cur) return context_error(std::move(cur).error());
  (*cur)->feed(std::move(in));
  if (Status ps = produce(**cur, m, ctx.out_offset, split ? first : all, split ? cis.first(head) : cis, fn); !ps)
    return context_error(std::move(ps).error());
  if (!split) return std::nullopt;
  ZranTail t;
  t.cursor = std::move(*cur);
  t.base = ctx.out_offset;
  t.zran_index = zi;
  t.next_in = first.in_end;
  t.in_end = rest.in_end;
  t.cis.assign(cis.begin() + int64_t(head), cis.end());
  return t;
}

Status finish_zran_tail(ZranTail& t, const format::ZranMeta& m, const BlobInfo& blob, Backend& backend,
                        const ZranChunkFn& fn, uint64_t* bytes_fetched) {
  std::vector<uint8_t> in(t.in_end - t.next_in);
  if (Status rs = backend_read(backend, blob.blob_id, t.next_in, in, bytes_fetched); !rs)
    return std::unexpected(std::move(rs).error().context(
        fmt::format("fetching gzip layer {} {:#x}+{}", blob.blob_id, t.next_in, in.size())));
  t.cursor->feed(std::move(in));
  Span rest;
  for (uint32_t ci : t.cis) rest.add(m, m.chunks.at(ci));
  if (Status ps = produce(*t.cursor, m, t.base, rest, t.cis, fn); !ps)
    return std::unexpected(std::move(ps).error().context(fmt::format("ZRAN blob {} context {}", blob.blob_id, t.zran_index)));
  return ok();
}

}  // namespace nydus::storage
