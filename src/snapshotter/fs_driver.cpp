#include "snapshotter/fs_driver.h"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace nydus::snapshotter {
namespace {

// Linux 6.14 values; Debian 12's headers predate them (the snapshotter does
// not link the fanotify part, whose fanotify_abi.h has the same).
constexpr unsigned kFanClassPreContent = 0x00000008;
constexpr uint64_t kFanPreAccess = 0x00100000;

bool has_filesystem(const std::string& name) {
  std::ifstream in("/proc/filesystems");
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.rfind('\t');
    if ((tab == std::string::npos ? line : line.substr(tab + 1)) == name) return true;
  }
  return false;
}

std::string fscache_why(const KernelPaths& k) {
  if (!k.fscache_why.empty()) return k.fscache_why;
  return k.fscache_ondemand ? "/dev/cachefiles and erofs" : "no /dev/cachefiles or no erofs";
}

}  // namespace

KernelPaths probe_kernel_paths(const std::string& cache_dir) {
  KernelPaths k;
  k.erofs = has_filesystem("erofs");
  k.erofs_why = k.erofs ? "erofs in /proc/filesystems" : "no erofs in /proc/filesystems";
  const bool cachefiles = ::access("/dev/cachefiles", F_OK) == 0;
  k.fscache_ondemand = k.erofs && cachefiles;
  k.fscache_why = std::string(cachefiles ? "/dev/cachefiles present" : "no /dev/cachefiles (cachefiles module "
                                                                       "not loaded, or no CONFIG_CACHEFILES_ONDEMAND)") +
                  "; " + k.erofs_why;

  int group = ::fanotify_init(kFanClassPreContent | FAN_CLOEXEC, O_RDONLY);
  if (group < 0) {
    k.fanotify_why = std::string("fanotify_init(FAN_CLASS_PRE_CONTENT): ") + std::strerror(errno) +
                     (errno == EINVAL ? " (needs Linux >= 6.14)" : "");
    k.mark_why = "not tried";
    return k;
  }
  k.fanotify_pre_content = true;
  k.fanotify_why = "fanotify_init(FAN_CLASS_PRE_CONTENT) works";
  // The blob cache files get the marks: their filesystem must take them (tmpfs does not).
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  const std::string probe = cache_dir + "/.fanotify-probe-" + std::to_string(::getpid());
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    k.mark_why = "cannot create " + probe + ": " + std::strerror(errno);
  } else {
    ::close(fd);
    if (::fanotify_mark(group, FAN_MARK_ADD, kFanPreAccess, AT_FDCWD, probe.c_str()) == 0) {
      k.pre_access_mark = true;
      k.mark_why = "a FAN_PRE_ACCESS mark in " + cache_dir + " works";
    } else {
      k.mark_why = "FAN_PRE_ACCESS mark in " + cache_dir + ": " + std::strerror(errno) +
                   (errno == EOPNOTSUPP ? " (tmpfs? the cache dir must be on a disk filesystem)" : "");
    }
    ::unlink(probe.c_str());
  }
  ::close(group);
  return k;
}

Result<FsDriverChoice> choose_fs_driver(const std::string& requested, const KernelPaths& kernel, bool shared) {
  const bool fanotify_ok = kernel.fanotify_pre_content && kernel.pre_access_mark && kernel.erofs;
  std::ostringstream fan_why;
  fan_why << kernel.fanotify_why << "; " << kernel.mark_why << "; " << kernel.erofs_why;
  if (requested == "fusedev") return FsDriverChoice{"fusedev", "--fs-driver fusedev"};
  if (requested == "fanotify") {
    if (shared)
      return make_error(Errc::kUnsupported,
                        "--fs-driver fanotify with --daemon-mode shared: not possible (a fanotify nydusd serves "
                        "one image through its own EROFS mount; there is no shared fanotify daemon); use "
                        "--daemon-mode dedicated, or fusedev");
    if (!fanotify_ok)
      return make_error(Errc::kUnsupported, "--fs-driver fanotify: the kernel does not offer it here (" +
                                                fan_why.str() + "); use fusedev or auto");
    return FsDriverChoice{"fanotify", "--fs-driver fanotify (" + fan_why.str() + ")"};
  }
  if (requested == "fscache") {
    if (!kernel.fscache_ondemand)
      return make_error(Errc::kUnsupported,
                        "--fs-driver fscache: the kernel does not offer EROFS over fscache on-demand here (" +
                            fscache_why(kernel) + "); use fusedev, fanotify or auto");
    return FsDriverChoice{"fscache", "--fs-driver fscache (" + fscache_why(kernel) + ")"};
  }
  if (requested != "auto")
    return errorf(Errc::kInvalidArgument, "--fs-driver {:?}: want fusedev, fscache, fanotify or auto", requested);
  // auto: fanotify (per-image daemons, no cachefiles device needed), else
  // fscache (one shared daemon, kernel EROFS), else FUSE.
  std::ostringstream why;
  why << "auto: fanotify pre-content " << (fanotify_ok ? "offered" : "not offered") << " (" << fan_why.str()
      << "); fscache on-demand " << (kernel.fscache_ondemand ? "offered" : "not offered") << " ("
      << fscache_why(kernel) << ")";
  if (fanotify_ok && !shared) {
    why << "; using fanotify";
    return FsDriverChoice{"fanotify", why.str()};
  }
  if (fanotify_ok) why << "; --daemon-mode shared (fanotify serves one image per daemon, there is no shared one)";
  if (kernel.fscache_ondemand) {
    why << "; using fscache";
    return FsDriverChoice{"fscache", why.str()};
  }
  why << "; using fusedev";
  return FsDriverChoice{"fusedev", why.str()};
}

}  // namespace nydus::snapshotter
