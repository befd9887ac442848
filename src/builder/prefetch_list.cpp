#include "builder/prefetch_list.h"

#include <unordered_map>

namespace nydus::builder {

std::string normalize_image_path(const std::string& p) {
  if (p.empty() || p[0] != '/') return p;
  std::string out;
  size_t i = 0;
  while (i < p.size()) {
    while (i < p.size() && p[i] == '/') i++;
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string_view comp(p.data() + i, j - i);
    if (!comp.empty() && comp != ".") {
      out += '/';
      out += comp;
    }
    i = j;
  }
  return out.empty() ? "/" : out;
}

PrefetchPatterns parse_prefetch_patterns(std::istream& in, size_t max_lines) {
  constexpr size_t kMaxLine = 4096;
  PrefetchPatterns r;
  std::string line;
  for (size_t n = 0; n < max_lines && std::getline(in, line); n++) {
    const auto b = line.find_first_not_of(" \t\r\n\v\f");
    if (b == std::string::npos) {
      // Upstream warns about a blank line too (it is not absolute).
      if (!line.empty()) r.warnings.push_back("prefetch pattern '" + line + "' is not an absolute path, skipped");
      continue;
    }
    const auto e = line.find_last_not_of(" \t\r\n\v\f");
    std::string p = line.substr(b, e - b + 1);
    if (p.size() > kMaxLine) {
      r.warnings.push_back("prefetch pattern longer than 4096 bytes, skipped");
      continue;
    }
    if (p[0] != '/') {
      r.warnings.push_back("prefetch pattern '" + p + "' is not an absolute path, skipped");
      continue;
    }
    p = normalize_image_path(p);
    bool covered = false;
    for (const auto& k : r.paths) covered |= p == k || k == "/" || p.starts_with(k + "/");
    if (covered) {
      r.warnings.push_back("prefetch pattern '" + p + "' is covered by an earlier pattern, skipped");
      continue;
    }
    r.paths.push_back(std::move(p));
  }
  return r;
}

std::vector<uint32_t> prefetch_nodes(const std::vector<std::string>& image_paths,
                                     const std::vector<std::string>& patterns) {
  std::vector<uint32_t> out;
  if (patterns.empty()) return out;
  std::unordered_map<std::string, uint32_t> index;
  for (uint32_t i = 0; i < image_paths.size(); i++) index.try_emplace(image_paths[i], i);
  std::vector<std::string> kept;  // upstream: coverage counts every earlier pattern, found or not
  for (const auto& raw : patterns) {
    std::string p = normalize_image_path(raw);
    bool covered = false;
    for (const auto& k : kept) covered |= p == k || k == "/" || p.starts_with(k + "/");
    if (covered) continue;
    auto it = index.find(p);
    kept.push_back(std::move(p));
    if (it != index.end()) out.push_back(it->second);
  }
  return out;
}

}  // namespace nydus::builder

namespace nydus::builder {

PrefetchMatcher::PrefetchMatcher(const std::vector<std::string>& patterns) {
  for (const auto& raw : patterns)
    if (std::string p = normalize_image_path(raw); !p.empty()) set_.insert(std::move(p));
}

bool PrefetchMatcher::covers(const std::string& image_path) const {
  if (set_.empty()) return false;
  if (set_.count("/")) return true;
  std::string p = image_path;
  while (!p.empty() && p != "/") {
    if (set_.count(p)) return true;
    const size_t slash = p.rfind('/');
    if (slash == std::string::npos || slash == 0) break;
    p.resize(slash);
  }
  return false;
}

}  // namespace nydus::builder
