// How a classic /dev/fuse worker polls for the next request before it sleeps
// (FuseChannel::io_read). A reader walking a tree sends its next request
// within microseconds of our reply; taking it without the sleep and wake-up of
// a round trip cut a warm stat walk of a 40,872-entry rootfs from 0.53 to
// 0.36-0.41 s and its tar from 4.21 to 2.7-3.2 s (bench/README.md, "Polling
// for the next request").
//
// The poller yields between tries. A yield that returns at once (0.4 us here,
// 1.8 us at the 99.9th percentile) means nobody else wanted this CPU, so the
// poll costs no one anything. A yield that took longer means another thread
// ran meanwhile: the CPUs are busy (a tar and its pipe beside the daemon), and
// a poller that goes on keeps its fair share of a contended CPU. It stops
// then. That cut nydusd's CPU by 10-12 % in the warm and empty-cache tars of
// that rootfs, at the same wall times or better; the stat walk and the python
// start, which leave a CPU idle, did not change.
#pragma once

#include <chrono>

namespace nydus::fuse {

struct PollLimits {
  std::chrono::microseconds budget{200};    // poll no longer than this in all
  std::chrono::microseconds yield_cap{20};  // stop after a yield that took longer
};

// Calls try_take() until it returns true (a request, or an error other than
// "nothing waiting"), the budget is spent, or one yield() took longer than
// yield_cap; a try follows every yield, the long one included. Returns
// whether try_take() succeeded. `now` returns a steady_clock::time_point.
template <class TryTake, class Yield, class Now>
bool poll_for_request(TryTake&& try_take, Yield&& yield, Now&& now, PollLimits limits) {
  auto last = now();
  const auto until = last + limits.budget;
  while (last < until) {
    yield();
    const auto t = now();
    if (try_take()) return true;
    if (t - last > limits.yield_cap) return false;
    last = t;
  }
  return false;
}

}  // namespace nydus::fuse
