#include "builder/create_image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "builder/chunk_dict.h"
#include "builder/chunk_pipeline.h"
#include "builder/create_stargz.h"
#include "builder/create_tarfs.h"
#include "builder/create_zran.h"
#include "builder/deferred_chunks.h"
#include "builder/prefetch_list.h"
#include "format/bootstrap.h"
#include "common/file_util.h"
#include "builder/source_tree.h"
#include "builder/tar_source.h"
#include "format/blob_reader.h"
#include "format/blob_writer.h"
#include "format/bootstrap_writer.h"
#include "format/bootstrap_v5_writer.h"
#include "common/io.h"

namespace nydus::builder {

namespace fs = std::filesystem;
using format::ChunkRecord;

namespace {


// The uncompressed layout of the blob, filled as chunks are stored.
class CacheDataFile {
 public:
  ~CacheDataFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status open(const fs::path& path) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) return sys_error("create " + path.string());
    return ok();
  }
  bool is_open() const { return fd_ >= 0; }
  Status write_at(uint64_t off, std::span<const uint8_t> data) {
    return write_full_at(fd_, off, data, "write " + path_.string());
  }
  Status finish(uint64_t size, const fs::path& final_path) {
    if (::ftruncate(fd_, off_t(size)) != 0) return sys_error("truncate " + path_.string());
    if (::close(fd_) != 0) return sys_error("close " + path_.string());
    fd_ = -1;
    if (::rename(path_.c_str(), final_path.c_str()) != 0) return sys_error("rename " + path_.string());
    return ok();
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

// Files in blob order: those under a prefetch pattern first (by pattern, in
// walk order inside a pattern), then the rest in walk order.
std::vector<uint32_t> file_order(const SourceTree& t, const std::vector<std::string>& patterns) {
  std::vector<uint32_t> walk;
  for (uint32_t i : format::placement_order(t.nodes))
    if (S_ISREG(t.nodes[i].mode) && t.nodes[i].hardlink_of < 0 && t.nodes[i].size > 0) walk.push_back(i);
  if (patterns.empty()) return walk;
  std::vector<uint32_t> out;
  std::vector<bool> taken(t.nodes.size(), false);
  for (auto& p : patterns) {
    const std::string prefix = p == "/" ? "/" : p + "/";
    for (uint32_t i : walk) {
      const auto& ip = t.image_paths[i];
      if (!taken[i] && (ip == p || ip.starts_with(prefix))) {
        taken[i] = true;
        out.push_back(i);
      }
    }
  }
  for (uint32_t i : walk)
    if (!taken[i]) out.push_back(i);
  return out;
}

std::vector<uint8_t> ci_buffer(const std::vector<ChunkRecord>& stored) {
  std::vector<uint8_t> out(stored.size() * sizeof(format::ChunkInfoV1));
  for (size_t i = 0; i < stored.size(); i++) {
    format::DecodedChunkInfo d;
    d.compressed_offset = stored[i].compressed_offset;
    d.compressed_size = stored[i].compressed_size;
    d.uncompressed_offset = stored[i].uncompressed_offset;
    d.uncompressed_size = stored[i].uncompressed_size;
    auto e = format::encode_ci_v1(d);
    std::memcpy(out.data() + i * sizeof(e), &e, sizeof(e));
  }
  return out;
}

class Progress {
 public:
  Progress(bool on, uint64_t total) : on_(on), total_(total) {}
  void add(uint64_t n) {
    done_ += n;
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200) && done_ < total_) return;
    last_ = now;
    std::fprintf(stderr, "\rchunking %llu / %llu MiB (%3.0f%%)", (unsigned long long)(done_ >> 20),
                 (unsigned long long)(total_ >> 20), total_ ? 100.0 * double(done_) / double(total_) : 100.0);
  }
  void done() {
    if (on_) std::fputc('\n', stderr);
  }

 private:
  bool on_;
  uint64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

// What the directory and tar builds share: dedup of chunks, the data blob,
// the blob-cache files and the bootstrap.
class ImageBuild {
 public:
  explicit ImageBuild(const CreateOptions& o) : o_(o) {}

