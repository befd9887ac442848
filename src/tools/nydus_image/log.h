// nydus-image's log: upstream's global `-l/--log-level` (trace, debug, info,
// warn, error; default info) and `-L/--log-file`. Progress and summaries are
// info, degraded results warn, failures error. Callers such as the containerd
// converter pass `--log-level warn` and read stderr, so info lines must be
// quiet there. The final failure message of a command is always printed on
// stderr (as upstream prints its `Error: ...`), whatever the level.
#pragma once

#include <fmt/format.h>

#include <string>

namespace nydus::tools {

enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError };

// The accepted level names, in upstream's order.
inline constexpr const char* kLogLevelNames[] = {"trace", "debug", "info", "warn", "error"};

// Configure once after parsing. Returns "" or an error message (log file).
std::string setup_log(const std::string& level, const std::string& file);

void log_line(LogLevel level, const std::string& msg);

template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  log_line(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... args) {
  log_line(LogLevel::kWarn, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace nydus::tools
