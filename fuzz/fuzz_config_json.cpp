// Fuzz target: nydusd's JSON configuration (v1 and v2 shapes).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)nydus::daemon::parse_config(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