  Status open() {
    // A --blob that is a FIFO or a character device (the containerd converter
    // hands nydus-image a FIFO) is written in place, front to back; a regular
    // file goes through a temporary name. With only --blob-cache-dir the blob
    // is a scratch file there, removed at the end.
    struct stat st{};
    stream_blob_ = !o_.blob_file.empty() && ::stat(o_.blob_file.c_str(), &st) == 0 &&
                   (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode));
    cache_only_ = o_.blob_file.empty() && o_.blob_dir.empty();
    if (stream_blob_) blob_tmp_ = o_.blob_file;
    else if (!o_.blob_file.empty()) blob_tmp_ = fs::path(o_.blob_file.string() + ".tmp");
    else if (cache_only_) blob_tmp_ = o_.blob_cache_dir / ".nydus-blob.tmp";
    else blob_tmp_ = o_.blob_dir / ".nydus-blob.tmp";
    if (!o_.blob_dir.empty()) {
      std::error_code ec;
      fs::create_directories(o_.blob_dir, ec);
      if (ec) return errorf(Errc::kIo, "create {}: {}", o_.blob_dir.string(), ec.message());
    }
    if (cache_only_) {
      std::error_code ec;
      fs::create_directories(o_.blob_cache_dir, ec);
      if (ec) return errorf(Errc::kIo, "create {}: {}", o_.blob_cache_dir.string(), ec.message());
    }
    format::BlobWriterOptions bo;
    bo.compressor = o_.compressor;
    bo.digester = o_.digester;
    bo.chunk_size = o_.chunk_size;
    bo.tar_headers = o_.blob_inline_meta || o_.blob_toc;
    bo.toc = o_.blob_toc || o_.blob_inline_meta;
    bo.inline_bootstrap = o_.blob_inline_meta;
    bo.blob_meta = o_.fs_version != 5;
    bo.batch_size = o_.batch_size;
    if (o_.encrypt) {
      NYDUS_ASSIGN_OR_RETURN(auto key, format::random_xts_key());
      bo.cipher = key;
    }
    NYDUS_ASSIGN_OR_RETURN(blob_, format::BlobWriter::create(blob_tmp_, bo));
    if (!o_.blob_cache_dir.empty()) {
      std::error_code ec;
      fs::create_directories(o_.blob_cache_dir, ec);
      if (ec) return errorf(Errc::kIo, "create {}: {}", o_.blob_cache_dir.string(), ec.message());
      NYDUS_TRY(cache_.open(o_.blob_cache_dir / ".nydus-blob-data.tmp"));
    }
    if (!o_.chunk_dict.empty()) NYDUS_TRY(load_dict());
    return ok();
  }

  Status load_dict() {
    NYDUS_ASSIGN_OR_RETURN(ChunkDict d, ChunkDict::open(o_.chunk_dict, o_.digester));
    dict_ = std::move(d);
    return ok();
  }

  // Identical chunks (same digest and size) are stored once, and not at all
  // when the chunk dictionary has them.
  Status store(const ChunkResult& r) {
    const uint32_t usize = r.job->length;  // raw may be left out of a replayed chunk (DeferredChunks)
    if (file_chunks_.size() <= r.job->file) file_chunks_.resize(size_t(r.job->file) + 1);
    if (const ChunkRecord* d = dict_ ? dict_->find(r.digest, usize) : nullptr) {
      file_chunks_[r.job->file].push_back(*d);
      rep.chunks_total++;
      rep.chunks_from_dict++;
      rep.bytes_read += usize;
      return ok();
    }
    auto [it, fresh] = dedup_.try_emplace({r.digest, usize});
    if (fresh) {
      // Upstream batches a chunk that is a whole file (its only chunk) and
      // smaller than half a batch.
      if (o_.batch_size != 0 && r.job->offset == 0 && usize < o_.batch_size / 2 && usize < o_.chunk_size) {
        NYDUS_ASSIGN_OR_RETURN(it->second, blob_->add_batch_chunk(r.raw, r.digest, r.crc32));
      } else {
        NYDUS_ASSIGN_OR_RETURN(it->second, blob_->add_chunk(r.stored, r.compressed, usize, r.digest, r.crc32));
      }
      stored_.push_back(it->second);
      if (cache_.is_open()) NYDUS_TRY(cache_.write_at(it->second.uncompressed_offset, r.raw));
    }
    file_chunks_[r.job->file].push_back(it->second);
    rep.chunks_total++;
    rep.bytes_read += usize;
    return ok();
  }

