// Fuzz target: parse_tar_header (the reverse-tar section headers of a blob).
// The raw input, then the input cut/zero-padded to 512 bytes, then that with
// its checksum field fixed up, so the size/name parsing behind the checksum
// check gets exercised too.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>

#include "format/tar_header.h"

using nydus::format::parse_tar_header;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)parse_tar_header(std::span<const uint8_t>(data, size));
  std::array<uint8_t, 512> h{};
  std::copy_n(data, std::min<size_t>(size, 512), h.begin());
  (void)parse_tar_header(h);
  unsigned sum = 0;
  for (size_t i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
  char field[9];
  std::snprintf(field, sizeof(field), "%06o", sum & 0777777);
  std::copy_n(field, 7, h.begin() + 148);  // six digits + NUL, then the space kept from before
  h[155] = ' ';
  (void)parse_tar_header(h);
  return 0;
}
