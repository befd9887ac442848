#include "fanotify/event_parser.h"

#include <cstring>

#include <fmt/format.h>

#include "fanotify/fanotify_abi.h"

namespace nydus::fanotify {

namespace {

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // the buffer may not be aligned for T
  return v;
}

// Walk the info records of one event (bytes after the metadata).
void parse_info(std::span<const uint8_t> info, Event& ev) {
  size_t pos = 0;
  while (pos < info.size()) {
    if (info.size() - pos < sizeof(fanotify_event_info_header)) {
      ev.kind = EventKind::kMalformed;
      ev.error = fmt::format("truncated info header at +{}", pos);
      return;
    }
    auto hdr = load<fanotify_event_info_header>(info.data() + pos);
    if (hdr.len < sizeof(fanotify_event_info_header) || hdr.len > info.size() - pos) {
      ev.kind = EventKind::kMalformed;
      ev.error = fmt::format("info record type {} has length {} with {} bytes left", hdr.info_type, hdr.len,
                             info.size() - pos);
      return;
    }
    if (hdr.info_type == FAN_EVENT_INFO_TYPE_RANGE) {
      if (hdr.len != sizeof(EventInfoRange)) {
        ev.kind = EventKind::kMalformed;
        ev.error = fmt::format("range record has length {}", hdr.len);
        return;
      }
      if (ev.has_range) {
        ev.kind = EventKind::kMalformed;
        ev.error = "two range records";
        return;
      }
      auto r = load<EventInfoRange>(info.data() + pos);
      if (r.count > UINT64_MAX - r.offset) {
        ev.kind = EventKind::kMalformed;
        ev.error = fmt::format("range {:#x}+{:#x} overflows", r.offset, r.count);
        return;
      }
      ev.has_range = true;
      ev.offset = r.offset;
      ev.count = r.count;
    }
    // Other record types (pidfd, fid, error, ...) are not ours to act on.
    pos += hdr.len;
  }
}

}  // namespace

Batch parse_events(std::span<const uint8_t> buf) {
  Batch b;
  size_t pos = 0;
  while (pos < buf.size()) {
    const size_t left = buf.size() - pos;
    if (left < sizeof(fanotify_event_metadata)) {
      b.truncated = true;
      b.error = fmt::format("{} trailing bytes, less than an event header", left);
      break;
    }
    auto m = load<fanotify_event_metadata>(buf.data() + pos);
    Event ev;
    ev.fd = m.fd;
    ev.pid = m.pid;
    ev.mask = m.mask;
    if (m.vers != FANOTIFY_METADATA_VERSION || m.metadata_len < sizeof(fanotify_event_metadata) ||
        m.event_len < m.metadata_len || m.event_len > left) {
      // The header was readable, so its fd is known: deny it. Nothing after
      // it can be delimited.
      ev.kind = EventKind::kMalformed;
      ev.error = fmt::format("event header vers {} metadata_len {} event_len {} with {} bytes left", m.vers,
                             m.metadata_len, m.event_len, left);
      b.events.push_back(std::move(ev));
      b.truncated = true;
      b.error = b.events.back().error;
      break;
    }
    if (m.mask & FAN_Q_OVERFLOW) {
      ev.kind = EventKind::kOverflow;
    } else if ((m.mask & FAN_PRE_ACCESS) && m.fd >= 0) {
      ev.kind = EventKind::kPreAccess;
      parse_info(buf.subspan(pos + m.metadata_len, m.event_len - m.metadata_len), ev);
    } else if (m.mask & FAN_PRE_ACCESS) {
      ev.kind = EventKind::kMalformed;  // a permission event we cannot answer
      ev.error = "pre-access event without an fd";
    } else {
      ev.kind = EventKind::kOther;
    }
    b.events.push_back(std::move(ev));
    pos += m.event_len;
  }
  return b;
}

FillRange fill_range(uint64_t offset, uint64_t count, uint64_t size, uint64_t align) {
  if (offset >= size) return {};
  // count may run past EOF (readahead); clamp before aligning so nothing overflows.
  const uint64_t end = count > size - offset ? size : offset + count;
  const uint64_t start = offset - offset % align;
  uint64_t aend = end % align ? end + (align - end % align) : end;
  if (aend > size || aend < end) aend = size;
  return {start, aend - start};
}

}  // namespace nydus::fanotify
