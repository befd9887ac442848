// Where blobs live: a backend reads byte ranges of a blob's stored
// (compressed) layout. Implementations: localfs, localdisk (GPT partitions),
// registry (with proxy and mirrors), s3/oss, http-proxy. Backends are shared by all blob caches and must be thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "common/result.h"
#include "storage/backend_io_stats.h"

namespace nydus::storage {

struct BackendMetrics {
  uint64_t read_count = 0;
  uint64_t read_bytes = 0;
  uint64_t read_errors = 0;
  // Remote backends only (zero for localfs):
  uint64_t requests = 0;          // HTTP requests sent (incl. token, redirect, HEAD)
  uint64_t retries = 0;           // read/size attempts repeated after a retryable failure
  uint64_t dedup_waits = 0;       // reads served by joining an identical in-flight read
  uint64_t latency_us_total = 0;  // summed wall time of successful reads
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
  // Start opening the first connection in the background, for the first
  // read not to wait for a handshake; returns at once and cannot fail.
  virtual void preconnect() {}
  // Upstream's BackendMetrics of the blob reads made through this backend
  // (recorded by the blob cache).
  BackendIoStats& io_stats() const { return io_stats_; }
  // Registry credentials renewed at run time (PUT /api/v1/config
  // "registry_auth", base64 "user:pass"); other backends have none.
  virtual Status update_auth(const std::string& auth_base64) {
    return errorf(Errc::kUnsupported, "backend {} takes no registry credentials", type());
  }

 private:
  mutable BackendIoStats io_stats_;
};

// From upstream's `device.backend` JSON: {"type": "localfs", "config": {"dir": ...}}
// or {"config": {"blob_file": ...}}; "registry", "s3"/"oss", "http-proxy" and
// "localdisk" take upstream's config fields (see their headers).
Result<std::shared_ptr<Backend>> make_backend(const nlohmann::json& backend);

}  // namespace nydus::storage
