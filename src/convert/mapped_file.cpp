#include "convert/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace nydus::convert {

Result<MappedFile> MappedFile::open_read(const std::filesystem::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_error(fmt::format("open {}", p.string()));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    auto e = sys_error(fmt::format("stat {}", p.string()));
    ::close(fd);
    return e;
  }
  if (st.st_size == 0) {
    ::close(fd);
    return MappedFile(nullptr, 0);
  }
  void* m = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return sys_error(fmt::format("mmap {}", p.string()));
  return MappedFile(static_cast<uint8_t*>(m), uint64_t(st.st_size));
}

Result<MappedFile> MappedFile::create(const std::filesystem::path& p, uint64_t size) {
  const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sys_error(fmt::format("create {}", p.string()));
  if (::ftruncate(fd, off_t(size)) != 0) {
    auto e = sys_error(fmt::format("size {} to {}", p.string(), size));
    ::close(fd);
    return e;
  }
  if (size == 0) {
    ::close(fd);
    return MappedFile(nullptr, 0);
  }
  void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return sys_error(fmt::format("mmap {}", p.string()));
  return MappedFile(static_cast<uint8_t*>(m), size);
}

MappedFile::MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace nydus::convert
