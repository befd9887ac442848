#include "common/io.h"

#include <unistd.h>

#include <cerrno>
#include <limits>

namespace nydus {

namespace {

std::unexpected<Error> write_error(std::string_view what, int err) {
  auto e = sys_error(what, err);
  if (err == ENOSPC || err == EDQUOT) e.error().code = Errc::kNoSpace;
  return e;
}

bool offset_fits(uint64_t off, size_t len) {
  constexpr uint64_t kMax = uint64_t(std::numeric_limits<off_t>::max());
  return off <= kMax && len <= kMax - off;
}

// Writes all of `in` through `write_some(buf, len, done)` (pwrite or write),
// retrying EINTR; a call that writes nothing is an error, never a spin.
template <typename WriteSome>
Status write_loop(std::span<const uint8_t> in, std::string_view what, WriteSome write_some) {
  size_t done = 0;
  while (done < in.size()) {
    const ssize_t n = write_some(in.data() + done, in.size() - done, done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return write_error(what, errno);
    }
    if (n == 0) return std::unexpected(Error{Errc::kIo, EIO, fmt::format("{}: write made no progress", what)});
    done += size_t(n);
  }
  return ok();
}

}  // namespace

Status read_full_at(int fd, uint64_t off, std::span<uint8_t> out, std::string_view what) {
  if (!offset_fits(off, out.size()))
    return errorf(Errc::kInvalidArgument, "{}: range {:#x}+{} out of range", what, off, out.size());
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, off_t(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(what);
    }
    if (n == 0) return corrupt("{}: end of file at {:#x}, wanted {:#x}+{}", what, off + done, off, out.size());
    done += size_t(n);
  }
  return ok();
}

Status write_full_at(int fd, uint64_t off, std::span<const uint8_t> in, std::string_view what) {
  if (!offset_fits(off, in.size()))
    return errorf(Errc::kInvalidArgument, "{}: range {:#x}+{} out of range", what, off, in.size());
  return write_loop(in, what, [&](const uint8_t* p, size_t len, size_t done) {
    return ::pwrite(fd, p, len, off_t(off + done));
  });
}

Status write_full(int fd, std::span<const uint8_t> in, std::string_view what) {
  return write_loop(in, what, [&](const uint8_t* p, size_t len, size_t) { return ::write(fd, p, len); });
}

}  // namespace nydus
