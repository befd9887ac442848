// `nydus-image create` from a directory or a layer tar: scan the tree, cut regular files
// into chunks (digest + compress on a pool of threads, stored in walk order),
// store identical chunks once, write the data blob, the bootstrap and
// optionally the blob-cache files (`<id>.blob.data`, `<id>.blob.meta`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"

namespace nydus::builder {

enum class SourceType {
  kDirectory,  // dir-rafs
  kTar,        // tar-rafs / targz-rafs: an OCI layer tar (any compression), "-" = stdin
  kTargzRef,   // targz-ref: a gzip layer referenced in place (ZRAN), see create_zran.h
  kEstargzToc, // estargztoc-ref: an eStargz TOC (stargz.index.json) whose layer is the data blob, see create_stargz.h
  kTarfs,      // tar-tarfs: a plain tar that is itself the data blob (512-byte blocks), see create_tarfs.h
};

struct CreateOptions {
  SourceType source_type = SourceType::kDirectory;
  std::filesystem::path source;
  std::filesystem::path bootstrap;       // -B; may be empty with --blob-inline-meta
  std::filesystem::path blob_dir;        // -D: blob written as <dir>/<blob id>
  std::filesystem::path blob_file;       // --blob
  std::filesystem::path blob_cache_dir;  // --blob-cache-dir
  format::Compressor compressor = format::Compressor::kZstd;
  format::Digester digester = format::Digester::kBlake3;
  uint32_t chunk_size = format::kDefaultChunkSize;
  bool encrypt = false;                  // --encrypt: AES-128-XTS blob, random key in the blob table
  uint32_t batch_size = 0;               // --batch-size: pack small single-chunk files into batches
  bool repeatable = false;
  bool blob_inline_meta = false;
  bool blob_toc = false;                 // --features blob-toc
  // --prefetch-policy fs|blob: files under these paths are stored first
  // (directory and tar sources; upstream does it for directories only); with
  // `prefetch_table` (fs) they also form the bootstrap's prefetch table.
  std::vector<std::string> prefetch_patterns;
  bool prefetch_table = true;
  unsigned threads = 0;                  // 0 = all cores
  // --chunk-dict: a bootstrap whose chunks are referenced, not stored again:
  // a chunk with the same digest and size points into the dictionary's blob
  // (which joins this image's blob table).
  std::filesystem::path chunk_dict;
  bool progress = false;                 // draw a progress line on stderr
  // --fs-version 5: a RAFS v5 bootstrap (format/bootstrap_v5_writer.h) and a
  // blob of chunks only; --aligned-chunk keeps uncompressed offsets 4 KiB
  // aligned (v5's default packs them, as upstream).
  uint32_t fs_version = 6;
  bool aligned_chunk = false;
  // estargztoc-ref, tar-tarfs: --blob-id (the layer's id, the data blob) and
  // --blob-data-size (the layer's size, bounding the last gzip member).
  std::string blob_id;
  uint64_t blob_data_size = 0;
};

struct CreateReport {
  std::vector<format::BlobInfo> blobs;   // 0 or 1 blob
  std::filesystem::path bootstrap;
  std::filesystem::path blob_path;
  uint64_t bootstrap_size = 0;
  uint64_t inodes = 0;
  uint64_t files = 0;
  uint64_t bytes_read = 0;               // regular-file bytes chunked
  uint64_t chunks_total = 0;             // chunk references
  uint64_t chunks_stored = 0;            // distinct chunks in the blob
  uint64_t chunks_from_dict = 0;         // chunk references served by the chunk dictionary
  std::vector<std::string> warnings;
  // Tar sources: directories the tar did not describe (see TarTree).
  std::vector<std::string> implicit_dirs;
};

Result<CreateReport> create_image(const CreateOptions& opts);

}  // namespace nydus::builder
