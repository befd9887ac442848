#include "snapshotter/fs_driver.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace nydus::snapshotter {
namespace {

bool has_filesystem(const std::string& name) {
  std::ifstream in("/proc/filesystems");
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.rfind('\t');
    if ((tab == std::string::npos ? line : line.substr(tab + 1)) == name) return true;
  }
  return false;
}

// fanotify pre-content events (FAN_PRE_ACCESS) came with Linux 6.14.
bool kernel_at_least(int major, int minor) {
  utsname u{};
  if (::uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

}  // namespace

KernelPaths probe_kernel_paths() {
  KernelPaths k;
  const bool erofs = has_filesystem("erofs");
  k.fanotify_pre_content = erofs && kernel_at_least(6, 14);
  k.fscache_ondemand = erofs && ::access("/dev/cachefiles", F_OK) == 0;
  return k;
}

Result<FsDriverChoice> choose_fs_driver(const std::string& requested, const KernelPaths& kernel) {
  if (requested == "fusedev") return FsDriverChoice{"fusedev", "--fs-driver fusedev"};
  if (requested == "fanotify")
    return make_error(Errc::kUnsupported,
                      "--fs-driver fanotify: not supported by this snapshotter yet (it would mount EROFS over "
                      "nydusd's cache files; nydusd's own `fanotify` mode works, the snapshotter does not drive "
                      "it); use fusedev or auto");
  if (requested == "fscache")
    return make_error(Errc::kUnsupported,
                      "--fs-driver fscache: not supported by this snapshotter yet (use fusedev or auto)");
  if (requested != "auto")
    return errorf(Errc::kInvalidArgument, "--fs-driver {:?}: want fusedev, fscache, fanotify or auto", requested);
  std::ostringstream why;
  why << "auto: fanotify pre-content "
      << (kernel.fanotify_pre_content ? "offered by the kernel but not driven by the snapshotter yet"
                                      : "not offered (needs Linux >= 6.14 with EROFS)")
      << "; fscache on-demand "
      << (kernel.fscache_ondemand ? "offered (/dev/cachefiles) but not driven by the snapshotter yet"
                                  : "not offered (no /dev/cachefiles or no EROFS)")
      << "; using fusedev";
  return FsDriverChoice{"fusedev", why.str()};
}

}  // namespace nydus::snapshotter
