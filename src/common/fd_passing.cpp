#include "common/fd_passing.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace nydus {

namespace {

using Clock = std::chrono::steady_clock;

Result<int> connect_unix(const std::filesystem::path& sock) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (sock.native().size() >= sizeof(addr.sun_path))
    return errorf(Errc::kInvalidArgument, "supervisor socket path {} is too long", sock.string());
  std::strcpy(addr.sun_path, sock.c_str());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return sys_error("socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    auto e = sys_error(fmt::format("connect to supervisor {}", sock.string()));
    ::close(fd);
    return e;
  }
  return fd;
}

// Wait for `events` on `fd` until `deadline`.
Status wait_for(int fd, short events, Clock::time_point deadline, std::string_view what) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return errorf(Errc::kIo, "timed out {}", what);
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, int(left));
    if (n > 0) return ok();
    if (n < 0 && errno != EINTR) return sys_error(what);
  }
}

}  // namespace

ssize_t send_with_fd(int sock, const void* data, size_t len, int fd, int flags) {
  iovec iov{const_cast<void*>(data), len};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (fd >= 0) {
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof(ctrl);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t n;
  do n = ::sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n;
}

ssize_t recv_with_fds(int sock, void* buf, size_t len, std::vector<int>& fds, int flags, int* msg_flags) {
  iovec iov{buf, len};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * 64)];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctrl;
  mh.msg_controllen = sizeof(ctrl);
  ssize_t n;
  do n = ::recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < nfd; ++i) {
      int f;
      std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.push_back(f);
    }
  }
  if (msg_flags) *msg_flags = mh.msg_flags;
  return n;
}

Status send_state_on(int conn, std::string_view data, int fd, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  bool fd_sent = fd < 0;
  size_t off = 0;
  // The fd rides on the first chunk (a zero-length message cannot carry it).
  std::string payload(data);
  if (payload.empty()) payload = "{}";
  while (off < payload.size()) {
    NYDUS_TRY(wait_for(conn, POLLOUT, deadline, "sending state to the supervisor"));
    const ssize_t n = send_with_fd(conn, payload.data() + off, payload.size() - off, fd_sent ? -1 : fd, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN) continue;
      return sys_error("sending state to the supervisor");
    }
    fd_sent = true;
    off += size_t(n);
  }
  return ok();
}

Result<HandedState> receive_state_on(int conn, std::chrono::milliseconds timeout, size_t max_bytes) {
  const auto deadline = Clock::now() + timeout;
  HandedState out;
  std::vector<int> fds;
  auto fail = [&](auto err) {
    for (int f : fds) ::close(f);
    return err;
  };
  std::vector<char> buf(64 << 10);
  for (;;) {
    if (auto st = wait_for(conn, POLLIN, deadline, "receiving state from the supervisor"); !st)
      return fail(std::unexpected(st.error()));
    int mflags = 0;
    const ssize_t n = recv_with_fds(conn, buf.data(), buf.size(), fds, MSG_DONTWAIT, &mflags);
    if (n < 0) {
      if (errno == EAGAIN) continue;
      return fail(sys_error("receiving state from the supervisor"));
    }
    if (mflags & MSG_CTRUNC) return fail(errorf(Errc::kCorrupt, "supervisor sent more fds than expected"));
    if (n == 0) break;
    if (out.data.size() + size_t(n) > max_bytes)
      return fail(errorf(Errc::kCorrupt, "supervisor state larger than {} bytes", max_bytes));
    out.data.append(buf.data(), size_t(n));
  }
  if (fds.size() != 1)
    return fail(errorf(Errc::kCorrupt, "expected exactly one fd from the supervisor, got {}", fds.size()));
  out.fd = fds[0];
  return out;
}

Status send_state(const std::filesystem::path& sock, std::string_view data, int fd, std::chrono::milliseconds timeout) {
  NYDUS_ASSIGN_OR_RETURN(int conn, connect_unix(sock));
  Status st = send_state_on(conn, data, fd, timeout);
  ::close(conn);
  return st;
}

Result<HandedState> receive_state(const std::filesystem::path& sock, std::chrono::milliseconds timeout,
                                  size_t max_bytes) {
  NYDUS_ASSIGN_OR_RETURN(int conn, connect_unix(sock));
  auto r = receive_state_on(conn, timeout, max_bytes);
  ::close(conn);
  return r;
}

}  // namespace nydus
