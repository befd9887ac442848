#include "storage/localfs_backend.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/io.h"

namespace nydus::storage {

Status validate_blob_id(std::string_view id) {
  if (id.empty()) return errorf(Errc::kInvalidArgument, "empty blob id");
  if (id.size() > 255) return errorf(Errc::kInvalidArgument, "blob id of {} bytes is too long", id.size());
  if (id == "." || id.find('/') != std::string_view::npos || id.find("..") != std::string_view::npos ||
      id.find('\0') != std::string_view::npos)
    return errorf(Errc::kInvalidArgument, "invalid blob id '{}'", id);
  return ok();
}

Result<std::shared_ptr<LocalFsBackend>> LocalFsBackend::create(LocalFsConfig cfg) {
  if (cfg.dir.empty() && cfg.blob_file.empty())
    return errorf(Errc::kInvalidArgument, "localfs backend needs \"dir\" or \"blob_file\"");
  return std::shared_ptr<LocalFsBackend>(new LocalFsBackend(std::move(cfg)));
}

LocalFsBackend::~LocalFsBackend() {
  for (auto& [id, fd] : fds_) ::close(fd);
}

Result<int> LocalFsBackend::fd_for(const std::string& blob_id) {
  NYDUS_TRY(validate_blob_id(blob_id));
  {
    std::lock_guard lk(mu_);
    if (auto it = fds_.find(blob_id); it != fds_.end()) return it->second;
  }
  // Open outside the lock; if another thread won the race, keep its fd.
  int fd = -1;
  std::filesystem::path tried;
  if (!cfg_.blob_file.empty()) {
    tried = cfg_.blob_file;
    fd = ::open(tried.c_str(), O_RDONLY | O_CLOEXEC);
  } else {
    std::vector<std::filesystem::path> dirs{cfg_.dir};
    dirs.insert(dirs.end(), cfg_.alt_dirs.begin(), cfg_.alt_dirs.end());
    for (const auto& d : dirs) {
      tried = d / blob_id;
      fd = ::open(tried.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0 || errno != ENOENT) break;
    }
  }
  if (fd < 0) return sys_error(fmt::format("opening blob {}", tried.string()));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return errorf(Errc::kInvalidArgument, "blob {} is not a regular file", tried.string());
  }
  std::lock_guard lk(mu_);
  auto [it, inserted] = fds_.emplace(blob_id, fd);
  if (!inserted) ::close(fd);
  return it->second;
}

Status LocalFsBackend::read(const std::string& blob_id, uint64_t offset, std::span<uint8_t> out) {
  auto fail = [this](auto err) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    return err;
  };
  auto fd = fd_for(blob_id);
  if (!fd) return fail(std::unexpected(std::move(fd).error()));
  if (offset > uint64_t(INT64_MAX) || out.size() > uint64_t(INT64_MAX) - offset)
    return fail(errorf(Errc::kInvalidArgument, "read {:#x}+{} out of range", offset, out.size()));
  if (Status s = read_full_at(*fd, offset, out, fmt::format("reading blob {}", blob_id)); !s) return fail(std::move(s));
  read_count_.fetch_add(1, std::memory_order_relaxed);
  read_bytes_.fetch_add(out.size(), std::memory_order_relaxed);
  return ok();
}

Result<uint64_t> LocalFsBackend::blob_size(const std::string& blob_id) {
  NYDUS_ASSIGN_OR_RETURN(int fd, fd_for(blob_id));
  struct stat st;
  if (::fstat(fd, &st) != 0) return sys_error(fmt::format("stat blob {}", blob_id));
  return uint64_t(st.st_size);
}

BackendMetrics LocalFsBackend::metrics() const {
  BackendMetrics m;
  m.read_count = read_count_.load(std::memory_order_relaxed);
  m.read_bytes = read_bytes_.load(std::memory_order_relaxed);
  m.read_errors = read_errors_.load(std::memory_order_relaxed);
  return m;
}

}  // namespace nydus::storage
