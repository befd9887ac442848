#include "snapshotter/blob_cache_gc.h"

#include <algorithm>
#include <filesystem>

namespace nydus::snapshotter {
namespace fs = std::filesystem;

std::string blob_id_of_cache_file(std::string_view name) {
  // Longest first: ".blob.data.chunk_map" before ".blob.data" and ".chunk_map".
  static constexpr std::string_view kSuffixes[] = {".blob.data.chunk_map", ".blob.data", ".chunk_map",
                                                   ".blob.meta",           ".image.disk", ".layer.disk", ""};
  for (auto suffix : kSuffixes) {
    if (!name.ends_with(suffix)) continue;
    std::string_view id = name.substr(0, name.size() - suffix.size());
    bool hex = id.size() == 64 &&
               std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
    return hex ? std::string(id) : "";
  }
  return "";
}

CacheGcResult remove_unused_cache_files(const std::string& cache_dir, const std::set<std::string>& used) {
  CacheGcResult r;
  std::error_code ec;
  for (fs::directory_iterator it(cache_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string name = it->path().filename().string();
    const std::string id = blob_id_of_cache_file(name);
    if (id.empty()) continue;
    if (used.count(id)) {
      r.kept_ids.insert(id);
      continue;
    }
    std::error_code rm;
    if (fs::remove(it->path(), rm)) {
      r.removed.push_back(name);
      r.removed_ids.insert(id);
    } else if (rm) {
      ++r.errors;
    }
  }
  std::sort(r.removed.begin(), r.removed.end());
  return r;
}

}  // namespace nydus::snapshotter
