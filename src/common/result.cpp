#include "common/result.h"

#include <cstring>

namespace nydus {

int Error::to_errno() const {
  if (code == Errc::kAnswer && sys_errno != 0) return sys_errno;
  return EIO;
}

std::string Error::to_string() const { return message; }

std::unexpected<Error> sys_error(std::string_view what, int err) {
  return std::unexpected(
      Error{Errc::kIo, err, fmt::format("{}: {}", what, std::strerror(err))});
}

}  // namespace nydus
