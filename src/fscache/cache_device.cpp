#include "fscache/cache_device.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/fd_passing.h"
#include "fscache/cachefiles_abi.h"

namespace nydus::fscache {

namespace {

Status set_nonblocking(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return sys_error("fcntl O_NONBLOCK");
  return ok();
}

bool is_socket(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

Result<CacheDevice> CacheDevice::open(const std::filesystem::path& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return sys_error(fmt::format("{}{}", path.string(),
                                 err == ENOENT ? " (no cachefiles device: the kernel needs CONFIG_CACHEFILES_ONDEMAND; "
                                                 "use `nydusd fuse` or `nydusd fanotify` instead)"
                                               : ""),
                     err);
  }
  if (S_ISSOCK(st.st_mode)) {
    const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return sys_error("socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.native().size() >= sizeof(addr.sun_path)) {
      ::close(fd);
      return errorf(Errc::kInvalidArgument, "socket path {} is too long", path.string());
    }
    std::strcpy(addr.sun_path, path.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      auto e = sys_error(fmt::format("connect to cachefiles emulator {}", path.string()));
      ::close(fd);
      return e;
    }
    CacheDevice dev(fd, true);
    NYDUS_TRY(set_nonblocking(fd));
    return dev;
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return sys_error(fmt::format("open {}{}", path.string(),
                                 err == EBUSY ? " (another daemon holds it: only one opener is allowed)"
                                 : err == EPERM ? " (needs CAP_SYS_ADMIN)"
                                                : ""),
                     err);
  }
  return CacheDevice(fd, false);
}

Result<CacheDevice> CacheDevice::adopt(int fd) {
  if (fd < 0) return errorf(Errc::kInvalidArgument, "no cachefiles device fd to adopt");
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) return sys_error("fcntl FD_CLOEXEC on the handed-over device");
  const bool emu = is_socket(fd);
  CacheDevice dev(fd, emu);
  if (emu) NYDUS_TRY(set_nonblocking(fd));
  return dev;
}

CacheDevice::CacheDevice(CacheDevice&& o) noexcept : fd_(o.fd_), emulated_(o.emulated_) { o.fd_ = -1; }

CacheDevice& CacheDevice::operator=(CacheDevice&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    emulated_ = o.emulated_;
    o.fd_ = -1;
  }
  return *this;
}

CacheDevice::~CacheDevice() {
  if (fd_ >= 0) ::close(fd_);
}

Result<size_t> CacheDevice::read_msg(std::span<uint8_t> buf) {
  if (buf.size() < kMsgMaxSize) return errorf(Errc::kInternal, "message buffer smaller than {}", kMsgMaxSize);
  if (!emulated_) {
    for (;;) {
      const ssize_t n = ::read(fd_, buf.data(), buf.size());
      if (n >= 0) return size_t(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 0;
      return sys_error("read /dev/cachefiles");
    }
  }
  std::vector<int> fds;
  const ssize_t n = recv_with_fds(fd_, buf.data(), buf.size(), fds, 0);
  if (n < 0) return errno == EAGAIN ? Result<size_t>(0) : sys_error("recvmsg from the cachefiles emulator");
  // Every received fd is ours: keep the first (the anon fd of an OPEN), close the rest.
  const int passed = fds.empty() ? -1 : fds[0];
  for (size_t i = 1; i < fds.size(); ++i) ::close(fds[i]);
  if (n == 0) {
    if (passed >= 0) ::close(passed);
    return errorf(Errc::kIo, "the cachefiles emulator closed the channel");
  }
  MsgHeader h;
  if (size_t(n) >= sizeof(MsgHeader) + sizeof(OpenBody) && (std::memcpy(&h, buf.data(), sizeof(h)), true) &&
      h.opcode == uint32_t(Opcode::kOpen)) {
    // The number in the message is the emulator's; ours is the one received.
    // With none received, name an fd that cannot be one of ours.
    const uint32_t fd = passed >= 0 ? uint32_t(passed) : UINT32_MAX;
    std::memcpy(buf.data() + sizeof(MsgHeader) + offsetof(OpenBody, fd), &fd, sizeof(fd));
  } else if (passed >= 0) {
    ::close(passed);
  }
  return size_t(n);
}

Status CacheDevice::command(std::string_view cmd) {
  for (;;) {
    const ssize_t n = emulated_ ? ::send(fd_, cmd.data(), cmd.size(), MSG_NOSIGNAL) : ::write(fd_, cmd.data(), cmd.size());
    if (n == ssize_t(cmd.size())) return ok();
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(fmt::format("cachefiles command \"{}\"", cmd));
    return errorf(Errc::kIo, "cachefiles command \"{}\": short write", cmd);
  }
}

Status CacheDevice::complete_read(int anon_fd, uint32_t msg_id) {
  if (!emulated_) {
    if (::ioctl(anon_fd, kIocReadComplete, static_cast<unsigned long>(msg_id)) != 0)
      return sys_error(fmt::format("READ_COMPLETE of msg {}", msg_id));
    return ok();
  }
  const std::string text = fmt::format("cread {}", msg_id);
  if (send_with_fd(fd_, text.data(), text.size(), anon_fd, 0) != ssize_t(text.size()))
    return sys_error(fmt::format("READ_COMPLETE of msg {} (emulator)", msg_id));
  return ok();
}

bool CacheDevice::is_object_fd(int fd) const {
  if (fd < 0 || fd == fd_) return false;
  if (emulated_) {
    struct stat st;
    return ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  }
  char link[64];
  const ssize_t n = ::readlink(fmt::format("/proc/self/fd/{}", fd).c_str(), link, sizeof(link) - 1);
  if (n <= 0) return false;
  return std::string_view(link, size_t(n)) == "anon_inode:[cachefiles]";
}

Status bind_cache(CacheDevice& dev, const std::filesystem::path& work_dir, const std::string& tag) {
  // The kernel resolves the path at bind time; give it an absolute one.
  NYDUS_TRY(dev.command("dir " + std::filesystem::absolute(work_dir).lexically_normal().string()));
  if (!tag.empty()) NYDUS_TRY(dev.command("tag " + tag));
  return dev.command("bind ondemand");
}

Status restore_cache(CacheDevice& dev) { return dev.command("restore"); }

}  // namespace nydus::fscache
