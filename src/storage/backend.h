// Where blobs live: a backend reads byte ranges of a blob's stored
// (compressed) layout. Implementations: localfs now; registry, s3 and proxy
// later. Backends are shared by all blob caches and must be thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "common/result.h"

namespace nydus::storage {

struct BackendMetrics {
  uint64_t read_count = 0;
  uint64_t read_bytes = 0;
  uint64_t read_errors = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Read exactly out.size() bytes at `offset` of blob `blob_id`; a short
  // blob is kCorrupt, an OS/network failure kIo (retryable).
  virtual Status read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) = 0;
  // Size of the stored blob.
  virtual Result<uint64_t> blob_size(const std::string& blob_id) = 0;
  virtual const char* type() const = 0;
  virtual BackendMetrics metrics() const = 0;
};

// From upstream's `device.backend` JSON: {"type": "localfs", "config": {"dir": ...}}
// or {"config": {"blob_file": ...}}.
Result<std::shared_ptr<Backend>> make_backend(const nlohmann::json& backend);

}  // namespace nydus::storage
