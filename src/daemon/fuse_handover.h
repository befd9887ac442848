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

// An image a shared daemon serves inside the connection, mounted through
// the API (so the next daemon's command line does not name it).
struct HandedMount {
  std::string path;    // virtual path, "/<id>"
  std::string source;  // bootstrap
  std::string config;  // the JSON config text it was mounted with
};

struct FuseHandover {
  std::string mountpoint;
  std::string bootstrap;      // the image at "/" ("" in a shared daemon)
  std::vector<uint8_t> init;  // the FUSE_INIT request, header included
  std::vector<HandedMount> mounts{};
};

std::string encode_fuse_handover(const FuseHandover& h);
// Untrusted bytes (whatever the supervisor returned): checked, never thrown.
Result<FuseHandover> decode_fuse_handover(std::string_view data);

}  // namespace nydus::daemon
