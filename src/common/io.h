// Whole reads and writes on file descriptors: one loop for the project, so
// EINTR, short transfers, EOF and a write that makes no progress are each
// handled once (a loop without the 0 check spins forever on the last).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/result.h"

namespace nydus {

// Read exactly out.size() bytes at `off`. End of file first is kCorrupt (the
// file is shorter than what described it); `what` names the read in errors.
Status read_full_at(int fd, uint64_t off, std::span<uint8_t> out, std::string_view what);

// Write all of `in` at `off` (or, in write_full, at the file position: pipes,
// FIFOs). ENOSPC/EDQUOT are kNoSpace; a write of 0 bytes is an error.
Status write_full_at(int fd, uint64_t off, std::span<const uint8_t> in, std::string_view what);
Status write_full(int fd, std::span<const uint8_t> in, std::string_view what);

}  // namespace nydus
