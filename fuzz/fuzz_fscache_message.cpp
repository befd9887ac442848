// Fuzz target: what the fscache daemon takes from outside — a message read
// from /dev/cachefiles (first byte 0) or a /api/v2/blobs body (first byte 1).
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "fscache/blob_entry.h"
#include "fscache/message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  if (data[0] & 1) {
    (void)nydus::fscache::parse_blob_entry(std::string_view(reinterpret_cast<const char*>(rest.data()), rest.size()));
  } else {
    auto m = nydus::fscache::parse_message(rest);
    if (auto* msg = std::get_if<nydus::fscache::Message>(&m))
      if (auto* o = std::get_if<nydus::fscache::OpenMsg>(msg)) (void)nydus::fscache::volume_id(o->volume_key);
  }
  return 0;
}
