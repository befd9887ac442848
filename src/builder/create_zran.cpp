#include "builder/create_zran.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include "builder/chunk_dict.h"
#include "builder/prefetch_list.h"
#include "builder/tar_source.h"
#include "common/file_util.h"
#include "format/blob_meta_internal.h"
#include "format/bootstrap_writer.h"
#include "format/compress.h"
#include "format/digest.h"
#include "format/gzip_random.h"
#include "format/tar_header.h"
#include "format/zran_meta.h"

namespace nydus::builder {

namespace fs = std::filesystem;
using format::ChunkRecord;
using format::Digest;

namespace {

// One chunk of file data as the tar reader (libarchive) delivered it.
struct Piece {
  uint32_t node = 0;        // arena node (TarTree::stream_offset index)
  uint64_t stream_off = 0;  // in the uncompressed tar stream
  uint32_t size = 0;
  Digest digest{};          // sha256 of libarchive's bytes
};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Where a piece of file data sits in the uncompressed tar stream.
struct Extent {
  uint64_t start = 0;
  uint32_t size = 0;
};

// The chunk layout the tar scan (libarchive, inflating the layer itself)
// learns as it goes, handed to the inflate scan that places checkpoints,
// running beside it on the other core: a file's pieces are known as soon
// as its header is read, and the inflate scan waits only when it is ahead.
class LayoutFeed {
 public:
  explicit LayoutFeed(uint32_t chunk_size) : chunk_size_(chunk_size) {}

  // Tar scan: a file's data is [start, start + size). Files come in stream order.
  Status file(uint64_t start, uint64_t size) {
    std::lock_guard lk(mu_);
    if (cancelled_) return make_error(Errc::kInternal, "the layer's inflate scan failed first");
    files_.push_back({start, size});
    // Later files start after this one's data: every piece below it is known.
    if (start + size > known_below_) {
      known_below_ = start + size;
      if (waiting_for_ != 0 && known_below_ >= waiting_for_) cv_.notify_one();
    }
    return ok();
  }
  void finish() {
    std::lock_guard lk(mu_);
    known_below_ = UINT64_MAX;
    cv_.notify_one();
  }
  // Inflate scan: wait until every piece starting below `end` is known and
  // append those not handed out yet to `out`. Only pieces below `end`: a
  // header's size is untrusted (a tar can claim a petabyte file), and the
  // output reached, bounded by the layer, bounds the pieces.
  void wait_until(uint64_t end, std::vector<Extent>& out) {
    std::unique_lock lk(mu_);
    if (known_below_ < end) {
      waiting_for_ = end;
      cv_.wait(lk, [&] { return known_below_ >= end; });
      waiting_for_ = 0;
    }
    while (next_file_ < files_.size()) {
      const FileData& f = files_[next_file_];
      if (next_off_ >= f.size) {
        next_file_++;
        next_off_ = 0;
        continue;
      }
      if (f.start + next_off_ >= end) break;
      out.push_back({f.start + next_off_, uint32_t(std::min<uint64_t>(chunk_size_, f.size - next_off_))});
      next_off_ += chunk_size_;
    }
  }
  void cancel() {
    std::lock_guard lk(mu_);
    cancelled_ = true;
  }

