// The pre-content events a fanotify daemon has read but not answered yet,
// in a shared file mapping that outlives the daemon. Why: a permission event
// the kernel has handed to a reader stays pending in the group until someone
// answers its fd number; if the daemon dies while a supervisor keeps the
// group alive, the process that was blocked on that event waits forever,
// and nobody else knows which range it wanted. The daemon that takes the
// group over reads this table, fills each range and answers each number.
//
// One slot per event fd number (fd numbers are unique among a process's
// pending events: the fd stays open until answered). A slot is written
// before any decision on the event and cleared when it is answered; stores
// go to the page cache, so they survive a kill -9 without any syscall.
// Event fds numbered kSlots or above are not recorded (a takeover answers
// them with a denial, like the events read in the instant before recording).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "common/result.h"

namespace nydus::fanotify {

class InflightJournal {
 public:
  static constexpr uint32_t kSlots = 65536;

  struct Entry {
    int fd;
    uint32_t blob;
    uint64_t offset;
    uint64_t len;
  };

  // A fresh, empty journal at `path` (an existing file there is replaced).
  static Result<std::unique_ptr<InflightJournal>> create(const std::filesystem::path& path);
  // An existing journal, left by a daemon that is gone.
  static Result<std::unique_ptr<InflightJournal>> open(const std::filesystem::path& path);
  ~InflightJournal();
  InflightJournal(const InflightJournal&) = delete;
  InflightJournal& operator=(const InflightJournal&) = delete;

  const std::filesystem::path& path() const { return path_; }

  void record(int fd, uint32_t blob, uint64_t offset, uint64_t len);
  void clear(int fd);
  // The recorded events, in fd order (untrusted: the caller bounds blob and range).
  std::vector<Entry> pending() const;

 private:
  struct Header;
  struct Slot;
  InflightJournal(std::filesystem::path path, void* map) : path_(std::move(path)), map_(map) {}
  Header* header() const;
  Slot* slots() const;

  std::filesystem::path path_;
  void* map_ = nullptr;
};

}  // namespace nydus::fanotify
