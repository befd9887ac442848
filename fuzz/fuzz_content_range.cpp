// Fuzz target: Content-Range and Retry-After parsing of the remote backends.
#include <cstddef>
#include <cstdint>
#include <string>

#include "storage/remote_backend.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string v(reinterpret_cast<const char*>(data), size);
  auto cr = nydus::storage::parse_content_range(v);
  if (cr && cr->first > cr->last) __builtin_trap();  // a range that ends before it starts
  (void)nydus::storage::parse_retry_after(v);
  return 0;
}
