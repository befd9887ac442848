// --fs-driver: which way this snapshotter serves a Nydus image. Only fusedev
// is driven by the snapshotter today; fscache and fanotify are refused with
// the reason, and `auto` (ours: nydus-snapshotter has no such value) looks at
// what the kernel offers, logs it, and picks the fastest path the snapshotter
// can drive, which for now is always fusedev.
#pragma once

#include <string>

#include "common/result.h"

namespace nydus::snapshotter {

// What the kernel offers (probed by probe_kernel_paths(), or set by a test).
struct KernelPaths {
  bool fanotify_pre_content = false;  // fanotify FAN_PRE_ACCESS (Linux >= 6.14) and EROFS
  bool fscache_ondemand = false;      // /dev/cachefiles and EROFS
};

KernelPaths probe_kernel_paths();

struct FsDriverChoice {
  std::string driver;  // "fusedev"
  std::string reason;  // why, for the log
};

// `requested`: fusedev | fscache | fanotify | auto. An error says why a driver cannot be used.
Result<FsDriverChoice> choose_fs_driver(const std::string& requested, const KernelPaths& kernel);

}  // namespace nydus::snapshotter
