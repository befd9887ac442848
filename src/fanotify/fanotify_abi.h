// The fanotify pre-content ABI (Linux 6.14+). Debian 12's <linux/fanotify.h>
// predates it, so the missing pieces are defined here, each guarded so newer
// headers win. Values are from the kernel's include/uapi/linux/fanotify.h.
#pragma once

#include <cstdint>

#include <linux/fanotify.h>
#include <sys/fanotify.h>

#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000  // pre-content hook: a read/write of a range
#endif
#ifndef FAN_CLASS_PRE_CONTENT
#define FAN_CLASS_PRE_CONTENT 0x00000008
#endif
#ifndef FAN_EVENT_INFO_TYPE_PIDFD
#define FAN_EVENT_INFO_TYPE_PIDFD 4
#endif
#ifndef FAN_EVENT_INFO_TYPE_ERROR
#define FAN_EVENT_INFO_TYPE_ERROR 5
#endif
#ifndef FAN_EVENT_INFO_TYPE_RANGE
#define FAN_EVENT_INFO_TYPE_RANGE 6
#endif
#ifndef FAN_ERRNO_BITS
#define FAN_ERRNO_BITS 8
#define FAN_ERRNO_SHIFT (32 - FAN_ERRNO_BITS)
#define FAN_ERRNO_MASK ((1 << FAN_ERRNO_BITS) - 1)
#define FAN_DENY_ERRNO(err) (FAN_DENY | ((((uint32_t)(err)) & FAN_ERRNO_MASK) << FAN_ERRNO_SHIFT))
#endif

namespace nydus::fanotify {

// struct fanotify_event_info_range, laid out as the kernel writes it.
struct EventInfoRange {
  fanotify_event_info_header hdr;
  uint32_t pad;
  uint64_t offset;
  uint64_t count;
};
static_assert(sizeof(EventInfoRange) == 24);
static_assert(sizeof(fanotify_event_metadata) == 24);
static_assert(sizeof(fanotify_event_info_header) == 4);

}  // namespace nydus::fanotify
