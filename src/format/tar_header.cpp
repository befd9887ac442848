#include "format/tar_header.h"

#include <cstring>

namespace nydus::format {

namespace {

uint32_t header_checksum(const uint8_t* h) {
  uint32_t sum = 0;
  for (size_t i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? uint8_t(' ') : h[i];
  return sum;
}

// Parse an octal field, stopping at NUL or space; false on a non-octal digit.
bool parse_octal(const uint8_t* p, size_t n, uint64_t& out) {
  out = 0;
  size_t i = 0;
  while (i < n && p[i] == ' ') i++;
  for (; i < n && p[i] != 0 && p[i] != ' '; i++) {
    if (p[i] < '0' || p[i] > '7') return false;
    if (out >> 60) return false;
    out = out * 8 + (p[i] - '0');
  }
  return true;
}

}  // namespace

TarHeader make_tar_header(std::string_view name, uint64_t size) {
  TarHeader h{};
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(reinterpret_cast<char*>(h.data() + 124), 12, "%011llo",
                static_cast<unsigned long long>(size));
  std::memcpy(h.data() + 136, "00000000000", 11);
  h[156] = '0';
  std::memcpy(h.data() + 257, "ustar ", 6);
  std::memcpy(h.data() + 263, " ", 2);  // " \0"
  std::snprintf(reinterpret_cast<char*>(h.data() + 148), 8, "%07o", header_checksum(h.data()));
  return h;
}

Result<ParsedTarHeader> parse_tar_header(std::span<const uint8_t> header) {
  if (header.size() != 512) return corrupt("tar header is {} bytes, expected 512", header.size());
  const uint8_t* h = header.data();
  if (std::memcmp(h + 257, "ustar", 5) != 0) return corrupt("tar header has no ustar magic");
  if (h[156] != '0' && h[156] != 0) return corrupt("tar header typeflag {:#x} is not a regular file", h[156]);
  uint64_t stored_sum = 0, size = 0;
  if (!parse_octal(h + 148, 8, stored_sum)) return corrupt("tar header checksum field is not octal");
  if (stored_sum != header_checksum(h)) return corrupt("tar header checksum mismatch");
  if (!parse_octal(h + 124, 12, size)) return corrupt("tar header size field is not octal");
  ParsedTarHeader out;
  out.name.assign(reinterpret_cast<const char*>(h), strnlen(reinterpret_cast<const char*>(h), 100));
  out.size = size;
  return out;
}

}  // namespace nydus::format
