// The state a FUSE-mode nydusd hands to its supervisor with the /dev/fuse fd
// (PUT /api/v1/daemon/fuse/sendfd) and the next daemon takes back
// (.../takeover): which mount it is and the INIT request the connection
// began with. JSON, so a supervisor (nydus-snapshotter keeps it as opaque
// bytes) or a person can read it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace nydus::daemon {

struct FuseHandover {
  std::string mountpoint;
  std::string bootstrap;
  std::vector<uint8_t> init;  // the FUSE_INIT request, header included
};

std::string encode_fuse_handover(const FuseHandover& h);
// Untrusted bytes (whatever the supervisor returned): checked, never thrown.
Result<FuseHandover> decode_fuse_handover(std::string_view data);

}  // namespace nydus::daemon
