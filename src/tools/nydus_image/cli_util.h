// Small pieces the nydus-image subcommands share: upstream's exit codes, the
// JSON keys upstream's `-J` files carry, and the BOOTSTRAP positional / -B
// rule of check, inspect and unpack.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nydus::tools {

// Upstream: 1 for a failed command (Rust's `main` returning Err), 2 for a
// usage error (clap) and for merge's InconsistentFilesystem.
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

inline int usage_error(const char* cmd, const std::string& msg) {
  std::fprintf(stderr, "error: nydus-image %s: %s\n", cmd, msg.c_str());
  return kExitUsage;
}

// The version string in `-J` files ("<package version>-<git commit>" upstream).
inline constexpr const char* kJsonVersion = "nydus-cpp 0.1.0";

// Upstream's OutputSerializer fields with their empty values; callers fill
// what they know and may add keys of their own.
inline nlohmann::json upstream_output_json(const std::string& bootstrap, const std::vector<std::string>& blobs,
                                           const std::string& compressor) {
  nlohmann::json j;
  j["version"] = kJsonVersion;
  j["bootstrap"] = bootstrap;
  j["blobs"] = blobs;
  j["external_bootstrap"] = "";
  j["external_blobs"] = nlohmann::json::array();
  j["trace"] = nlohmann::json::object();
  j["fs_version"] = "6";
  j["compressor"] = compressor;
  return j;
}

// check/inspect/unpack: BOOTSTRAP positional or the deprecated -B, not both.
// Returns "" and sets `out`, or a usage error message.
inline std::string pick_bootstrap(const std::string& positional, const std::string& dash_b, std::string& out) {
  if (!positional.empty() && !dash_b.empty()) return "the argument '--bootstrap' cannot be used with 'BOOTSTRAP'";
  if (positional.empty() && dash_b.empty()) return "the following required arguments were not provided: BOOTSTRAP";
  out = positional.empty() ? dash_b : positional;
  return "";
}

}  // namespace nydus::tools
