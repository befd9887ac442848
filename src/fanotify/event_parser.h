// Parsing of the byte stream read(2) returns from a fanotify group fd. The
// kernel is trusted to write well-formed events, but every length is still
// checked before use: a malformed event is reported so its fd can be denied
// and closed, and a batch whose framing is broken stops at that point (the
// rest of the buffer cannot be delimited).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nydus::fanotify {

enum class EventKind {
  kPreAccess,  // FAN_PRE_ACCESS with a usable fd: decide and answer
  kOverflow,   // FAN_Q_OVERFLOW: events were lost (no fd)
  kOther,      // some other event; answer FAN_ALLOW if it carries an fd
  kMalformed,  // bad info records: deny the fd (if any), never allow
};

struct Event {
  EventKind kind = EventKind::kMalformed;
  int fd = -1;  // FAN_NOFD (-1) when none
  int32_t pid = 0;
  uint64_t mask = 0;
  bool has_range = false;  // a FAN_EVENT_INFO_TYPE_RANGE record was present
  uint64_t offset = 0;
  uint64_t count = 0;
  std::string error;  // why kMalformed
};

struct Batch {
  std::vector<Event> events;
  // Set when the framing broke: events after the break are not in `events`
  // (their fds, if the kernel gave any, cannot be found).
  bool truncated = false;
  std::string error;
};

Batch parse_events(std::span<const uint8_t> buf);

// A pre-content range aligned outward to `align` and clamped to `size`.
// Empty (len 0) when the range starts at or beyond `size`: nothing to fill.
struct FillRange {
  uint64_t offset = 0;
  uint64_t len = 0;
};
FillRange fill_range(uint64_t offset, uint64_t count, uint64_t size, uint64_t align = 4096);

}  // namespace nydus::fanotify
