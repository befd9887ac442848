// What one FUSE connection serves: one image at its root (a dedicated
// daemon, as nydus-snapshotter starts one per image), or a pseudo filesystem
// of directories with images mounted at virtual paths inside it (a shared
// daemon: `nydusd fuse --mountpoint M` without a bootstrap, then
// `POST /api/v1/mount?mountpoint=/<id>` serves an image at M/<id>).
//
// Inode numbers seen by the kernel:
// - an image mounted at "/" keeps its own (RafsFs) inode numbers: the
//   dedicated case pays nothing for the indirection;
// - otherwise pseudo directories are 1 (the root), 2, 3, ... and the inode i
//   of the image in slot k (1..255) is (k << 56) | i. Slots are handed out
//   round-robin, so a slot freed by an unmount is reused only after 254 other
//   mounts: inodes the kernel still remembers of a gone image then name
//   nothing (ENOENT), not a file of the next image.
#pragma once

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace nydus::fuse {

class PagePusher;
class RafsFs;
struct DirEntry;

class Vfs {
 public:
  static constexpr unsigned kSlotShift = 56;
  static constexpr uint64_t kInnerMask = (uint64_t{1} << kSlotShift) - 1;
  static constexpr size_t kMaxSlots = 255;

  // Where an inode lives: `fs` null means pseudo directory `ino`.
  struct Route {
    std::shared_ptr<RafsFs> fs;
    uint64_t ino = 0;   // the inode number inside `fs` (or the pseudo dir)
    unsigned slot = 0;  // 0 for the root image and for pseudo dirs
  };

  // Serve `fs` at `path` ("/" = the whole connection, only while nothing
  // else is mounted; "/a/b" creates the pseudo directories on the way).
  Status mount(std::string_view path, std::shared_ptr<RafsFs> fs);
  // Stop serving the image at `path`; returns it. The kernel is told to
  // forget the name (see set_invalidator).
  Result<std::shared_ptr<RafsFs>> umount(std::string_view path);
  // Paths mounted, sorted.
  std::vector<std::string> mounts() const;
  bool empty() const;

  // Kernel inode -> its filesystem (ENOENT: an image no longer mounted).
  Result<Route> route(uint64_t ino) const;
  // An image's inode number as the kernel sees it.
  static uint64_t outer(unsigned slot, uint64_t inner) {
    return slot == 0 ? inner : (uint64_t{slot} << kSlotShift) | inner;
  }

  // The pseudo directories' side of LOOKUP, GETATTR and READDIR. A lookup
  // that finds an image's root answers that root's attributes (kernel inode
  // numbers); nullopt: no such name.
  Result<std::optional<struct stat>> pseudo_lookup(uint64_t dir, std::string_view name) const;
  Result<struct stat> pseudo_getattr(uint64_t ino) const;
  Status pseudo_readdir(uint64_t ino, uint64_t off, const std::function<bool(const DirEntry&)>& fn) const;

  // Called after a mount or an unmount with (parent pseudo dir, name) so the
  // kernel drops its cached entry and the parent's cached listing; set by
  // the FUSE session serving this Vfs.
  void set_invalidator(std::function<void(uint64_t parent, const std::string& name)> fn);

  // What pushes files into the kernel's page cache for this connection
  // (page_pusher.h), set by the session while it runs; null: none.
  void set_pusher(PagePusher* p) { pusher_.store(p, std::memory_order_release); }
  PagePusher* pusher() const { return pusher_.load(std::memory_order_acquire); }

 private:
  struct PseudoDir {
    uint64_t ino = 0;
    uint64_t parent = 0;
    std::map<std::string, uint64_t, std::less<>> dirs;   // name -> pseudo ino
    std::map<std::string, unsigned, std::less<>> images;  // name -> slot
  };
  static Result<std::vector<std::string>> split(std::string_view path);
  std::vector<std::string> mounts_locked() const;
  Result<struct stat> image_root_attr(unsigned slot) const;  // needs mu_ held
  struct stat dir_attr(uint64_t ino) const;

  mutable std::shared_mutex mu_;
  std::shared_ptr<RafsFs> root_;                           // an image at "/"
  std::array<std::shared_ptr<RafsFs>, kMaxSlots + 1> slots_;  // [0] unused
  std::array<std::string, kMaxSlots + 1> slot_paths_;
  unsigned next_slot_ = 1;
  std::vector<PseudoDir> dirs_{PseudoDir{1, 1, {}, {}}};   // dirs_[ino - 1]
  std::function<void(uint64_t, const std::string&)> invalidate_;
  std::atomic<PagePusher*> pusher_{nullptr};
};

}  // namespace nydus::fuse
