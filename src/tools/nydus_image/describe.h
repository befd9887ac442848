// Helpers shared by the read-only reporting subcommands (inspect, stat):
// printable names, flag decoding, and one renderer that prints the same
// ordered JSON document either as indented text or as JSON.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nydus::tools {

using OJson = nlohmann::ordered_json;

// Bytes from the image shown safely: valid UTF-8 kept, control characters,
// backslashes and invalid bytes escaped (\n, \\, \xNN). Always valid UTF-8,
// so the JSON writer never throws.
std::string escape_bytes(std::string_view raw);

// Names of the set bits of RAFS super flags / blob features; unknown bits as hex.
std::vector<std::string> super_flag_names(uint64_t flags);
std::vector<std::string> blob_feature_names(uint32_t features);

std::string hex_u64(uint64_t v);
std::string octal_mode(uint32_t mode);
std::string utc_time(uint64_t sec, uint32_t nsec);

// Print `doc` as "key: value" lines, nested objects indented; arrays of
// objects whose key is in `tables` as aligned columns.
void print_text(const OJson& doc, const std::vector<std::string>& tables = {});

// Write `doc` to `path` ("-" = stdout). Returns an error message, or "".
std::string write_json(const OJson& doc, const std::string& path);

}  // namespace nydus::tools
