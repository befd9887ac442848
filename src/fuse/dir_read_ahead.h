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
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

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
  struct Where {
    uint64_t ino = 0;  // 0: an empty slot (no inode is 0)
    uint64_t dir = 0;
    uint32_t index = 0;
    uint32_t first = 0;
  };
  // One generation of Where records: open addressing with linear probing,
  // at most half full. Calloc'd: only the pages a listing reaches become
  // resident.
  class WhereTable {
   public:
    explicit WhereTable(size_t max_count);
    size_t count() const { return count_; }
    Where* find(uint64_t ino) const;
    void put(const Where& w);  // replaces the record of w.ino, if any
    void clear();

   private:
    struct Free {
      void operator()(Where* p) const { std::free(p); }
    };
    std::unique_ptr<Where[], Free> slots_;  // null when out of memory: remembers nothing
    size_t mask_ = 0;
    size_t count_ = 0;
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
  WhereTable where_, where_old_;
  std::unordered_map<uint64_t, DirState> dirs_, dirs_old_;
};

}  // namespace nydus::fuse
