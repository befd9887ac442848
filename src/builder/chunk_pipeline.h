// Cuts files into chunks and turns each into (digest, crc32, stored bytes) on
// a bounded pool of threads, handing results back strictly in input order so
// the blob layout is deterministic. At most `window` chunks are in flight, so
// memory stays bounded (about window × 2 × chunk size).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/digest.h"
#include "format/layout.h"

namespace nydus::builder {

struct ChunkJob {
  uint32_t file = 0;      // caller's file number
  const std::string* path = nullptr;  // read [offset, offset+length) from this file, or
  uint64_t offset = 0;    // in the file
  uint32_t length = 0;    // uncompressed bytes
  std::span<const uint8_t> data;      // when path is null: the bytes themselves (streamed sources)
};

struct ChunkResult {
  const ChunkJob* job = nullptr;
  format::Digest digest{};
  uint32_t crc32 = 0;
  std::span<const uint8_t> raw;     // uncompressed bytes
  std::span<const uint8_t> stored;  // compressed if `compressed`, else == raw
  bool compressed = false;
};

struct PipelineOptions {
  format::Compressor compressor = format::Compressor::kZstd;
  format::Digester digester = format::Digester::kBlake3;
  unsigned threads = 0;  // 0 = hardware concurrency
  uint32_t max_chunk = format::kDefaultChunkSize;  // largest job length
};

// Runs `jobs` through the pool; `commit` is called on the calling thread for
// each result in job order. The spans are valid only during the call. The
// first error (from a worker or from `commit`) stops the pipeline.
Status run_chunk_pipeline(const std::vector<ChunkJob>& jobs, const PipelineOptions& opts,
                          const std::function<Status(const ChunkResult&)>& commit);

}  // namespace nydus::builder