 private:
  const uint32_t chunk_size_;
  std::mutex mu_;
  std::condition_variable cv_;
  struct FileData {
    uint64_t start = 0, size = 0;
  };
  std::vector<FileData> files_;
  size_t next_file_ = 0;   // where wait_until goes on handing out pieces
  uint64_t next_off_ = 0;  // (within files_[next_file_])
  uint64_t known_below_ = 0, waiting_for_ = 0;
  bool cancelled_ = false;
};

// The inflate scan's sink: hashes each piece's bytes as they go by in the
// decompressed stream; compared with what libarchive returned once both
// scans are done, so a wrong stream offset (the only thing the image
// records about where data is) fails the build instead of the reads.
class StreamHasher {
 public:
  explicit StreamHasher(LayoutFeed& feed) : feed_(feed) {}
  Status feed(std::span<const uint8_t> data) {
    uint64_t at = pos_;
    pos_ += data.size();
    feed_.wait_until(pos_, layout_);
    while (!data.empty() && k_ < layout_.size()) {
      const Extent& pc = layout_[k_];
      const uint64_t want = pc.start + filled_;
      if (want >= at + data.size()) break;
      if (want < at) return make_error(Errc::kInternal, "tar pieces out of stream order");
      const size_t skip = size_t(want - at);
      const size_t take = size_t(std::min<uint64_t>(data.size() - skip, pc.size - filled_));
      if (!hash_) hash_ = std::make_unique<format::Sha256Stream>();
      hash_->update(data.subspan(skip, take));
      filled_ += take;
      data = data.subspan(skip + take);
      at += skip + take;
      if (filled_ == pc.size) {
        digests_.push_back(hash_->finish());
        hash_.reset();
        filled_ = 0;
        k_++;
      }
    }
    return ok();
  }
  // Whether a piece starts below `end` that no earlier call reported
  // (index_gzip's wanted offsets).
  bool wanted_before(uint64_t end) {
    feed_.wait_until(end, layout_);
    const size_t first = w_;
    while (w_ < layout_.size() && layout_[w_].start < end) w_++;
    return w_ > first;
  }
  const std::vector<Extent>& layout() const { return layout_; }
  const std::vector<Digest>& digests() const { return digests_; }

 private:
  LayoutFeed& feed_;
  std::vector<Extent> layout_;
  std::vector<Digest> digests_;  // of layout_[0, k_)
  uint64_t pos_ = 0, filled_ = 0;
  size_t k_ = 0, w_ = 0;
  std::unique_ptr<format::Sha256Stream> hash_;
};

// First block end at or past `out`: the input needed to produce output up to it.
uint64_t input_end_for(const format::GzipIndex& idx, uint64_t out) {
  auto it = std::lower_bound(idx.boundaries.begin(), idx.boundaries.end(), out,
                             [](const format::GzipBoundary& b, uint64_t v) { return b.out < v; });
  return it == idx.boundaries.end() ? idx.in_size : it->in;
}

// Last block end at or before `out` (where inflate of that byte starts).
uint64_t input_start_for(const format::GzipIndex& idx, uint64_t out) {
  auto it = std::upper_bound(idx.boundaries.begin(), idx.boundaries.end(), out,
                             [](uint64_t v, const format::GzipBoundary& b) { return v < b.out; });
  return it == idx.boundaries.begin() ? 0 : std::prev(it)->in;
}

// The meta blob's sections after the ci buffer and header, as upstream lays
// out a SEPARATE blob (builder/src/core/blob.rs dump_meta_data, lib.rs
// dump_bootstrap and dump_toc): reverse-tar headers after each section with
// --blob-inline-meta or blob-toc, the chunk digest array with blob-toc, the
// bootstrap (zstd with blob-toc, raw without) with --blob-inline-meta, then
// the ToC. There is no "image.blob": the data is the layer, elsewhere.
class MetaSections {
 public:
  MetaSections(std::vector<uint8_t>& out, bool tar, bool toc) : out_(out), tar_(tar), toc_(toc) {}

  // A section already in `out_` from `off` to its end.
  void close_section(const char* name, uint32_t flags, const Digest& digest, uint64_t off, uint64_t stored,
                     uint64_t size) {
    if (tar_) {
      const format::TarHeader h = format::make_tar_header(name, out_.size() - off);
      out_.insert(out_.end(), h.begin(), h.end());
    }
    if (toc_) entry(name, flags, digest, off, stored, size);
  }
  void entry(const char* name, uint32_t flags, const Digest& digest, uint64_t off, uint64_t stored, uint64_t size) {
    format::TocEntry e;
    std::memset(&e, 0, sizeof(e));
    e.flags = flags;
    std::memcpy(e.name, name, std::min(std::strlen(name), sizeof(e.name)));
    std::memcpy(e.digest, digest.data(), 32);
    e.compressed_offset = off;
    e.compressed_size = stored;
    e.uncompressed_size = size;
    toc_entries_.push_back(e);
  }
  void append(std::span<const uint8_t> d) { out_.insert(out_.end(), d.begin(), d.end()); }
  // The ToC and its header; returns (size, sha256) for the blob table.
  std::pair<uint32_t, Digest> finish_toc() {
    const auto* p = reinterpret_cast<const uint8_t*>(toc_entries_.data());
    const size_t n = toc_entries_.size() * sizeof(format::TocEntry);
    const format::TarHeader h = format::make_tar_header(format::kTarNameToc, n);
    format::Sha256Stream hash;
    hash.update(std::span(p, n));
    hash.update(h);
    out_.insert(out_.end(), p, p + n);
    out_.insert(out_.end(), h.begin(), h.end());
    return {uint32_t(n + h.size()), hash.finish()};
  }

