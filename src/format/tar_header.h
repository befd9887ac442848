// The 512-byte GNU tar headers that upstream Nydus appends *after* each
// section of a data blob ("reverse tar"), so sections can be found by reading
// the blob backwards from its end.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace nydus::format {

using TarHeader = std::array<uint8_t, 512>;

// Header for a section `name` of `size` bytes, byte-identical to upstream's.
TarHeader make_tar_header(std::string_view name, uint64_t size);

struct ParsedTarHeader {
  std::string name;
  uint64_t size = 0;
};

// Validate magic, typeflag '0' and checksum; parse name and size.
Result<ParsedTarHeader> parse_tar_header(std::span<const uint8_t> header);

}  // namespace nydus::format
