#include "fuse/dir_read_ahead.h"

#include <algorithm>
#include <limits>

namespace nydus::fuse {

namespace {

// Entries between two files read in order may be subdirectories, links or
// big files, which a tar-like reader handles without a READ we see here.
constexpr uint64_t kGap = 8;

// `key`'s value in the current generation, or moved up from the old one.
template <class Map>
auto* find_either(Map& cur, Map& old, uint64_t key) {
  if (auto it = cur.find(key); it != cur.end()) return &it->second;
  if (auto it = old.find(key); it != old.end()) return &cur.emplace(key, it->second).first->second;
  return static_cast<typename Map::mapped_type*>(nullptr);
}

}  // namespace

// Each generation of listing records holds half the entry budget.
DirReadAhead::DirReadAhead(Limits l)
    : limits_(l), where_(std::max<size_t>(l.max_entries / 2, 1)), where_old_(where_.max_size()) {}

void DirReadAhead::listed(uint64_t dir, uint64_t index, uint64_t ino, bool first) {
  // Past any real listing, or no inode: not remembered.
  if (index > std::numeric_limits<uint32_t>::max() || ino == 0) return;
  std::lock_guard lk(mu_);
  const Where w{dir, uint32_t(index), first};
  // A full current generation becomes the old one, and what the old one
  // held goes.
  if (!where_.put(ino, w)) {
    std::swap(where_, where_old_);
    where_.clear();
    where_.put(ino, w);
  }
}

std::vector<uint64_t> DirReadAhead::on_first_read(uint64_t ino, const Walk& walk) {
  uint64_t dir = 0, from = 0;
  unsigned window = 0;
  {
    std::lock_guard lk(mu_);
    const Where* w = where_.find(ino);
    if (!w) w = where_old_.find(ino);
    if (!w) return {};
    struct {
      uint64_t dir, index;
      bool first;
    } const at{w->dir, w->index, w->first};
    DirState* st = find_either(dirs_, dirs_old_, at.dir);
    if (!st) {
      age(dirs_, dirs_old_);
      st = &dirs_[at.dir];
      *st = DirState{at.index, at.index + 1, 0};
    } else if (at.index <= st->last || at.index > std::max(st->last + kGap, st->pushed_end)) {
      // A jump (or a reader starting over): the window closes.
      *st = DirState{at.index, at.index + 1, 0};
    } else {
      // In order: just after the last file read, or anywhere up to the end
      // of what was pushed (the reader read the pushed files from the page
      // cache). Push again once the reader is into the second half of the
      // last push.
      st->last = at.index;
      if (st->window != 0 && at.index + 1 + st->window / 2 < st->pushed_end) return {};
      window = st->window == 0 ? limits_.first_window : std::min(st->window * 4, limits_.max_window);
    }
    // A reader starting at a directory's first file may be going through all
    // of them: push a few, which costs little if it is not.
    if (window == 0 && at.first) window = limits_.start_window;
    if (window == 0) return {};
    st->window = window;
    dir = at.dir;
    from = std::max(at.index + 1, st->pushed_end);
    st->pushed_end = from;  // a concurrent reader now starts past us
  }

  std::vector<uint64_t> out;
  uint64_t bytes = 0, end = from;
  walk(dir, from, [&](uint64_t index, const Entry& e) {
    if (out.size() >= window || bytes >= limits_.max_bytes) return false;
    end = index + 1;
    if (e.regular && e.size > 0 && e.size <= limits_.max_file) {
      out.push_back(e.ino);
      bytes += e.size;
    }
    return true;
  });

  std::lock_guard lk(mu_);
  if (DirState* st = find_either(dirs_, dirs_old_, dir)) st->pushed_end = std::max(st->pushed_end, end);
  return out;
}

}  // namespace nydus::fuse
