// What a cachefiles object holds, as the daemon serves it: the bytes of a
// bootstrap (the fsid cookie) or the uncompressed layout of a data blob (a
// device-table cookie). size() is what `copen` reports and never changes for
// an object, so the kernel keeps reusing its cache file across mounts.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "format/blob_info.h"
#include "format/bootstrap.h"
#include "storage/backend.h"
#include "storage/blob_cache.h"

namespace nydus::fscache {

class ObjectSource {
 public:
  virtual ~ObjectSource() = default;
  virtual const std::string& name() const = 0;  // fsid or blob id, for logs
  virtual uint64_t size() const = 0;
  // Copy [off, off + out.size()) into `out`; the range lies within size().
  virtual Status read(uint64_t off, std::span<uint8_t> out) = 0;
};

// A registered bootstrap: served from its mmap'd file.
class BootstrapSource : public ObjectSource {
 public:
  BootstrapSource(std::string fsid, std::shared_ptr<const format::Bootstrap> boot)
      : name_(std::move(fsid)), boot_(std::move(boot)) {}
  const std::string& name() const override { return name_; }
  uint64_t size() const override { return boot_->bytes().size(); }
  Status read(uint64_t off, std::span<uint8_t> out) override;

 private:
  std::string name_;
  std::shared_ptr<const format::Bootstrap> boot_;
};

// A data blob, read through its blob cache (chunks fetched from the backend
// and decompressed as needed). The cache is opened on first use, on a worker:
// opening may fetch the blob meta over the network, which an OPEN must never
// wait for. A failed open is retried by the next read.
class DataBlobSource : public ObjectSource {
 public:
  DataBlobSource(format::BlobInfo info, std::shared_ptr<storage::Backend> backend, storage::CacheConfig cfg,
                 std::vector<format::Digest> digests)
      : info_(std::move(info)), backend_(std::move(backend)), cfg_(std::move(cfg)), digests_(std::move(digests)) {}
  const std::string& name() const override { return info_.blob_id; }
  uint64_t size() const override { return info_.uncompressed_size; }
  Status read(uint64_t off, std::span<uint8_t> out) override;

  const format::BlobInfo& info() const { return info_; }
  const std::shared_ptr<storage::Backend>& backend() const { return backend_; }
  const std::filesystem::path& work_dir() const { return cfg_.work_dir; }
  Result<std::shared_ptr<storage::BlobCache>> cache();
  // The cache if it is open already (metrics), else null.
  std::shared_ptr<storage::BlobCache> cache_if_open() const;

 private:
  format::BlobInfo info_;
  std::shared_ptr<storage::Backend> backend_;
  storage::CacheConfig cfg_;
  std::vector<format::Digest> digests_;
  mutable std::mutex mu_;  // guards cache_ (held while opening: concurrent first reads open once)
  std::shared_ptr<storage::BlobCache> cache_;
};

}  // namespace nydus::fscache
