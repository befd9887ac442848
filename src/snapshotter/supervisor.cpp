#include "snapshotter/supervisor.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

namespace nydus::snapshotter {

SResult<std::unique_ptr<Supervisor>> Supervisor::start(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path))
    return snap_error(Code::kInternal, "supervisor socket path too long: {}", path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return snap_error(Code::kInternal, "supervisor socket: {}", std::strerror(errno));
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 8) != 0) {
    int e = errno;
    ::close(fd);
    return snap_error(Code::kInternal, "supervisor listen on {}: {}", path, std::strerror(e));
  }
  std::unique_ptr<Supervisor> s(new Supervisor(path, fd));
  s->thread_ = std::thread([p = s.get()] { p->serve(); });
  return s;
}

Supervisor::~Supervisor() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  ::close(lfd_);
  ::unlink(path_.c_str());
  if (held_.fd >= 0) ::close(held_.fd);
}

bool Supervisor::holds_state() const {
  std::lock_guard lk(mu_);
  return held_.fd >= 0;
}

void Supervisor::serve() {
  while (!stop_) {
    pollfd p{lfd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int conn = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    // A daemon saving its state writes at once; one taking it back only reads.
    pollfd c{conn, POLLIN, 0};
    if (::poll(&c, 1, 500) > 0) {
      auto st = receive_state_on(conn, std::chrono::seconds(5), 16 << 20);
      if (st) {
        std::lock_guard lk(mu_);
        if (held_.fd >= 0) ::close(held_.fd);
        held_ = std::move(*st);
        spdlog::debug("supervisor {}: holding {} bytes of state and a fd", path_, held_.data.size());
      } else {
        spdlog::warn("supervisor {}: receive: {}", path_, st.error().message);
      }
    } else {
      std::string data;
      int fd = -1;
      {
        std::lock_guard lk(mu_);
        data = held_.data;
        fd = held_.fd;
      }
      // The held fd stays ours: the kernel duplicates it into the message.
      if (fd < 0)
        spdlog::warn("supervisor {}: a daemon asks for state, none held", path_);
      else if (auto st = send_state_on(conn, data, fd, std::chrono::seconds(5)); !st)
        spdlog::warn("supervisor {}: send: {}", path_, st.error().message);
      else
        spdlog::info("supervisor {}: handed the state over", path_);
    }
    ::close(conn);
  }
}

}  // namespace nydus::snapshotter