  // `origin[i]`: the file number whose chunks node i gets (identity when empty).
  Result<CreateReport> finish(SourceTree tree, const std::vector<uint32_t>& origin,
                              std::vector<uint32_t> prefetch) {
    rep.chunks_stored = stored_.size();
    rep.inodes = tree.nodes.size();
    const bool has_blob = !stored_.empty();
    // The blob table: this build's blob (if it stored anything), then the
    // dictionary blobs some chunk points into, in order of first use.
    const std::vector<format::BlobInfo> dict_used =
        dict_ ? dict_->assign_blobs(file_chunks_, uint32_t(has_blob)) : std::vector<format::BlobInfo>{};
    rep.warnings.insert(rep.warnings.end(), tree.warnings.begin(), tree.warnings.end());
    format::BootstrapSpec spec;
    spec.prefetch_nodes = std::move(prefetch);
    spec.nodes = std::move(tree.nodes);
    for (size_t i = 0; i < spec.nodes.size(); i++) {
      const size_t f = origin.empty() ? i : origin[i];
      if (f < file_chunks_.size()) spec.nodes[i].chunks = f == i ? std::move(file_chunks_[f]) : file_chunks_[f];
    }
    // Hardlink aliases carry their leader's data.
    for (auto& n : spec.nodes)
      if (n.hardlink_of >= 0) n.chunks = spec.nodes[size_t(n.hardlink_of)].chunks;
    spec.chunk_size = o_.chunk_size;
    spec.compressor = o_.compressor;
    spec.digester = o_.digester;
    spec.explicit_uid_gid = !o_.repeatable;

    // Without chunks there is no blob of its own, as upstream does; but an
    // inline-meta build still writes one (it carries the bootstrap), and a
    // FIFO's reader needs its bytes either way.
    const bool keep_blob = !cache_only_ && (has_blob || o_.blob_inline_meta || stream_blob_);
    NYDUS_ASSIGN_OR_RETURN(format::BlobInfo info, blob_->finish_meta());
    if (keep_blob && o_.blob_inline_meta) {
      // The bootstrap inside the blob cannot know the blob's final hash.
      format::BootstrapSpec inl = spec;
      inl.blobs.clear();
      if (has_blob) {
        format::BlobInfo pi = info;
        pi.blob_id.assign(64, format::kInlinedBlobIdPlaceholder);
        inl.blobs = {pi};
      }
      inl.blobs.insert(inl.blobs.end(), dict_used.begin(), dict_used.end());
      NYDUS_ASSIGN_OR_RETURN(auto boot, format::write_bootstrap(inl));
      NYDUS_TRY(blob_->append_bootstrap(boot.bytes));
    }
    NYDUS_ASSIGN_OR_RETURN(info, blob_->close());

    if (keep_blob) {
      rep.blob_path = !o_.blob_file.empty() ? o_.blob_file : o_.blob_dir / info.blob_id;
      if (!stream_blob_ && ::rename(blob_tmp_.c_str(), rep.blob_path.c_str()) != 0)
        return sys_error("rename blob to " + rep.blob_path.string());
    } else {
      ::unlink(blob_tmp_.c_str());
    }
    if (has_blob) {
      spec.blobs = {info};
      rep.blobs = {info};
      spec.blobs.insert(spec.blobs.end(), dict_used.begin(), dict_used.end());
      if (cache_.is_open()) {
        NYDUS_TRY(cache_.finish(info.uncompressed_size, o_.blob_cache_dir / (info.blob_id + ".blob.data")));
        auto meta = format::encode_blob_meta_cache(ci_buffer(stored_), info);
        NYDUS_TRY(write_file_atomic(o_.blob_cache_dir / (info.blob_id + ".blob.meta"), meta));
      }
    } else {
      spec.blobs = dict_used;
      if (cache_.is_open()) {
        NYDUS_TRY(cache_.finish(0, o_.blob_cache_dir / ".nydus-blob-data.tmp"));
        ::unlink((o_.blob_cache_dir / ".nydus-blob-data.tmp").c_str());
      }
    }

    std::vector<uint8_t> boot_bytes;
    if (o_.fs_version == 5) {
      if (has_blob) {
        // What upstream's v5 extended blob table records for a built blob.
        spec.blobs[0].features = format::blob_features::kCapTarToc;
        if (!o_.aligned_chunk) NYDUS_TRY(format::pack_uncompressed_offsets(stored_, 0, &spec));
        rep.blobs[0] = spec.blobs[0];
      }
      NYDUS_ASSIGN_OR_RETURN(boot_bytes, format::write_bootstrap_v5(spec));
    } else {
      NYDUS_ASSIGN_OR_RETURN(auto boot, format::write_bootstrap(spec));
      boot_bytes = std::move(boot.bytes);
    }
    rep.bootstrap_size = boot_bytes.size();
    if (!o_.bootstrap.empty()) {
      NYDUS_TRY(write_file_atomic(o_.bootstrap, boot_bytes));
      rep.bootstrap = o_.bootstrap;
    }
    return std::move(rep);
  }

