#include "fscache/object_source.h"

#include <cstring>

namespace nydus::fscache {

Status BootstrapSource::read(uint64_t off, std::span<uint8_t> out) {
  const auto bytes = boot_->bytes();
  if (off > bytes.size() || out.size() > bytes.size() - off)
    return errorf(Errc::kInvalidArgument, "bootstrap {}: read [{}, +{}) beyond its {} bytes", name_, off,
                  out.size(), bytes.size());
  std::memcpy(out.data(), bytes.data() + off, out.size());
  return ok();
}

Result<std::shared_ptr<storage::BlobCache>> DataBlobSource::cache() {
  std::lock_guard lk(mu_);
  if (cache_) return cache_;
  std::error_code ec;
  std::filesystem::create_directories(cfg_.work_dir, ec);
  if (ec) return sys_error(fmt::format("create cache dir {}", cfg_.work_dir.string()), ec.value());
  auto c = storage::BlobCache::open(info_, backend_, cfg_, digests_);
  if (!c) return std::unexpected(std::move(c).error().context(fmt::format("blob {}", info_.blob_id)));
  cache_ = std::move(*c);
  return cache_;
}

std::shared_ptr<storage::BlobCache> DataBlobSource::cache_if_open() const {
  std::lock_guard lk(mu_);
  return cache_;
}

Status DataBlobSource::read(uint64_t off, std::span<uint8_t> out) {
  NYDUS_ASSIGN_OR_RETURN(std::shared_ptr<storage::BlobCache> c, cache());
  return c->read(off, out);
}

}  // namespace nydus::fscache
