#include "common/result.h"

#include <cstring>

namespace nydus {

const char* errc_name(Errc c) {
  switch (c) {
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kCorrupt: return "corrupt";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kNotFound: return "not found";
    case Errc::kIo: return "I/O error";
    case Errc::kExists: return "exists";
    case Errc::kNoSpace: return "no space";
    case Errc::kInternal: return "internal error";
    case Errc::kAnswer: return "answer";
  }
  return "unknown";
}

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