  // Whether store() reads a chunk's raw bytes again (batch chunks, the blob-cache data file).
  bool needs_raw() const { return o_.batch_size != 0 || cache_.is_open(); }
  // A disk directory for scratch files of this build.
  fs::path scratch_dir() const {
    if (!o_.blob_dir.empty()) return o_.blob_dir;
    if (cache_only_) return o_.blob_cache_dir;
    if (!stream_blob_ && o_.blob_file.has_parent_path()) return o_.blob_file.parent_path();
    return stream_blob_ ? fs::temp_directory_path() : fs::current_path();
  }

  CreateReport rep;

 private:
  const CreateOptions& o_;
  fs::path blob_tmp_;
  bool stream_blob_ = false;  // --blob is a FIFO / character device: written in place
  bool cache_only_ = false;   // only --blob-cache-dir: the blob itself is scratch
  std::unique_ptr<format::BlobWriter> blob_;
  CacheDataFile cache_;
  std::map<std::pair<format::Digest, uint32_t>, ChunkRecord> dedup_;
  std::optional<ChunkDict> dict_;
  std::vector<ChunkRecord> stored_;
  std::vector<std::vector<ChunkRecord>> file_chunks_;  // by file number
};

Result<CreateReport> create_from_directory(const CreateOptions& o) {
  NYDUS_ASSIGN_OR_RETURN(SourceTree tree, scan_directory(o.source));

  // Chunk jobs in blob order.
  const std::vector<uint32_t> files = file_order(tree, o.prefetch_patterns);
  std::vector<ChunkJob> jobs;
  uint64_t total_bytes = 0;
  for (uint32_t f : files) {
    const uint64_t size = tree.nodes[f].size;
    for (uint64_t off = 0; off < size; off += o.chunk_size)
      jobs.push_back({f, &tree.paths[f], off, uint32_t(std::min<uint64_t>(o.chunk_size, size - off)), {}});
    total_bytes += size;
  }

  ImageBuild b(o);
  NYDUS_TRY(b.open());
  b.rep.files = files.size();
  Progress progress(o.progress, total_bytes);
  PipelineOptions po{o.compressor, o.digester, o.threads, o.chunk_size};
  NYDUS_TRY(run_chunk_pipeline(jobs, po, [&](const ChunkResult& r) -> Status {
    NYDUS_TRY(b.store(r));
    progress.add(r.raw.size());
    return ok();
  }));
  progress.done();
  std::vector<uint32_t> prefetch;
  if (o.prefetch_table) prefetch = prefetch_nodes(tree.image_paths, o.prefetch_patterns);
  return b.finish(std::move(tree), {}, std::move(prefetch));
}

