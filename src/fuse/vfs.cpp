#define FUSE_USE_VERSION 312
#include "fuse/vfs.h"

#include <fuse_lowlevel.h>

#include <algorithm>
#include <cerrno>
#include <mutex>

#include "fuse/rafs_fs.h"

namespace nydus::fuse {

Result<std::vector<std::string>> Vfs::split(std::string_view path) {
  if (path.empty() || path.front() != '/') return errorf(Errc::kInvalidArgument, "virtual path \"{}\" is not absolute", path);
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    const size_t j = path.find('/', i);
    std::string_view part = path.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i);
    i = j == std::string_view::npos ? path.size() : j;
    if (part.empty()) continue;
    if (part == "." || part == "..") return errorf(Errc::kInvalidArgument, "virtual path \"{}\" has . or ..", path);
    if (part.size() > 255) return errorf(Errc::kInvalidArgument, "virtual path \"{}\": name too long", path);
    parts.emplace_back(part);
  }
  return parts;
}

Status Vfs::mount(std::string_view path, std::shared_ptr<RafsFs> fs) {
  NYDUS_ASSIGN_OR_RETURN(std::vector<std::string> parts, split(path));
  std::unique_lock lk(mu_);
  if (root_) return errorf(Errc::kExists, "an image is mounted at / of this connection");
  if (parts.empty()) {
    if (!mounts_locked().empty() || dirs_.size() > 1)
      return errorf(Errc::kExists, "/ cannot be mounted over images already mounted below it");
    root_ = std::move(fs);
    return ok();
  }
  // Walk (creating) the pseudo directories to the parent.
  uint64_t dir = 1;
  std::optional<std::pair<uint64_t, std::string>> created;  // the first new one
  for (size_t k = 0; k + 1 < parts.size(); ++k) {
    PseudoDir& d = dirs_[dir - 1];
    if (d.images.count(parts[k])) return errorf(Errc::kExists, "an image is mounted at a parent of {}", path);
    auto it = d.dirs.find(parts[k]);
    if (it != d.dirs.end()) {
      dir = it->second;
      continue;
    }
    const uint64_t ino = dirs_.size() + 1;
    if (!created) created.emplace(dir, parts[k]);
    dirs_[dir - 1].dirs.emplace(parts[k], ino);  // before push_back: it may move d
    dirs_.push_back(PseudoDir{ino, dir, {}, {}});
    dir = ino;
  }
  PseudoDir& parent = dirs_[dir - 1];
  const std::string& name = parts.back();
  if (parent.images.count(name) || parent.dirs.count(name))
    return errorf(Errc::kExists, "{} is already mounted (or a directory of mounts)", path);
  // Round-robin: the slot least recently freed.
  bool placed = false;
  for (size_t tries = 0; tries < kMaxSlots && !placed; ++tries) {
    const unsigned slot = next_slot_;
    next_slot_ = next_slot_ == kMaxSlots ? 1 : next_slot_ + 1;
    if (slots_[slot]) continue;
    slots_[slot] = std::move(fs);
    slot_paths_[slot] = std::string(path);
    parent.images.emplace(name, slot);
    placed = true;
  }
  if (!placed) return errorf(Errc::kNoSpace, "{} images are mounted in this daemon already", kMaxSlots);
  // The kernel may hold the parent's listing and a negative entry for the
  // name: both go (outside the lock: the kernel may call back into us).
  auto inval = invalidate_;
  const uint64_t parent_ino = dir;
  lk.unlock();
  if (inval) {
    if (created) inval(created->first, created->second);
    inval(parent_ino, name);
  }
  return ok();
}

Result<std::shared_ptr<RafsFs>> Vfs::umount(std::string_view path) {
  NYDUS_ASSIGN_OR_RETURN(std::vector<std::string> parts, split(path));
  std::shared_ptr<RafsFs> gone;
  uint64_t parent_ino = 1;
  std::function<void(uint64_t, const std::string&)> inval;
  {
    std::unique_lock lk(mu_);
    if (parts.empty()) {
      if (!root_) return errorf(Errc::kNotFound, "nothing mounted at /");
      return std::exchange(root_, nullptr);
    }
    uint64_t dir = 1;
    for (size_t k = 0; k + 1 < parts.size(); ++k) {
      auto it = dirs_[dir - 1].dirs.find(parts[k]);
      if (it == dirs_[dir - 1].dirs.end()) return errorf(Errc::kNotFound, "nothing mounted at {}", path);
      dir = it->second;
    }
    PseudoDir& parent = dirs_[dir - 1];
    auto it = parent.images.find(parts.back());
    if (it == parent.images.end()) return errorf(Errc::kNotFound, "nothing mounted at {}", path);
    gone = std::exchange(slots_[it->second], nullptr);
    slot_paths_[it->second].clear();
    parent.images.erase(it);
    parent_ino = dir;
    inval = invalidate_;
  }
  // Outside the lock: the kernel may call back into us while it forgets.
  if (inval) inval(parent_ino, parts.back());
  return gone;
}

