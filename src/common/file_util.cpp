#include "common/file_util.h"

#include <fcntl.h>
#include <unistd.h>

namespace nydus {

Status write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> data) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sys_error("create " + tmp.string());
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return sys_error("write " + tmp.string(), e);
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return sys_error("fsync " + tmp.string(), e);
  }
  if (::close(fd) != 0) return sys_error("close " + tmp.string());
  if (::rename(tmp.c_str(), path.c_str()) != 0) return sys_error("rename to " + path.string());
  return ok();
}

}  // namespace nydus
