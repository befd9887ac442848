#include "supervise.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include <fmt/format.h>

#include "common/fd_passing.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop = true; }

}  // namespace

int run_supervisor(const std::string& path) {
  const int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (lfd < 0 || path.size() >= sizeof(addr.sun_path)) {
    fmt::print(stderr, "nydusctl supervise: bad socket path {}\n", path);
    return 1;
  }
  std::strcpy(addr.sun_path, path.c_str());
  ::unlink(path.c_str());
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(lfd, 8) != 0) {
    fmt::print(stderr, "nydusctl supervise: listen on {}: {}\n", path, std::strerror(errno));
    return 1;
  }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  fmt::print(stderr, "nydusctl supervise: listening on {}\n", path);

  nydus::HandedState held;
  while (!g_stop) {
    pollfd p{lfd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const int conn = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    // A daemon saving its state writes at once; one restoring only reads.
    pollfd c{conn, POLLIN, 0};
    if (::poll(&c, 1, 500) > 0) {
      auto st = nydus::receive_state_on(conn, std::chrono::seconds(5), 16 << 20);
      if (st) {
        if (held.fd >= 0) ::close(held.fd);
        held = std::move(*st);
        fmt::print(stderr, "nydusctl supervise: holding {} bytes of state and fd {}\n", held.data.size(), held.fd);
      } else {
        fmt::print(stderr, "nydusctl supervise: receive: {}\n", st.error().message);
      }
    } else if (held.fd >= 0) {
      auto st = nydus::send_state_on(conn, held.data, held.fd, std::chrono::seconds(5));
      fmt::print(stderr, "nydusctl supervise: {}\n", st ? "handed the state over" : st.error().message);
    } else {
      fmt::print(stderr, "nydusctl supervise: nothing to hand over yet\n");
    }
    ::close(conn);
  }
  if (held.fd >= 0) ::close(held.fd);
  ::close(lfd);
  ::unlink(path.c_str());
  return 0;
}