// A tar is read once, front to back, so chunks are stored in tar order, not in
// the bootstrap's walk order. With prefetch patterns, though, the files under
// them go first (upstream stores a tar's data in stream order either way):
// the other files' chunks are set aside in a scratch file (DeferredChunks) and
// stored after the stream ends, so the daemon's prefetch reads one front run
// of the blob in a few large requests instead of one request per file.
// Data is batched (bounded memory) and each batch goes through the parallel
// pipeline. A file replaced by a later entry of the same path keeps its
// chunks in the blob, unreferenced.
Result<CreateReport> create_from_tar(const CreateOptions& o) {
  ImageBuild b(o);
  NYDUS_TRY(b.open());
  const PrefetchMatcher prefetch_match(o.prefetch_patterns);
  std::unique_ptr<DeferredChunks> later;
  if (!prefetch_match.empty() && !prefetch_match.covers_all()) {
    NYDUS_ASSIGN_OR_RETURN(later, DeferredChunks::create(b.scratch_dir(), b.needs_raw()));
  }
  std::vector<bool> prefetched;  // by tar node: under a prefetch pattern
  std::vector<bool> deferred;    // by job in this batch
  PipelineOptions po{o.compressor, o.digester, o.threads, o.chunk_size};
  const unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  const uint64_t batch_limit = std::max<uint64_t>(64ull << 20, uint64_t(threads) * 8 * o.chunk_size);
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<ChunkJob> jobs;
  uint64_t batch_bytes = 0;
  std::set<uint32_t> files;
  auto flush = [&]() -> Status {
    auto st = run_chunk_pipeline(jobs, po, [&](const ChunkResult& r) {
      return deferred[size_t(r.job - jobs.data())] ? later->add(r) : b.store(r);
    });
    jobs.clear();
    bufs.clear();
    deferred.clear();
    batch_bytes = 0;
    return st;
  };
  auto on_file = [&](uint32_t node, const std::string& image_path) {
    if (prefetched.size() <= node) prefetched.resize(size_t(node) + 1, false);
    prefetched[node] = prefetch_match.covers(image_path);
  };
  auto tt = scan_tar(
      o.source.string(), o.chunk_size,
      [&](uint32_t node, uint64_t off, std::vector<uint8_t> piece) -> Status {
        files.insert(node);
        batch_bytes += piece.size();
        bufs.push_back(std::move(piece));
        const auto& buf = bufs.back();
        jobs.push_back({node, nullptr, off, uint32_t(buf.size()), {buf.data(), buf.size()}});
        deferred.push_back(later && !(node < prefetched.size() && prefetched[node]));
        if (batch_bytes >= batch_limit) return flush();
        return ok();
      },
      {}, later ? TarFileFn(on_file) : TarFileFn());
  if (!tt) return std::unexpected(std::move(tt).error());
  NYDUS_TRY(flush());
  if (later) NYDUS_TRY(later->replay([&](const ChunkResult& r) { return b.store(r); }));
  b.rep.files = files.size();
  b.rep.implicit_dirs = std::move(tt->implicit_dirs);
  std::vector<uint32_t> prefetch;
  if (o.prefetch_table) prefetch = prefetch_nodes(tt->tree.image_paths, o.prefetch_patterns);
  return b.finish(std::move(tt->tree), tt->origin, std::move(prefetch));
}

}  // namespace

Result<CreateReport> create_image(const CreateOptions& o) {
  // No blob is written (the eStargz layer is the data blob): its own checks.
  if (o.source_type == SourceType::kEstargzToc) return create_estargz_toc_image(o);
  if (o.source_type == SourceType::kTarfs) return create_tarfs_image(o);  // nothing goes to -D either
  if (o.bootstrap.empty() && !o.blob_inline_meta)
    return make_error(Errc::kInvalidArgument, "a bootstrap path (-B) is required unless --blob-inline-meta is used");
  if (o.blob_dir.empty() && o.blob_file.empty() && o.blob_cache_dir.empty())
    return make_error(Errc::kInvalidArgument, "both --blob and --blob-dir or --blob-cache-dir are missing");
  if (o.blob_dir.empty() && o.blob_file.empty() && o.blob_inline_meta)
    return make_error(Errc::kInvalidArgument, "--blob-inline-meta needs --blob or --blob-dir");
  if (!std::has_single_bit(o.chunk_size) || o.chunk_size < format::kMinChunkSize || o.chunk_size > format::kMaxChunkSize)
    return errorf(Errc::kInvalidArgument, "chunk size {:#x} must be a power of two between 0x1000 and 0x1000000",
                  o.chunk_size);
  if (o.fs_version != 5 && o.fs_version != 6) return errorf(Errc::kInvalidArgument, "invalid fs-version: {}", o.fs_version);
  if (o.fs_version == 5) {
    // As upstream: ref conversions and the ToC are v6 only; inline meta and
    // the blob cache files are not written for v5 here (yet).
    if (o.source_type == SourceType::kTargzRef || o.source_type == SourceType::kEstargzToc)
      return make_error(Errc::kInvalidArgument, "ref conversion types (targz-ref, estargz-ref, estargztoc-ref) conflict with RAFS v5");
    if (o.blob_toc) return make_error(Errc::kInvalidArgument, "`--features blob-toc` can't be used with `--version 5`");
    if (o.blob_inline_meta) return make_error(Errc::kUnsupported, "--blob-inline-meta with --fs-version 5 is not supported");
    if (!o.blob_cache_dir.empty())
      return make_error(Errc::kUnsupported, "--blob-cache-dir with --fs-version 5 is not supported");
  }
  if (o.source_type == SourceType::kTargzRef) return create_zran_image(o);
  if (o.compressor == format::Compressor::kGzip)
    return make_error(Errc::kUnsupported, "gzip is not a chunk compressor (none, lz4_block, zstd)");
  return o.source_type == SourceType::kTar ? create_from_tar(o) : create_from_directory(o);
}

}  // namespace nydus::builder
