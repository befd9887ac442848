// Errors as values: every fallible call returns Result<T> (std::expected).
// An Error carries a category that says what the caller can do about it, the
// OS errno when there is one, and a message for humans.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace nydus {

enum class Errc {
  kInvalidArgument,  // caller passed something unusable (bad flag, bad path)
  kCorrupt,          // untrusted bytes (image, blob, message) failed validation
  kUnsupported,      // valid but a feature we do not implement
  kNotFound,
  kIo,               // the OS or a backend failed; may be retried
  kExists,
  kNoSpace,
  kInternal,         // a bug on our side
  kAnswer,           // not a failure: a filesystem's answer is the errno in sys_errno
                     // (ENOENT for a name that is not there, ENODATA, EROFS for a write)
};

struct Error {
  Errc code = Errc::kInternal;
  int sys_errno = 0;  // errno from the OS (kIo) or the answer (kAnswer), else 0
  std::string message;

  // The errno handed to the kernel (FUSE replies, fanotify denials): a
  // kAnswer's own errno; every failure (corrupt image, backend, digest, OS
  // I/O) is EIO, so a reader's errno such as ENOENT never leaks into the
  // answer to a valid request.
  int to_errno() const;
  std::string to_string() const;

  // Prefix the message with context: "reading inode 128: bad format".
  Error&& context(std::string_view what) && {
    message = std::string(what) + ": " + message;
    return std::move(*this);
  }
};

// std::expected, but a caller cannot drop one unread: every error is
// handled, propagated, or discarded with a (void) cast and a comment why.
template <class T>
class [[nodiscard]] Result : public std::expected<T, Error> {
 public:
  using std::expected<T, Error>::expected;
  Result() = default;
  Result(std::expected<T, Error> e) : std::expected<T, Error>(std::move(e)) {}
};
using Status = Result<void>;

inline std::unexpected<Error> make_error(Errc code, std::string msg) {
  return std::unexpected(Error{code, 0, std::move(msg)});
}

template <class... Args>
std::unexpected<Error> errorf(Errc code, fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected(Error{code, 0, fmt::format(f, std::forward<Args>(args)...)});
}

template <class... Args>
std::unexpected<Error> corrupt(fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected(Error{Errc::kCorrupt, 0, fmt::format(f, std::forward<Args>(args)...)});
}

// A filesystem operation that answers with an errno (see Errc::kAnswer).
inline std::unexpected<Error> fs_answer(int err, std::string msg) {
  return std::unexpected(Error{Errc::kAnswer, err, std::move(msg)});
}

// Build an kIo error from errno (captured at the call).
std::unexpected<Error> sys_error(std::string_view what, int err = errno);

inline Status ok() { return {}; }

}  // namespace nydus

// Propagate an error from an expression returning Result<...>.
#define NYDUS_TRY(expr)                                        \
  do {                                                         \
    auto&& nydus_try_r_ = (expr);                              \
    if (!nydus_try_r_) return std::unexpected(std::move(nydus_try_r_).error()); \
  } while (0)

// Assign the value of a Result<T> expression or propagate its error.
#define NYDUS_CONCAT_INNER(a, b) a##b
#define NYDUS_CONCAT(a, b) NYDUS_CONCAT_INNER(a, b)
#define NYDUS_ASSIGN_OR_RETURN(lhs, expr) \
  NYDUS_ASSIGN_OR_RETURN_IMPL(NYDUS_CONCAT(nydus_r_, __LINE__), lhs, expr)
#define NYDUS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)             \
  auto tmp = (expr);                                            \
  if (!tmp) return std::unexpected(std::move(tmp).error());     \
  lhs = std::move(*tmp)
