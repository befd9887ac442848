// Fuzz target: parse_toc over the tail of a blob (ToC entries + tar header).
#include <cstddef>
#include <cstdint>
#include <span>

#include "format/blob_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)nydus::format::parse_toc(std::span<const uint8_t>(data, size));
  return 0;
}
