// A daemon's supervisor, as nydus-snapshotter's pkg/supervisor: a unix socket
// (<root>/supervisor/<daemon id>.sock, nydusd --supervisor) to which a FUSE
// nydusd saves its state with the /dev/fuse fd attached (PUT .../fuse/sendfd)
// and from which a failover nydusd (--upgrade) takes them back (PUT
// .../fuse/takeover). While it holds the fd the FUSE connection outlives a
// dead daemon: readers wait in the kernel instead of getting ENOTCONN.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/fd_passing.h"
#include "snapshotter/errors.h"

namespace nydus::snapshotter {

class Supervisor {
 public:
  // Listens on `path` (a stale socket there is replaced) and serves it on a thread.
  static SResult<std::unique_ptr<Supervisor>> start(const std::string& path);
  ~Supervisor();  // stops serving, closes the held fd, removes the socket
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  const std::string& path() const { return path_; }
  // A daemon's state is held (what a takeover needs).
  bool holds_state() const;

 private:
  Supervisor(std::string path, int listen_fd) : path_(std::move(path)), lfd_(listen_fd) {}
  void serve();

  std::string path_;
  int lfd_ = -1;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  HandedState held_;
  std::thread thread_;
};

}  // namespace nydus::snapshotter
