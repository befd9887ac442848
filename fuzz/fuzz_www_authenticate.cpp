// Fuzz target: the registry backend's WWW-Authenticate challenge parser.
// Schemes and parameter names must be non-empty tokens (no NUL, no spaces).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "storage/registry_backend.h"

static bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c == '\0' || c == ' ' || c == '\t' || c == ',' || c == '=' || c == '"') return false;
  return true;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto cs = nydus::storage::parse_www_authenticate(std::string_view(reinterpret_cast<const char*>(data), size));
  for (const auto& c : cs) {
    if (!is_token(c.scheme)) __builtin_trap();
    for (const auto& [k, v] : c.params)
      if (!is_token(k)) __builtin_trap();
  }
  return 0;
}
