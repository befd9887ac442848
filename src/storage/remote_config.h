// Typed getters for the remote backends' JSON configs (upstream field names;
// durations are seconds, fractions allowed).
#pragma once

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "storage/remote_backend.h"

namespace nydus::storage::remote_config {

inline Result<std::string> get_string(const nlohmann::json& j, const char* key, std::string def = {}) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_string()) return errorf(Errc::kInvalidArgument, "backend config \"{}\" must be a string", key);
  return it->get<std::string>();
}

inline Result<bool> get_bool(const nlohmann::json& j, const char* key, bool def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) return errorf(Errc::kInvalidArgument, "backend config \"{}\" must be a boolean", key);
  return it->get<bool>();
}

inline Result<int64_t> get_int(const nlohmann::json& j, const char* key, int64_t def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number_integer()) return errorf(Errc::kInvalidArgument, "backend config \"{}\" must be an integer", key);
  return it->get<int64_t>();
}

// Seconds (integer or fractional) → milliseconds; must be > 0 and < 1 day.
// With `zero_means_none` (upstream's "timeout"/"connect_timeout": 0 = no
// limit), 0 is accepted and returned as Millis(0).
inline Result<Millis> get_seconds(const nlohmann::json& j, const char* key, Millis def, bool zero_means_none = false) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number()) return errorf(Errc::kInvalidArgument, "backend config \"{}\" must be a number of seconds", key);
  const double s = it->get<double>();
  if (zero_means_none && s == 0) return Millis(0);
  if (!std::isfinite(s) || s <= 0 || s > 86400)
    return errorf(Errc::kInvalidArgument, "backend config \"{}\" = {} seconds is out of range", key, s);
  return Millis(std::max<int64_t>(1, int64_t(s * 1000)));
}

// "retry_limit" (upstream) plus our "retry_backoff_ms" / "retry_backoff_cap_ms".
inline Result<std::vector<std::string>> get_string_list(const nlohmann::json& j, const char* key) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) return errorf(Errc::kInvalidArgument, "backend config \"{}\" must be a list of strings", key);
  for (const auto& v : *it) {
    if (!v.is_string()) return errorf(Errc::kInvalidArgument, "backend config \"{}\" must be a list of strings", key);
    out.push_back(v.get<std::string>());
  }
  return out;
}

inline Result<RetryPolicy> get_retry(const nlohmann::json& j) {
  RetryPolicy p;
  NYDUS_ASSIGN_OR_RETURN(int64_t limit, get_int(j, "retry_limit", p.retry_limit));
  if (limit < 0 || limit > 100) return errorf(Errc::kInvalidArgument, "backend config \"retry_limit\" {} out of range", limit);
  p.retry_limit = int(limit);
  NYDUS_ASSIGN_OR_RETURN(int64_t base, get_int(j, "retry_backoff_ms", p.base.count()));
  NYDUS_ASSIGN_OR_RETURN(int64_t cap, get_int(j, "retry_backoff_cap_ms", p.cap.count()));
  if (base < 0 || cap < base || cap > 600000)
    return errorf(Errc::kInvalidArgument, "backend config retry backoff {}..{} ms out of range", base, cap);
  p.base = Millis(base);
  p.cap = Millis(cap);
  return p;
}

}  // namespace nydus::storage::remote_config
