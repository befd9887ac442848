// The "localdisk" backend (upstream storage/src/backend/localdisk.rs): blobs
// stored as partitions of a GPT-partitioned disk or disk image
// (`device_path`), one partition per blob, as the nydus-localdisk tool
// writes them. A partition's blob id is its name (36 UTF-16 code units, the
// first 32 hex digits of the id) followed by its unique partition GUID in
// lower-case hex without dashes (the other 32). Partitions of the "basic
// data" type are the legacy layout: the name alone, matched against the
// first 32 characters of the id asked for. With `disable_gpt` no table is
// read and, as upstream (whose blobs then come from an internal API), no
// blob can be found. Sector size 512 bytes, as upstream.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "storage/backend.h"

namespace nydus::storage {

struct LocalDiskConfig {
  std::string device_path;
  bool disable_gpt = false;
};

Result<LocalDiskConfig> parse_localdisk_config(const nlohmann::json& config);

class LocalDiskBackend final : public Backend {
 public:
  static Result<std::shared_ptr<LocalDiskBackend>> create(LocalDiskConfig cfg);
  ~LocalDiskBackend() override;

  Status read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
  Result<uint64_t> blob_size(const std::string& blob_id) override;
  const char* type() const override { return "localdisk"; }
  BackendMetrics metrics() const override;

  struct Extent {
    uint64_t offset = 0;  // bytes from the start of the device
    uint64_t length = 0;
  };
  // The blobs found in the partition table (for tests).
  const std::map<std::string, Extent>& blobs() const { return blobs_; }

 private:
  LocalDiskBackend(LocalDiskConfig cfg, int fd, uint64_t capacity) : cfg_(std::move(cfg)), fd_(fd), capacity_(capacity) {}
  Status scan_gpt();
  Result<Extent> find(const std::string& blob_id) const;

  LocalDiskConfig cfg_;
  int fd_ = -1;
  uint64_t capacity_ = 0;
  bool legacy_names_ = false;
  std::map<std::string, Extent> blobs_;
  std::atomic<uint64_t> read_count_{0}, read_bytes_{0}, read_errors_{0};
};

}  // namespace nydus::storage
