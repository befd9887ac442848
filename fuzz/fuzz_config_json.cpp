// Fuzz target: the daemon's JSON inputs: nydusd's configuration (v1 and v2
// shapes) and the FUSE state a supervisor hands back on takeover.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon/fuse_handover.h"
#include "runtime/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)nydus::runtime::parse_config(text);
  (void)nydus::daemon::decode_fuse_handover(text);
  return 0;
}