std::vector<std::string> Vfs::mounts() const {
  std::shared_lock lk(mu_);
  return mounts_locked();
}

std::vector<std::string> Vfs::mounts_locked() const {
  std::vector<std::string> out;
  if (root_) out.push_back("/");
  for (size_t s = 1; s <= kMaxSlots; ++s)
    if (slots_[s]) out.push_back(slot_paths_[s]);
  std::sort(out.begin(), out.end());
  return out;
}

bool Vfs::empty() const {
  std::shared_lock lk(mu_);
  if (root_) return false;
  for (size_t s = 1; s <= kMaxSlots; ++s)
    if (slots_[s]) return false;
  return true;
}

void Vfs::set_invalidator(std::function<void(uint64_t, const std::string&)> fn) {
  std::unique_lock lk(mu_);
  invalidate_ = std::move(fn);
}

Result<Vfs::Route> Vfs::route(uint64_t ino) const {
  std::shared_lock lk(mu_);
  if (root_) return Route{root_, ino, 0};
  const uint64_t slot = ino >> kSlotShift;
  if (slot == 0) {
    if (ino == 0 || ino > dirs_.size()) return fs_answer(ENOENT, fmt::format("no pseudo directory {}", ino));
    return Route{nullptr, ino, 0};
  }
  if (slot > kMaxSlots || !slots_[slot]) return fs_answer(ENOENT, fmt::format("inode {:#x}: image unmounted", ino));
  return Route{slots_[slot], ino & kInnerMask, unsigned(slot)};
}

struct stat Vfs::dir_attr(uint64_t ino) const {
  struct stat st{};
  st.st_ino = ino;
  st.st_mode = S_IFDIR | 0755;
  st.st_nlink = 2;
  st.st_blksize = 4096;
  return st;
}

Result<struct stat> Vfs::image_root_attr(unsigned slot) const {
  NYDUS_ASSIGN_OR_RETURN(struct stat st, slots_[slot]->entry_attr(FUSE_ROOT_ID));
  st.st_ino = outer(slot, st.st_ino);
  return st;
}

Result<std::optional<struct stat>> Vfs::pseudo_lookup(uint64_t dir, std::string_view name) const {
  std::shared_lock lk(mu_);
  if (dir == 0 || dir > dirs_.size()) return fs_answer(ENOENT, "no such pseudo directory");
  const PseudoDir& d = dirs_[dir - 1];
  if (auto it = d.dirs.find(name); it != d.dirs.end()) return std::optional<struct stat>{dir_attr(it->second)};
  if (auto it = d.images.find(name); it != d.images.end()) {
    NYDUS_ASSIGN_OR_RETURN(struct stat st, image_root_attr(it->second));
    return std::optional<struct stat>{st};
  }
  return std::optional<struct stat>{};
}

Result<struct stat> Vfs::pseudo_getattr(uint64_t ino) const {
  std::shared_lock lk(mu_);
  if (ino == 0 || ino > dirs_.size()) return fs_answer(ENOENT, "no such pseudo directory");
  return dir_attr(ino);
}

Status Vfs::pseudo_readdir(uint64_t ino, uint64_t off, const std::function<bool(const DirEntry&)>& fn) const {
  std::vector<DirEntry> entries;
  {
    std::shared_lock lk(mu_);
    if (ino == 0 || ino > dirs_.size()) return fs_answer(ENOENT, "no such pseudo directory");
    const PseudoDir& d = dirs_[ino - 1];
    entries.push_back(DirEntry{".", d.ino, S_IFDIR, 0});
    entries.push_back(DirEntry{"..", d.parent, S_IFDIR, 0});
    // Names in one order (a merge of two sorted maps) so cookies stay stable.
    auto a = d.dirs.begin();
    auto b = d.images.begin();
    while (a != d.dirs.end() || b != d.images.end()) {
      if (b == d.images.end() || (a != d.dirs.end() && a->first < b->first)) {
        entries.push_back(DirEntry{a->first, a->second, S_IFDIR, 0});
        ++a;
      } else {
        entries.push_back(DirEntry{b->first, outer(b->second, FUSE_ROOT_ID), S_IFDIR, 0});
        ++b;
      }
    }
  }
  for (uint64_t i = off; i < entries.size(); ++i) {
    entries[i].next_off = i + 1;
    if (!fn(entries[i])) break;
  }
  return ok();
}

}  // namespace nydus::fuse
