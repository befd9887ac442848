#include "snapshotter/config_file.h"

namespace nydus::snapshotter {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<ConfigValues> parse_config_toml(std::string_view text) {
  if (text.size() > (1 << 20)) return make_error(Errc::kInvalidArgument, "config.toml larger than 1 MiB");
  ConfigValues out;
  std::string section;
  size_t lineno = 0;
  while (!text.empty()) {
    ++lineno;
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    if (line.front() == '[') {
      if (line.back() != ']') return errorf(Errc::kInvalidArgument, "config.toml line {}: bad section", lineno);
      section = std::string(trim(line.substr(1, line.size() - 2)));
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string_view::npos) return errorf(Errc::kInvalidArgument, "config.toml line {}: expected key = value", lineno);
    std::string key(trim(line.substr(0, eq)));
    std::string_view v = trim(line.substr(eq + 1));
    std::string value;
    if (!v.empty() && (v.front() == '"' || v.front() == '\'')) {
      char q = v.front();
      size_t i = 1;
      for (; i < v.size() && v[i] != q; ++i) {
        if (v[i] == '\\' && q == '"' && i + 1 < v.size()) ++i;
        value += v[i];
      }
      if (i >= v.size()) return errorf(Errc::kInvalidArgument, "config.toml line {}: unterminated string", lineno);
    } else {
      auto hash = v.find('#');
      value = std::string(trim(v.substr(0, hash)));
    }
    out[section.empty() ? key : section + "." + key] = value;
  }
  return out;
}

}  // namespace nydus::snapshotter
