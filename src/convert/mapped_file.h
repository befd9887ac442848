// A file mapped into memory for whole-blob transfers: downloads land in it
// and uploads are sent from it, with no copy through a buffer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>

#include "common/result.h"

namespace nydus::convert {

class MappedFile {
 public:
  // Read-only view of an existing file (an empty file maps to an empty span).
  static Result<MappedFile> open_read(const std::filesystem::path& p);
  // A new file of exactly `size` bytes, writable.
  static Result<MappedFile> create(const std::filesystem::path& p, uint64_t size);
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&&) = delete;
  ~MappedFile();

  std::span<uint8_t> bytes() { return {data_, size_}; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  MappedFile(uint8_t* d, uint64_t n) : data_(d), size_(n) {}
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace nydus::convert
