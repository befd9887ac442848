// Reading and replacing a file whole.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "common/result.h"

namespace nydus {

// Replace `path` with `data` atomically and durably: a uniquely named temp
// file beside it (concurrent writers never share one), written and fsynced,
// renamed over `path`, then the directory fsynced so the rename survives a
// power cut. A reader sees the old file or the new one, never a torn one.
Status write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> data);

// A small file's bytes (a config, a token); a file over `max_size` bytes is
// refused (kInvalidArgument) rather than read, an absent one is kNotFound.
Result<std::string> read_file_bounded(const std::filesystem::path& path, size_t max_size);

// `path` absolute and normalised, its parent directory resolved (symlinks,
// "..") and its last component kept as named, never looked at: a stat of a
// FUSE mountpoint whose daemon is gone (a takeover in progress) would wait
// for a GETATTR that nobody answers.
std::string resolve_parent(const std::string& path);

}  // namespace nydus
