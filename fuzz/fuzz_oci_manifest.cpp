// Fuzz target: what the converter takes from a registry or an OCI layout —
// manifests, indexes, descriptors, and image references.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "convert/oci.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  (void)nydus::convert::sniff_media_type(s);
  (void)nydus::convert::parse_manifest(s);
  (void)nydus::convert::parse_index(s);
  if (size < 512) {
    (void)nydus::convert::parse_image_ref(s);
    (void)nydus::convert::parse_platform(s);
  }
  return 0;
}
