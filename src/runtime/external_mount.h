// The interface between the daemon and a mode that is not FUSE (fanotify):
// the mode implements it, nydusd plugs it into the daemon by fs_type, and
// neither part includes the other.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "runtime/config.h"

namespace nydus::runtime {

// A mount served by something other than this library's FUSE filesystem
// (the fanotify mode): nydusd plugs it in by fs_type, so the daemon does not
// depend on it.
class ExternalMount {
 public:
  virtual ~ExternalMount() = default;
  virtual void shutdown() = 0;
  virtual bool alive() const = 0;    // still mounted
  virtual nlohmann::json info() = 0;  // its entry in GET /api/v1/daemon
  // GET /api/v1/metrics[/kind] for this mount.
  virtual Result<nlohmann::json> metrics(const std::string& kind) = 0;
};

struct ExternalMountRequest {
  std::string mountpoint;
  std::filesystem::path bootstrap;
  DaemonConfig config;
  std::vector<std::string> prefetch_files;
  std::filesystem::path fallback_work_dir;  // when the config names no work_dir
};
using ExternalMounter = std::function<Result<std::unique_ptr<ExternalMount>>(const ExternalMountRequest&)>;

}  // namespace nydus::runtime
