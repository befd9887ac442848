// --fs-driver: which way this snapshotter serves a Nydus image. fusedev (a
// FUSE nydusd per image, or one shared) and fanotify (a `nydusd fanotify` per
// image: the kernel's EROFS mounts the bootstrap over nydusd's blob cache
// files, filled on fanotify pre-content events) and fscache (one shared
// `nydusd singleton --fscache` daemon; each image's bootstrap registered with
// PUT /api/v2/blobs and mounted by the snapshotter with `mount -t erofs -o
// fsid=...`) are driven. `auto` (ours: nydus-snapshotter has no such value)
// probes what the kernel offers, logs each reason, and picks fanotify when it
// can, else fscache, else fusedev.
#pragma once

#include <string>

#include "common/result.h"

namespace nydus::snapshotter {

// What the kernel offers (probed by probe_kernel_paths(), or set by a test).
// Each `*_why` says what the probe saw, for the log.
struct KernelPaths {
  bool fanotify_pre_content = false;  // fanotify_init(FAN_CLASS_PRE_CONTENT) works (Linux >= 6.14)
  bool pre_access_mark = false;       // a FAN_PRE_ACCESS mark on a file in the cache dir works (not tmpfs)
  bool erofs = false;                 // erofs in /proc/filesystems
  bool fscache_ondemand = false;      // /dev/cachefiles and EROFS
  std::string fanotify_why, mark_why, erofs_why, fscache_why;
};

// `cache_dir`: where the blob cache files live (the snapshotter's <root>/cache;
// created if missing): the pre-content mark is tried on a probe file there.
KernelPaths probe_kernel_paths(const std::string& cache_dir);

struct FsDriverChoice {
  std::string driver;  // "fusedev" | "fanotify" | "fscache"
  std::string reason;  // why, for the log
};

// `requested`: fusedev | fscache | fanotify | auto; `shared`: --daemon-mode shared
// (one FUSE daemon for all images: no fanotify, which is one EROFS mount per daemon;
// fscache is one shared daemon whatever the mode).
// An error says why a driver cannot be used.
Result<FsDriverChoice> choose_fs_driver(const std::string& requested, const KernelPaths& kernel,
                                        bool shared = false);

}  // namespace nydus::snapshotter
