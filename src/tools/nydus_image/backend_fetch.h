// `unpack --backend-type T --backend-config JSON`: upstream reads the image's
// blobs through a storage backend (the converter passes the registry's config
// this way). Unpacking reads every chunk anyway, so each blob of the bootstrap's
// blob table is copied whole from the backend into a scratch directory, and
// the unpack proceeds as with --blob-dir.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "common/result.h"

namespace nydus::tools {

// A temporary directory removed with its contents on destruction.
class ScratchBlobs {
 public:
  explicit ScratchBlobs(std::filesystem::path dir) : dir_(std::move(dir)) {}
  ~ScratchBlobs();
  ScratchBlobs(const ScratchBlobs&) = delete;
  ScratchBlobs& operator=(const ScratchBlobs&) = delete;
  std::string dir() const { return dir_.string(); }

 private:
  std::filesystem::path dir_;
};

// `config` is the backend's own config object (upstream's
// BlobFactory::new_backend_from_json content), inline or in `config_file`.
Result<std::unique_ptr<ScratchBlobs>> fetch_blobs_from_backend(const std::string& bootstrap,
                                                               const std::string& type,
                                                               const std::string& config,
                                                               const std::string& config_file);

}  // namespace nydus::tools