 private:
  std::vector<uint8_t>& out_;
  bool tar_, toc_;
  std::vector<format::TocEntry> toc_entries_;
};

}  // namespace

Result<CreateReport> create_zran_image(const CreateOptions& o) {
  if (o.source.empty() || o.source == "-")
    return make_error(Errc::kInvalidArgument, "--type targz-ref needs the gzip layer as a file");
  if (o.chunk_size > kZranCheckpointSpan * 4)
    return errorf(Errc::kInvalidArgument, "--type targz-ref: chunk size {:#x} above 4 MiB", o.chunk_size);

  // --chunk-dict: chunks the dictionary holds are read from its blobs, not
  // from this layer (upstream's deduplicate_chunk against the global dict).
  // Its chunks must be sha256 ones, as a ref layer's are.
  std::optional<ChunkDict> dict;
  if (!o.chunk_dict.empty()) {
    NYDUS_ASSIGN_OR_RETURN(dict, ChunkDict::open(o.chunk_dict, format::Digester::kSha256));
  }

  Fd fd(::open(o.source.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return sys_error("open " + o.source.string());
  uint8_t magic[3] = {};
  if (::pread(fd.get(), magic, 3, 0) != 3 || magic[0] != 0x1f || magic[1] != 0x8b || magic[2] != 8)
    return errorf(Errc::kInvalidArgument, "--type targz-ref: {} is not gzip", o.source.string());

  // Two scans of the layer, side by side. The tar scan (another thread):
  // the tree and each chunk's bytes, as libarchive reads the layer. The
  // inflate scan (here): checkpoints placed before chunk starts, the layer's
  // sha256 (its blob id), and every piece's bytes hashed at its stream offset.
  LayoutFeed feed(o.chunk_size);
  std::vector<Piece> pieces;
  Result<TarTree> tt = std::unexpected(make_error(Errc::kInternal, "tar scan did not run").error());
  std::thread tar_scan([&] {
    tt = scan_tar(
        o.source.string(), o.chunk_size,
        [&](uint32_t node, uint64_t off, std::vector<uint8_t> piece) -> Status {
          pieces.push_back({node, off, uint32_t(piece.size()), format::sha256(piece)});
          return ok();
        },
        {}, {}, [&](uint32_t, uint64_t start, uint64_t size) { return feed.file(start, size); });
    feed.finish();  // also on failure: the inflate scan must not wait for it
  });
  format::Sha256Stream layer_hash;
  StreamHasher hasher(feed);
  auto idx = format::index_gzip(
      [&](std::span<uint8_t> buf) -> Result<size_t> {
        for (;;) {
          const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return sys_error("read " + o.source.string());
          layer_hash.update(buf.first(size_t(n)));
          return size_t(n);
        }
      },
      [&](std::span<const uint8_t> piece) { return hasher.feed(piece); }, kZranCheckpointSpan,
      format::GzipWantedFn([&](uint64_t end) -> Result<bool> { return hasher.wanted_before(end); }));
  if (!idx) feed.cancel();
  tar_scan.join();
  if (!tt) return std::unexpected(std::move(tt).error());
  if (!idx) return std::unexpected(std::move(idx).error().context(o.source.string()));

  for (Piece& p : pieces) {
    const uint64_t base = p.node < tt->stream_offset.size() ? tt->stream_offset[p.node] : kNoStreamOffset;
    if (base == kNoStreamOffset)
      return make_error(Errc::kUnsupported, "--type targz-ref: the layer has a sparse file (its data is not contiguous)");
    p.stream_off = base + p.stream_off;
  }
  // The inflate scan saw the same pieces at the same stream offsets, with
  // the bytes libarchive returned (overlapping pieces already failed it:
  // "tar pieces out of stream order").
  const auto& layout = hasher.layout();
  if (layout.size() != pieces.size())
    return errorf(Errc::kInternal, "tar scan read {} data pieces, the layout had {}", pieces.size(), layout.size());
  if (hasher.digests().size() != pieces.size()) return corrupt("tar stream ends before the data of its last file");
  for (size_t i = 0; i < pieces.size(); i++) {
    if (layout[i].start != pieces[i].stream_off || layout[i].size != pieces[i].size)
      return errorf(Errc::kInternal, "tar data piece {} at {:#x}+{} in the layout, {:#x}+{} as read", i,
                    layout[i].start, layout[i].size, pieces[i].stream_off, pieces[i].size);
    if (hasher.digests()[i] != pieces[i].digest)
      return corrupt("file data at tar stream offset {:#x}+{} differs from what the tar reader returned",
                     pieces[i].stream_off, pieces[i].size);
  }

  CreateReport rep;
  format::BootstrapSpec spec;
  spec.chunk_size = o.chunk_size;
  spec.compressor = format::Compressor::kGzip;  // upstream: the only compressor of a ref blob
  spec.digester = format::Digester::kSha256;
  spec.explicit_uid_gid = !o.repeatable;

  // Chunks → contexts: each chunk inflates from the last checkpoint at or
  // before its first byte; a context is a checkpoint some chunk uses, its
  // spans the union of its chunks'.
  std::vector<format::ZranChunk> zchunks;
  std::vector<format::ZranContext> contexts;
  std::vector<std::vector<uint8_t>> dicts;
  std::vector<std::vector<ChunkRecord>> file_chunks;
  uint64_t uoff = 0;
  int64_t last_cp = -1;
  // Identical chunks (same digest and size) share the first one's ci entry,
  // as upstream's deduplicate_chunk does before allocating a ci index; the
  // chunk table (one record per digest) and merge rely on it.
  std::map<std::pair<Digest, uint32_t>, ChunkRecord> seen;
  std::vector<Digest> stored_digests;
  for (uint32_t i = 0; i < pieces.size(); i++) {
    const Piece& p = pieces[i];
    if (file_chunks.size() <= p.node) file_chunks.resize(size_t(p.node) + 1);
    if (const ChunkRecord* d = dict ? dict->find(p.digest, p.size) : nullptr) {
      file_chunks[p.node].push_back(*d);
      rep.chunks_from_dict++;
      continue;
    }
    if (auto d = seen.find({p.digest, p.size}); d != seen.end()) {
      file_chunks[p.node].push_back(d->second);
      continue;
    }
    const uint64_t end = p.stream_off + p.size;
    auto it = std::upper_bound(idx->checkpoints.begin(), idx->checkpoints.end(), p.stream_off,
                               [](uint64_t v, const format::GzipCheckpoint& c) { return v < c.out_offset; });
    if (it == idx->checkpoints.begin()) return make_error(Errc::kInternal, "no checkpoint before file data");
    const int64_t cp_i = int64_t(std::prev(it) - idx->checkpoints.begin());
    const format::GzipCheckpoint& cp = idx->checkpoints[size_t(cp_i)];
    if (cp_i != last_cp) {
      format::ZranContext c;
      c.in_offset = cp.in_offset;
      c.out_offset = cp.out_offset;
      c.ctx_bits = cp.bits;
      c.ctx_byte = cp.prev_byte;
      contexts.push_back(c);
      dicts.push_back(cp.window);
      last_cp = cp_i;
    }
    format::ZranContext& ctx = contexts.back();
    const uint64_t in_end = input_end_for(*idx, end);
    const uint64_t in_start = std::max(cp.in_offset, std::min(input_start_for(*idx, p.stream_off), in_end - 1));
    if (end - ctx.out_offset > format::kZranMaxContextOutput || in_end - ctx.in_offset > UINT32_MAX ||
        in_end - in_start > 0xFF'FFFF)
      return errorf(Errc::kUnsupported,
                    "--type targz-ref: a deflate block at {:#x} is too long for random access", ctx.in_offset);
    ctx.out_len = std::max<uint32_t>(ctx.out_len, uint32_t(end - ctx.out_offset));
    ctx.in_len = std::max<uint32_t>(ctx.in_len, uint32_t(in_end - ctx.in_offset));

    format::ZranChunk z;
    z.ci.compressed_offset = in_start;
    z.ci.compressed_size = uint32_t(in_end - in_start);
    z.ci.uncompressed_offset = uoff;
    z.ci.uncompressed_size = p.size;
    z.ci.compressed = true;
    z.zran_index = uint32_t(contexts.size() - 1);
    z.zran_offset = uint32_t(p.stream_off - ctx.out_offset);
    zchunks.push_back(z);

    ChunkRecord r;
    r.digest = p.digest;
    r.blob_index = 0;
    r.ci_index = uint32_t(zchunks.size() - 1);
    r.compressed_offset = z.ci.compressed_offset;
    r.compressed_size = z.ci.compressed_size;
    r.uncompressed_offset = uoff;
    r.uncompressed_size = p.size;
    r.compressed = true;
    file_chunks[p.node].push_back(r);
    seen.emplace(std::pair{p.digest, p.size}, r);
    stored_digests.push_back(p.digest);
    uoff = format::align_up(uoff + p.size, format::kBlockSize);
  }

  // The blob table: the layer (when a chunk is read from it), then the
  // dictionary's blobs some chunk uses, in order of first use.
  const bool has_blob = !zchunks.empty();
  std::vector<format::BlobInfo> dict_used;
  if (dict) dict_used = dict->assign_blobs(file_chunks, uint32_t(has_blob));
  spec.blobs = dict_used;  // the layer's goes first below, when it has one

  // The tree first: an inlined bootstrap is written with the meta blob.
  rep.files = 0;
  for (const auto& fc : file_chunks) rep.files += !fc.empty();
  rep.chunks_total = pieces.size();
  rep.chunks_stored = zchunks.size();
  for (const Piece& p : pieces) rep.bytes_read += p.size;
  rep.inodes = tt->tree.nodes.size();
  rep.warnings = tt->tree.warnings;
  rep.implicit_dirs = tt->implicit_dirs;
  if (o.prefetch_table) spec.prefetch_nodes = prefetch_nodes(tt->tree.image_paths, o.prefetch_patterns);
  spec.nodes = std::move(tt->tree.nodes);
  for (size_t i = 0; i < spec.nodes.size(); i++) {
    const size_t f = tt->origin.empty() ? i : tt->origin[i];
    if (f < file_chunks.size()) spec.nodes[i].chunks = file_chunks[f];
  }
  for (auto& n : spec.nodes)
    if (n.hardlink_of >= 0) n.chunks = spec.nodes[size_t(n.hardlink_of)].chunks;

  // The bootstrap section of an inline-meta blob: zstd with blob-toc, raw
  // without (upstream's dump_bootstrap), with the blob table as spec has it.
  auto append_bootstrap = [&](MetaSections& sec, std::vector<uint8_t>& meta_blob) -> Status {
    NYDUS_ASSIGN_OR_RETURN(auto inl, format::write_bootstrap(spec));
    std::vector<uint8_t> packed;
    std::span<const uint8_t> stored = inl.bytes;
    uint32_t flags = format::toc_flags::kNone;
    if (o.blob_toc) {
      NYDUS_ASSIGN_OR_RETURN(bool shrank, format::compress(format::Compressor::kZstd, inl.bytes, packed));
      if (shrank) {
        stored = packed;
        flags = format::toc_flags::kZstd;
      }
    }
    const uint64_t off = meta_blob.size();
    sec.append(stored);
    sec.close_section(format::kTarNameBootstrap, flags, format::sha256(inl.bytes), off, stored.size(),
                      inl.bytes.size());
    return ok();
  };
  // --blob FILE, or -D DIR/<sha256 of the meta blob>.
  auto write_meta_blob = [&](const std::vector<uint8_t>& meta_blob, const Digest& digest) -> Status {
    if (o.blob_file.empty() && o.blob_dir.empty()) return ok();
    fs::path out = o.blob_file;
    if (out.empty()) {
      std::error_code ec;
      fs::create_directories(o.blob_dir, ec);
      if (ec) return errorf(Errc::kIo, "create {}: {}", o.blob_dir.string(), ec.message());
      out = o.blob_dir / format::to_hex(digest);
    }
    NYDUS_TRY(write_file_atomic(out, meta_blob));
    rep.blob_path = out;
    return ok();
  };

  if (has_blob) {
    format::BlobInfo info;
    info.blob_id = format::to_hex(layer_hash.finish());
    info.chunk_size = o.chunk_size;
    info.chunk_count = uint32_t(zchunks.size());
    info.compressor = format::Compressor::kGzip;
    info.digester = format::Digester::kSha256;
    info.features = format::blob_features::kAligned | format::blob_features::kChunkInfoV2 |
                    format::blob_features::kZran | format::blob_features::kSeparate;
    // Upstream's BuildContext: CAP_TAR_TOC with either option, HAS_TAR_HEADER
    // with both, INLINED_FS_META with the bootstrap inside, HAS_TOC and
    // INLINED_CHUNK_DIGEST with the ToC.
    const bool tar = o.blob_inline_meta || o.blob_toc;
    if (tar) info.features |= format::blob_features::kCapTarToc | format::blob_features::kHasTarHeader;
    if (o.blob_inline_meta) info.features |= format::blob_features::kInlinedFsMeta;
    if (o.blob_toc) info.features |= format::blob_features::kHasToc | format::blob_features::kInlinedChunkDigest;
    info.compressed_size = idx->in_size;
    info.uncompressed_size = uoff;

    const std::vector<uint8_t> ci = format::encode_zran_ci(zchunks, contexts, dicts);
    // As zstd frames, the tables apart from each window (encode_zran_ci_frames):
    // one buffer to any zstd decoder, and a reader fetches the tables at
    // mount and each window on first use. The windows are most of it (32 KiB
    // per checkpoint; 38 MB raw, 12 MB compressed for a 396 MB layer).
    const uint64_t tables_size =
        uint64_t(zchunks.size()) * sizeof(format::ChunkInfoV2) + contexts.size() * sizeof(format::ZranInflateContextOnDisk);
    NYDUS_ASSIGN_OR_RETURN(std::vector<uint8_t> meta_blob, format::encode_zran_ci_frames(ci, tables_size, dicts));
    info.ci_compressor = format::Compressor::kZstd;
    if (meta_blob.size() >= ci.size()) {  // a tiny layer: raw, as upstream stores what does not compress
      meta_blob = ci;
      info.ci_compressor = format::Compressor::kNone;
    }
    info.ci_offset = 0;
    info.ci_compressed_size = meta_blob.size();
    info.ci_uncompressed_size = ci.size();

    format::BlobMetaHeader h;
    std::memset(&h, 0, sizeof(h));
    h.magic = h.magic2 = format::kBlobMetaMagic;
    h.features = info.features;
    h.ci_compressor = uint32_t(info.ci_compressor);
    h.ci_entries = info.chunk_count;
    h.ci_offset = 0;
    h.ci_compressed_size = info.ci_compressed_size;
    h.ci_uncompressed_size = info.ci_uncompressed_size;
    h.ci_zran_offset = uint64_t(zchunks.size()) * sizeof(format::ChunkInfoV2);
    h.ci_zran_size = ci.size() - h.ci_zran_offset;
    h.ci_zran_count = uint32_t(contexts.size());
    const auto* hp = reinterpret_cast<const uint8_t*>(&h);
    meta_blob.insert(meta_blob.end(), hp, hp + sizeof(h));
    // What we wrote must read back (and the reader bounds it like any image).
    {
      auto back = format::parse_zran_ci(ci, h, {info.compressed_size, info.uncompressed_size});
      if (!back) return std::unexpected(std::move(back).error().context("re-reading the ZRAN meta just built"));
    }
    MetaSections sec(meta_blob, tar, o.blob_toc);
    sec.close_section(format::kTarNameBlobMeta, format::blob_internal::toc_flag_for(info.ci_compressor),
                      format::sha256(ci), 0, info.ci_compressed_size, info.ci_uncompressed_size);
    if (o.blob_toc) {
      // The header's entry sits inside the blob.meta section (no tar header of its own).
      sec.entry(format::kTarNameBlobMetaHeader, format::toc_flags::kNone, format::sha256(std::span(hp, sizeof(h))),
                info.ci_compressed_size, sizeof(h), sizeof(h));
      std::vector<uint8_t> digests;
      digests.reserve(pieces.size() * sizeof(Digest));
      for (const Digest& d : stored_digests) digests.insert(digests.end(), d.begin(), d.end());
      const uint64_t off = meta_blob.size();
      sec.append(digests);
      sec.close_section(format::kTarNameBlobDigest, format::toc_flags::kNone, format::sha256(digests), off,
                        digests.size(), digests.size());
    }
    if (o.blob_inline_meta) {
      // As upstream, the bootstrap inside cannot name the blob holding it: the
      // meta digest and size stay zero (readers take the meta blob's id from
      // its file name), and the ToC is written after it.
      info.blob_meta_digest = Digest{};
      info.blob_meta_size = 0;
      spec.blobs.insert(spec.blobs.begin(), info);
      NYDUS_TRY(append_bootstrap(sec, meta_blob));
      spec.blobs.erase(spec.blobs.begin());
    }
    // The bootstrap (-B) is the one inside: written before the ToC existed.
    const format::BlobInfo boot_info = info;
    if (o.blob_toc) std::tie(info.toc_size, info.toc_digest) = sec.finish_toc();
    const Digest meta_digest = format::sha256(meta_blob);
    if (!o.blob_inline_meta) {
      info.blob_meta_digest = meta_digest;
      info.blob_meta_size = meta_blob.size();
    }

    NYDUS_TRY(write_meta_blob(meta_blob, meta_digest));
    if (!o.blob_cache_dir.empty()) {
      // Upstream's cache file: the uncompressed ci buffer padded to 4 KiB, then the header.
      std::error_code ec;
      fs::create_directories(o.blob_cache_dir, ec);
      if (ec) return errorf(Errc::kIo, "create {}: {}", o.blob_cache_dir.string(), ec.message());
      std::vector<uint8_t> cache(format::align_up(ci.size(), format::kBlockSize), 0);
      std::memcpy(cache.data(), ci.data(), ci.size());
      cache.insert(cache.end(), hp, hp + sizeof(h));
      NYDUS_TRY(write_file_atomic(o.blob_cache_dir / (info.blob_id + ".blob.meta"), cache));
    }
    spec.blobs.insert(spec.blobs.begin(), o.blob_inline_meta ? boot_info : info);
    rep.blobs = {info};
  } else if (o.blob_inline_meta) {
    // No chunk read from the layer (no file data, or all of it in the chunk
    // dictionary), so no blob meta, and the blob table holds the dictionary's
    // blobs at most; the bootstrap still gets its meta blob (upstream's
    // dump_bootstrap creates the blob for it), which the converter lists as
    // the layer's Nydus blob.
    std::vector<uint8_t> meta_blob;
    MetaSections sec(meta_blob, true, o.blob_toc);
    NYDUS_TRY(append_bootstrap(sec, meta_blob));
    if (o.blob_toc) (void)sec.finish_toc();
    NYDUS_TRY(write_meta_blob(meta_blob, format::sha256(meta_blob)));
  }

  NYDUS_ASSIGN_OR_RETURN(auto boot, format::write_bootstrap(spec));
  rep.bootstrap_size = boot.bytes.size();
  if (!o.bootstrap.empty()) {
    NYDUS_TRY(write_file_atomic(o.bootstrap, boot.bytes));
    rep.bootstrap = o.bootstrap;
  }
  return rep;
}

}  // namespace nydus::builder
