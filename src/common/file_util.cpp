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

Result<std::string> read_file_bounded(const std::filesystem::path& path, size_t max_size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return errorf(Errc::kNotFound, "{}: no such file", path.string());
    return sys_error("open " + path.string());
  }
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      auto e = sys_error("read " + path.string());
      ::close(fd);
      return e;
    }
    if (n == 0) break;
    if (out.size() + size_t(n) > max_size) {
      ::close(fd);
      return errorf(Errc::kInvalidArgument, "{}: over the {} bytes allowed", path.string(), max_size);
    }
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

std::string resolve_parent(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(path, ec);
  if (ec) p = path;
  p = p.lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();  // "a/b/" -> "a/b"
  if (!p.has_filename()) return p.string();  // the root
  const std::filesystem::path parent = std::filesystem::weakly_canonical(p.parent_path(), ec);
  return ((ec ? p.parent_path() : parent) / p.filename()).string();
}

}  // namespace nydus
