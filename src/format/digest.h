// Chunk digests (BLAKE3-256 or SHA-256), SHA-256 for blob ids, and CRC-32C.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"
#include "format/layout.h"

namespace nydus::format {

using Digest = std::array<uint8_t, 32>;

Result<Digester> parse_digester(std::string_view name);
const char* digester_name(Digester d);

Digest compute_digest(Digester d, std::span<const uint8_t> data);
Digest sha256(std::span<const uint8_t> data);

// CRC-32C (Castagnoli), as stored in chunk-info records with HAS_CRC32.
uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

std::string to_hex(std::span<const uint8_t> bytes);

// Parse 64 lowercase/uppercase hex chars.
Result<Digest> digest_from_hex(std::string_view hex);

// The EROFS fsid the image of snapshot `snapshot_id` is mounted with in
// fscache mode: hex sha256 of "nydus-snapshot-<id>" (nydus-snapshotter's
// erofs.FscacheID), which the snapshotter and the fscache daemon both know it by.
std::string fscache_id(std::string_view snapshot_id);

// Streaming SHA-256 (blob ids are hashes of whole blob files).
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void update(std::span<const uint8_t> data);
  Digest finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nydus::format
