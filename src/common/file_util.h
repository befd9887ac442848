// Small file helpers shared by the tools.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>

#include "common/result.h"

namespace nydus {

// Write `data` to `path` atomically and durably: a temp file beside it,
// fsync, then rename, so a reader never sees a torn file under the name.
Status write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> data);

}  // namespace nydus
