// A chunk dictionary (`create --chunk-dict bootstrap=<path>`): another
// image's chunks by digest and size. A build references a chunk the
// dictionary holds instead of storing it again, and the dictionary's blobs
// it uses join its blob table after its own blob.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "common/result.h"
#include "format/bootstrap.h"

namespace nydus::builder {

class ChunkDict {
 public:
  // The dictionary in `bootstrap`; its chunks must be digested with `digester`.
  static Result<ChunkDict> open(const std::filesystem::path& bootstrap, format::Digester digester);

  // The dictionary's chunk with this digest and size, its blob index tagged
  // (see assign_blobs), or nullptr.
  const format::ChunkRecord* find(const format::Digest& digest, uint32_t size) const;

  // Give the tagged chunks in `files` their final blob indexes: the
  // dictionary blobs in order of first use, after `own_blobs` blobs of the
  // build's own. Returns the dictionary blobs used, in that order.
  std::vector<format::BlobInfo> assign_blobs(std::vector<std::vector<format::ChunkRecord>>& files,
                                             uint32_t own_blobs) const;

 private:
  static constexpr uint32_t kTag = 1u << 20;  // tags dictionary blob indexes until the table is final
  std::map<std::pair<format::Digest, uint32_t>, format::ChunkRecord> chunks_;
  std::vector<format::BlobInfo> blobs_;
};

}  // namespace nydus::builder
