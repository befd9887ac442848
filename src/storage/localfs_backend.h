// The localfs backend: blobs are plain files, `<dir>/<blob_id>` (falling back
// to each of `alt_dirs`), or one `blob_file` that serves every blob id (a
// single-blob image mounted from a file).
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "storage/backend.h"

namespace nydus::storage {

// Blob ids come from the untrusted bootstrap and name files: reject anything
// that could leave the directory ('/', "..", NUL, empty, "."); kInvalidArgument.
Status validate_blob_id(std::string_view id);

struct LocalFsConfig {
  std::filesystem::path dir;
  std::filesystem::path blob_file;
  std::vector<std::filesystem::path> alt_dirs;
};

class LocalFsBackend final : public Backend {
 public:
  static Result<std::shared_ptr<LocalFsBackend>> create(LocalFsConfig cfg);
  ~LocalFsBackend() override;

  Status read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) override;
  Result<uint64_t> blob_size(const std::string& blob_id) override;
  const char* type() const override { return "localfs"; }
  BackendMetrics metrics() const override;

 private:
  explicit LocalFsBackend(LocalFsConfig cfg) : cfg_(std::move(cfg)) {}
  // The cached read-only fd of a blob, opened on first use.
  Result<int> fd_for(const std::string& blob_id);

  LocalFsConfig cfg_;
  std::mutex mu_;  // guards fds_ only; never held across I/O
  std::unordered_map<std::string, int> fds_;
  std::atomic<uint64_t> read_count_{0}, read_bytes_{0}, read_errors_{0};
};

}  // namespace nydus::storage
