#include "tools/nydus_image/log.h"

#include <cstdio>

namespace nydus::tools {

namespace {
LogLevel g_level = LogLevel::kInfo;
std::FILE* g_file = nullptr;  // nullptr = stderr
}  // namespace

std::string setup_log(const std::string& level, const std::string& file) {
  for (int i = 0; i < 5; i++)
    if (level == kLogLevelNames[i]) g_level = LogLevel(i);
  if (!file.empty()) {
    g_file = std::fopen(file.c_str(), "ae");
    if (!g_file) return "cannot open log file " + file;
  }
  return "";
}

void log_line(LogLevel level, const std::string& msg) {
  if (level < g_level) return;
  static constexpr const char* kTags[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};
  std::FILE* out = g_file ? g_file : stderr;
  std::fprintf(out, "[%s] %s\n", kTags[int(level)], msg.c_str());
  std::fflush(out);
}

}  // namespace nydus::tools
