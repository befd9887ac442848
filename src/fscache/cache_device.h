// The daemon's end of the cachefiles on-demand channel: /dev/cachefiles, or
// the kernel emulator of the tests (a SOCK_SEQPACKET unix socket carrying the
// same message bytes, with OPEN fds passed as SCM_RIGHTS). Everything the
// daemon does to the kernel goes through here, so the two stay one code path:
//  - read_msg: one message per call, 0 when drained;
//  - command:  one text command per write(2) ("copen 5,4096", "restore", ...);
//  - complete_read: CACHEFILES_IOC_READ_COMPLETE on the object's anon fd
//    (the emulator gets "cread <msg_id>" with the anon fd attached, so it can
//    check, as 6.10+ kernels do, that the fd belongs to the request's object).
// Writes of data into an anon fd are plain pwrite(2) in both cases (the
// emulator's anon fds are real sparse files).
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace nydus::fscache {

class CacheDevice {
 public:
  // Opens `path`: a character device is the kernel's; a unix socket is
  // connected to as an emulator. All fds are close-on-exec.
  static Result<CacheDevice> open(const std::filesystem::path& path);
  // Wraps an already open device fd (handed over by a supervisor); takes ownership.
  static Result<CacheDevice> adopt(int fd);

  CacheDevice(CacheDevice&&) noexcept;
  CacheDevice& operator=(CacheDevice&&) noexcept;
  CacheDevice(const CacheDevice&) = delete;
  ~CacheDevice();

  int fd() const { return fd_; }
  bool emulated() const { return emulated_; }

  // Read one message into `buf` (>= kMsgMaxSize). 0: nothing pending. For the
  // emulator, an OPEN's fd field is rewritten to the received descriptor.
  Result<size_t> read_msg(std::span<uint8_t> buf);
  // Send one command; the kernel's errno comes back as an error.
  Status command(std::string_view cmd);
  Status complete_read(int anon_fd, uint32_t msg_id);
  // Whether `fd` looks like an object fd this device handed us (never close
  // a descriptor a malformed message merely names).
  bool is_object_fd(int fd) const;

 private:
  CacheDevice(int fd, bool emulated) : fd_(fd), emulated_(emulated) {}
  int fd_ = -1;
  bool emulated_ = false;
  // The emulator socket is shared by the poll thread (reads) and workers
  // (commands): sendmsg/recvmsg are atomic per packet, no lock needed.
};

// Bring a fresh cache online: "dir <work_dir>", optional "tag <tag>",
// "bind ondemand".
Status bind_cache(CacheDevice& dev, const std::filesystem::path& work_dir, const std::string& tag);
// After a handover: "restore" (kernel >= 6.8) marks every request still held
// by the kernel as new again, so they are read and answered once more.
Status restore_cache(CacheDevice& dev);

}  // namespace nydus::fscache
