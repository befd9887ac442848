// Chunks a build has cut, digested and compressed but wants later in the blob.
// A tar is read once, front to back, yet a prefetch list asks for the listed
// files' data at the front of the blob (one contiguous run the daemon fetches
// in a few large requests). So while the tar streams by, the chunks of every
// other file are set aside here, in an unlinked temporary file (bounded memory:
// only a write buffer), and replayed in their original order once the stream
// is done. The file holds compressed bytes, plus the raw bytes when the build
// needs them again (batch chunks, a blob-cache data file).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

#include "builder/chunk_pipeline.h"
#include "common/result.h"

namespace nydus::builder {

class DeferredChunks {
 public:
  // An unlinked file in `dir` (a disk directory: it may grow to the blob's size).
  static Result<std::unique_ptr<DeferredChunks>> create(const std::filesystem::path& dir, bool keep_raw);
  ~DeferredChunks();
  DeferredChunks(const DeferredChunks&) = delete;
  DeferredChunks& operator=(const DeferredChunks&) = delete;

  Status add(const ChunkResult& r);
  // Each chunk in the order added; its spans are valid during the call only.
  // Without keep_raw, `raw` is empty for a compressed chunk (job->length is its size).
  Status replay(const std::function<Status(const ChunkResult&)>& fn);
  uint64_t count() const { return count_; }

 private:
  DeferredChunks(int fd, bool keep_raw) : fd_(fd), keep_raw_(keep_raw) {}
  Status flush();

  int fd_ = -1;
  bool keep_raw_ = false;
  std::vector<uint8_t> buf_;
  uint64_t count_ = 0;
};

}  // namespace nydus::builder
