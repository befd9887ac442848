// How many reads this process's blob caches are keeping someone waiting for
// right now (a FUSE read, a fanotify reader's fill: a fetch on a miss, not
// prefetch or read-ahead). Background fetchers step aside while it is above
// zero: on a narrow link their requests share the bandwidth with the one a
// reader is blocked on (8 prefetch streams leave a read 1/9 of the link).
#pragma once

#include <atomic>

namespace nydus::storage {

class DemandGauge {
 public:
  static int waiting() { return counter().load(std::memory_order_relaxed); }

  // Counts one waiting read for its lifetime.
  class Waiting {
   public:
    Waiting() { counter().fetch_add(1, std::memory_order_relaxed); }
    ~Waiting() { counter().fetch_sub(1, std::memory_order_relaxed); }
    Waiting(const Waiting&) = delete;
    Waiting& operator=(const Waiting&) = delete;
  };

 private:
  static std::atomic<int>& counter() {
    static std::atomic<int> n{0};
    return n;
  }
};

}  // namespace nydus::storage
