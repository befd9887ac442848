// Handing a daemon's state and one file descriptor to a supervisor and back,
// the way nydus-snapshotter's supervisor expects it: the daemon connects to
// the supervisor's unix stream socket and sends the state bytes with the fd
// attached (SCM_RIGHTS), then closes; to restore, a new daemon connects and
// reads state bytes and exactly one fd until EOF. Used for live upgrade and
// failover: the fd (e.g. /dev/cachefiles) outlives the daemon that opened it.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "common/result.h"

namespace nydus {

struct HandedState {
  std::string data;
  int fd = -1;  // owned by the receiver, close-on-exec
};

// Connect to `sock` and send `data` with `fd` attached.
Status send_state(const std::filesystem::path& sock, std::string_view data, int fd,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
// Connect to `sock` and receive state bytes (at most `max_bytes`) and one fd.
Result<HandedState> receive_state(const std::filesystem::path& sock,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(10),
                                  size_t max_bytes = 16 << 20);

// One sendmsg(2) of `data` with `fd` attached as SCM_RIGHTS (none if fd < 0).
// Returns what sendmsg returned (errno set on -1).
ssize_t send_with_fd(int sock, const void* data, size_t len, int fd, int flags);
// One recvmsg(2) into `buf`; every descriptor that came with it is appended to
// `fds` (close-on-exec; the caller owns them). `msg_flags` gets the message
// flags (MSG_CTRUNC: some fds were dropped). Returns what recvmsg returned.
ssize_t recv_with_fds(int sock, void* buf, size_t len, std::vector<int>& fds, int flags, int* msg_flags = nullptr);

// The two halves on an already connected socket (the supervisor side uses these).
Status send_state_on(int conn, std::string_view data, int fd, std::chrono::milliseconds timeout);
Result<HandedState> receive_state_on(int conn, std::chrono::milliseconds timeout, size_t max_bytes);

}  // namespace nydus
