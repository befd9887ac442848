// The cachefiles on-demand ABI (Linux >= 5.19, <linux/cachefiles.h>), spelled
// out here so the layout is checked at compile time and does not depend on the
// build host's kernel headers. See ../shared/docs/fscache-protocol.md §2.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nydus::fscache {

enum class Opcode : uint32_t { kOpen = 0, kClose = 1, kRead = 2 };

struct MsgHeader {  // struct cachefiles_msg
  uint32_t msg_id;
  uint32_t opcode;
  uint32_t len;  // whole message, header included
  uint32_t object_id;
};

struct OpenBody {  // struct cachefiles_open
  uint32_t volume_key_size;  // includes the volume key's NUL
  uint32_t cookie_key_size;  // binary, no NUL
  uint32_t fd;               // anon fd, already installed in the reader's fd table
  uint32_t flags;            // none defined up to 6.12
};

struct ReadBody {  // struct cachefiles_read
  uint64_t off;
  uint64_t len;
};

static_assert(sizeof(MsgHeader) == 16 && sizeof(OpenBody) == 16 && sizeof(ReadBody) == 16);
static_assert(offsetof(OpenBody, fd) == 8);

// A read(2) of the device returns one message of at most this many bytes.
inline constexpr size_t kMsgMaxSize = 1024;
// Keys are bounded by the kernel (NAME_MAX volume names, 255-byte cookie keys).
inline constexpr size_t kMaxVolumeKey = 256;  // with its NUL
inline constexpr size_t kMaxCookieKey = 255;
// ioctl(anon_fd, CACHEFILES_IOC_READ_COMPLETE, msg_id): _IOW(0x98, 1, int).
inline constexpr unsigned long kIocReadComplete = 0x40049801UL;
// Writes into an anon fd are direct I/O into the cache file: page-aligned
// offsets (ENOBUFS otherwise since 6.8), block-aligned lengths and buffers.
inline constexpr uint64_t kPageSize = 4096;

}  // namespace nydus::fscache
