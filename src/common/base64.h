// Standard base64 (RFC 4648, '+' '/', padded), as Go's base64.StdEncoding:
// registry credentials ("user:pass"), AWS/OSS signatures, eStargz TOC xattrs.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace nydus {

std::string base64_encode(std::span<const uint8_t> data);
inline std::string base64_encode(std::string_view s) {
  return base64_encode(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

// Strict: a multiple of 4 characters, '=' only at the end of the last group
// (one or two), nothing outside the alphabet. Errors never quote the input
// (it may be a secret).
Result<std::string> base64_decode(std::string_view in);

}  // namespace nydus
