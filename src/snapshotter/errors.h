// Snapshotter errors carry the gRPC code containerd maps back to its errdefs
// (NotFound, AlreadyExists, FailedPrecondition, InvalidArgument, ...); the core
// stays free of gRPC so it can be unit-tested directly.
#pragma once

#include <expected>
#include <string>

#include <fmt/format.h>

#include "common/result.h"

namespace nydus::snapshotter {

enum class Code {
  kUnknown,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kUnavailable,
  kInternal,
};

struct SnapError {
  Code code = Code::kUnknown;
  std::string message;
};

template <class T>
using SResult = std::expected<T, SnapError>;

template <class... Args>
std::unexpected<SnapError> snap_error(Code code, fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected(SnapError{code, fmt::format(f, std::forward<Args>(args)...)});
}

// A project Error (file system, JSON, API client) as a snapshotter error.
inline std::unexpected<SnapError> from_error(const Error& e, std::string_view what) {
  Code c = Code::kInternal;
  switch (e.code) {
    case Errc::kInvalidArgument:
    case Errc::kCorrupt: c = Code::kInvalidArgument; break;
    case Errc::kNotFound: c = Code::kNotFound; break;
    case Errc::kExists: c = Code::kAlreadyExists; break;
    case Errc::kIo: c = Code::kUnavailable; break;
    default: break;
  }
  return std::unexpected(SnapError{c, fmt::format("{}: {}", what, e.to_string())});
}

const char* code_name(Code c);

}  // namespace nydus::snapshotter

#define SNAP_TRY(expr)                                                       \
  do {                                                                       \
    auto&& snap_try_r_ = (expr);                                             \
    if (!snap_try_r_) return std::unexpected(std::move(snap_try_r_).error()); \
  } while (0)
