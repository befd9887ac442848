// Read-ahead across the files of one directory. A reader that goes through a
// directory's files in listing order (tar, cp -r, an image scanner) pays a
// FUSE round trip for the first READ of every file, even with the bytes in
// the blob cache: on a rootfs most files are one READ each, so the round
// trips are most of the cost. Once two reads follow the listing order, the
// daemon pushes the next files' bytes into the kernel's page cache
// (FUSE_NOTIFY_STORE, done by PagePusher), and the reader finds them there.
//
// Like the kernel's page read-ahead, the window opens on sequential reads (a
// small one on a read of the directory's first file), grows fourfold each
// time the reader gets near its end, and closes on a jump; a reader that
// picks single files out of a directory (an interpreter importing modules, a
// loader opening libraries) does not open it past that first small push.
// Only small files are pushed (big ones stream through the kernel's own
// read-ahead). The reader's reads of pushed files are not seen here: the
// READ of the first file past a push is what moves the window on.
//
// This class decides only; it neither reads nor pushes. State is kept for
// recently listed directories in two generations (bounded memory). Every
// READDIRPLUS entry records where its file sits: those records live in flat
// tables that allocate nothing per entry (node maps cost a stat walk of a
// rootfs ~12 % of the daemon's CPU in malloc, free and rehashing).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/u64_table.h"

namespace nydus::fuse {

class DirReadAhead {
 public:
  struct Limits {
    uint64_t max_file = 1ull << 20;    // bigger files are left to READ
    unsigned start_window = 8;         // files pushed after a read of the first file
    unsigned first_window = 16;        // files pushed when two reads follow in order
    unsigned max_window = 1024;        // files per push, at most
    uint64_t max_bytes = 16ull << 20;   // bytes per push, at most
    size_t max_entries = 16384;        // entries remembered (both generations)
  };

  // A directory entry as the walk over a listing sees it.
  struct Entry {
    uint64_t ino = 0;
    bool regular = false;
    uint64_t size = 0;
  };
  // Calls `fn(index, entry)` for `dir`'s entries from `from` on, in listing
  // order, until `fn` returns false.
  using Walk = std::function<void(uint64_t dir, uint64_t from, const std::function<bool(uint64_t, const Entry&)>& fn)>;

  DirReadAhead() : DirReadAhead(Limits{}) {}
  explicit DirReadAhead(Limits l);

  // A listing of `dir` returned regular file `ino` as entry `index`
  // (0-based); `first`: no regular file comes before it.
  void listed(uint64_t dir, uint64_t index, uint64_t ino, bool first);

  // A READ at offset 0 of `ino`: the inodes whose bytes to push now, in
  // listing order (empty unless the reader follows the listing).
  std::vector<uint64_t> on_first_read(uint64_t ino, const Walk& walk);

 private:
  struct Where {  // by inode number
    uint64_t dir = 0;
    uint32_t index = 0;
    bool first = false;
  };
  struct DirState {
    uint64_t last = 0;        // index of the last file read
    uint64_t pushed_end = 0;  // entries before this one were pushed or passed over
    unsigned window = 0;      // files in the last push (0: closed)
  };
  // Keep `cur` within half the entry budget: when full it becomes `old`,
  // and what `old` held goes.
  template <class Map>
  void age(Map& cur, Map& old) {
    if (cur.size() < limits_.max_entries / 2) return;
    old = std::move(cur);
    cur.clear();
  }

  Limits limits_;
  std::mutex mu_;  // held for map updates only, never across the walk
  U64Table<Where> where_, where_old_;
  std::unordered_map<uint64_t, DirState> dirs_, dirs_old_;
};

}  // namespace nydus::fuse
