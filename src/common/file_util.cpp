#include "common/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <random>

#include "common/io.h"

namespace nydus {

Status write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> data) {
  std::filesystem::path tmp = path;
  tmp += fmt::format(".tmp.{}.{:x}", ::getpid(), std::random_device{}());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return sys_error("create " + tmp.string());
  Status s = write_full(fd, data, "write " + tmp.string());
  if (s && ::fsync(fd) != 0) s = sys_error("fsync " + tmp.string());
  if (::close(fd) != 0 && s) s = sys_error("close " + tmp.string());
  if (s && ::rename(tmp.c_str(), path.c_str()) != 0) s = sys_error("rename to " + path.string());
  if (!s) {
    ::unlink(tmp.c_str());
    return s;
  }
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return sys_error("open directory " + dir.string());
  s = ::fsync(dfd) == 0 ? ok() : sys_error("fsync directory " + dir.string());
  ::close(dfd);
  return s;
}

}  // namespace nydus
